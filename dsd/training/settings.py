"""How the models of a run are trained: the regime's protocol with the user's overrides, checked once.

One home for every default: the protocol's (epochs, batch size, lr, wd, momentum, warm-up, zero-init,
image subsets) is the regime's
(dsd.design.regimes.Protocol, docs/method.md section 4); every other option's is the field default of
DataRequest or TrainSettings below, which `dsd train` shows as its own (cli.training). `settings_for`
checks every option, before any data set is looked for or any file written. No torch here.
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, fields

from dsd.design.regimes import Regime
from dsd.errors import BadInput
from dsd.training.devices import gpu_index, parse_device

DATASETS = ("fashion-mnist", "cifar10", "imagefolder", "synthetic")


@dataclass(frozen=True)
class DataRequest:
    """What to load: picklable and hashable, so worker processes can load (and cache) it themselves."""

    dataset: str                    # fashion-mnist | cifar10 | imagefolder:PATH | synthetic
    resolution: int = 32            # the models' input (synthetic and imagefolder follow it)
    in_channels: int = 3
    num_classes: int = 10
    data_dir: str | None = None     # where to look first (default: $DSD_DATA_DIR)
    download: bool = True           # download with torchvision when not found (fashion-mnist, cifar10)
    train_images: int | None = None  # fixed subsets, the same images for every model
    eval_images: int | None = None
    loader_workers: int = 4         # DataLoader worker processes (imagefolder only)

    @property
    def kind(self) -> str:
        return self.dataset.split(":", 1)[0]


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides how a model is trained (all of it lands in the result row or run log)."""

    data: DataRequest
    epochs: int
    batch_size: int
    lr: float
    wd: float
    momentum: float
    warmup_epochs: float
    warmup_factor: float
    zero_init_residual: bool
    seed: int = 0
    amp: bool = True            # bf16 autocast, CUDA only
    channels_last: bool = True
    compile: bool = False
    deterministic: bool = False  # no cudnn autotuning, deterministic kernels: identical re-runs on a GPU too
    save_weights: bool = False  # RUN/weights/ID.pt after the last epoch
    checkpoints: bool = True    # RUN/checkpoints/ID.pt after every epoch, to resume an interrupted model


@dataclass(frozen=True)
class SweepOptions:
    """How a sweep runs (not how a model trains): where, how many at once, which models."""

    backend: str = "local"          # local (worker processes) | ray
    device: str = "auto"            # auto | cpu | cuda | cuda:N (dsd.training.devices)
    models_per_gpu: int = 1
    cpu_workers: int = 1
    ray_address: str | None = None  # a Ray cluster to join; None: a local instance
    limit: int | None = None        # train at most this many models
    retry_failed: bool = False      # train failed and diverged models again

    def check(self) -> None:
        """BadInput naming the first option that cannot be used (the device's form included)."""
        if self.backend not in ("local", "ray"):
            raise BadInput(f"--backend {self.backend}: expected local or ray")
        if self.ray_address and self.backend != "ray":
            raise BadInput(f"--ray-address {self.ray_address} needs --backend ray")
        for option, value in (("--models-per-gpu", self.models_per_gpu), ("--cpu-workers", self.cpu_workers),
                              ("--limit", self.limit)):
            if value is not None and value < 1:
                raise BadInput(f"{option} must be at least 1, got {value}")
        parse_device(self.device)
        if self.ray_address and gpu_index(self.device) is not None:
            raise BadInput(f"--device {self.device} names a GPU of this machine; on a Ray cluster give --device "
                           f"cuda (Ray places each model on a GPU) or cpu")


def default(cls, name: str):
    """The default of one option (a field of DataRequest or TrainSettings), for the CLI's help."""
    value = next(f.default for f in fields(cls) if f.name == name)
    if value is MISSING:
        raise KeyError(f"{cls.__name__}.{name} has no default")
    return value


DATA_OPTIONS = {f.name for f in fields(DataRequest)} - {"dataset", "resolution", "in_channels", "num_classes"}
PROTOCOL = ("epochs", "batch_size", "lr", "wd", "warmup_epochs", "zero_init_residual")  # options over the protocol
FLAGS = {f.name for f in fields(TrainSettings)} - {"data", "momentum", "warmup_factor", *PROTOCOL}


def settings_for(regime: Regime, dataset: str | None = None, **options) -> TrainSettings:
    """The regime's protocol with overrides, every option checked.

    options: the protocol's (epochs, batch_size, lr, wd, warmup_epochs, zero_init_residual; None keeps
    the protocol's value), DataRequest fields (data_dir, download, train_images, eval_images,
    loader_workers) and TrainSettings flags (seed, amp, channels_last, compile, deterministic,
    save_weights, checkpoints). A batch size given without an lr scales the protocol's lr linearly, keeping the lr
    per image.
    """
    unknown = sorted(set(options) - DATA_OPTIONS - FLAGS - set(PROTOCOL))
    if unknown:
        raise TypeError(f"settings_for: unknown option {unknown[0]!r}")
    protocol = regime.train
    chosen = {k: options.get(k) for k in PROTOCOL}
    if chosen["lr"] is None and chosen["batch_size"] is not None:
        chosen["lr"] = protocol.lr * chosen["batch_size"] / protocol.batch_size
    values = {k: getattr(protocol, k) if v is None else v for k, v in chosen.items()}
    data = {k: v for k, v in options.items() if k in DATA_OPTIONS}
    for k in ("train_images", "eval_images"):  # the protocol's subsets unless given
        data[k] = getattr(protocol, k) if data.get(k) is None else data[k]
    req = DataRequest(dataset or regime.dataset, regime.resolution, regime.in_channels, regime.num_classes, **data)
    settings = TrainSettings(req, **values, momentum=protocol.momentum, warmup_factor=protocol.warmup_factor,
                             **{k: v for k, v in options.items() if k in FLAGS})
    check(settings)
    return settings


def check(settings: TrainSettings) -> None:
    """BadInput naming the first option that no training can use."""
    s, req = settings, settings.data
    for k in ("train_images", "eval_images"):
        if getattr(req, k) is not None and getattr(req, k) <= 0:
            raise BadInput(f"--{k.replace('_', '-')} must be positive, got {getattr(req, k)}")
    for k in ("epochs", "batch_size"):
        if getattr(s, k) <= 0:
            raise BadInput(f"--{k.replace('_', '-')} must be positive, got {getattr(s, k)}")
    if s.lr <= 0 or s.wd < 0:
        raise BadInput(f"--lr must be positive and --wd not negative, got {s.lr} and {s.wd}")
    if not 0 <= s.warmup_epochs <= s.epochs:
        raise BadInput(f"--warmup-epochs must be between 0 and --epochs ({s.epochs}), got {s.warmup_epochs:g}")
    if req.loader_workers < 0:
        raise BadInput(f"--loader-workers must be at least 0, got {req.loader_workers}")
    if req.train_images is not None and req.train_images < s.batch_size:
        raise BadInput(f"--train-images {req.train_images} is less than one batch of {s.batch_size}")
    check_dataset(req)


def check_dataset(req: DataRequest) -> None:
    """BadInput for a data set name dsd does not know (nothing is looked for on disk)."""
    if req.kind not in DATASETS:
        raise BadInput(f"unknown dataset {req.dataset!r} (known: fashion-mnist, cifar10, imagefolder:PATH, synthetic)")
