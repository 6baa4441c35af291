"""Data sets behind one interface: batches of uint8 images (N, C, H, W) and int64 labels on the device.

Two kinds, because the fast path depends on the size of the data:
- TensorData (fashion-mnist, cifar10, synthetic): the whole set is one uint8 tensor that lives on the
  training device; shuffling, random crop with padding and flips run batched there (no per-sample
  Python, no loader processes), which is what makes a sweep of small models fast.
- FolderData (imagefolder:PATH, ImageNet's layout): decoded and augmented by DataLoader workers, which
  a model keeps from its first epoch to its last (persistent, prefetching); each image's augmentation is
  drawn from a seed of its own, so an epoch's batches depend on the trainer's generator only (not on the
  number of workers or which worker made what), and a resumed model sees the same images.

Both yield uint8 batches; the trainer normalizes them with the set's mean and std. `locate` finds (or
downloads) the files in the parent process and turns "missing data" into BadInput with how to get it;
`load` then reads them, in whichever process trains.
"""
from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from dsd.errors import BadInput
from dsd.training.settings import DataRequest, check_dataset

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "eval": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
CIFAR_FOLDER = "cifar-10-batches-py"
# (channels, side, classes) of the fixed-shape sets; synthetic and imagefolder follow the run's regime
SHAPES = {"fashion-mnist": (1, 28, 10), "cifar10": (3, 32, 10)}
# augmentation applied on the device: (padding of the random crop, horizontal flip)
AUGMENT = {"fashion-mnist": (2, True), "cifar10": (4, True), "synthetic": (2, True)}
SYNTHETIC_SIZES = (1024, 256)  # train, eval images unless --train-images / --eval-images say otherwise
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SUBSET_SEED = 0  # fixed: every model of every run sees the same subset


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dsd"


def user_dir(req: DataRequest) -> Path | None:
    d = req.data_dir or os.environ.get("DSD_DATA_DIR")
    return Path(d).expanduser() if d else None


def search_roots(req: DataRequest) -> list[Path]:
    """--data-dir / $DSD_DATA_DIR, then Debian's package (Fashion-MNIST), then dsd's download cache."""
    roots = [user_dir(req)] if user_dir(req) else []
    if req.kind == "fashion-mnist":
        roots.append(DEBIAN_FASHION)
    return roots + [cache_dir()]


# ---- locating (parent process) ----------------------------------------------------------------------

def locate(req: DataRequest) -> DataRequest:
    """The request with data_dir set to the folder that holds the data (downloading it if allowed).

    Raises BadInput when the data set is unknown, missing, or does not fit the run's models.
    """
    kind = req.kind
    if kind in SHAPES:
        c, side, classes = SHAPES[kind]
        if (req.in_channels, req.resolution, req.num_classes) != (c, side, classes):
            raise BadInput(f"{kind} has {c}x{side}x{side} images in {classes} classes but the run's models take "
                           f"{req.in_channels}x{req.resolution}x{req.resolution} in {req.num_classes} classes "
                           f"(sample the run with a matching --regime)")
        found = _find(req) or _download(req)
        return replace(req, data_dir=str(found), download=False)
    if kind == "imagefolder":
        if ":" not in req.dataset:
            raise BadInput("image folders need their path: --dataset imagefolder:PATH (ImageNet's layout)")
        root = Path(req.dataset.split(":", 1)[1]).expanduser()
        if not (root / "train").is_dir() or _eval_folder(root) is None:
            raise BadInput(f"--dataset {req.dataset}: expected PATH/train and PATH/val (or PATH/test), each with "
                           f"one folder of images per class (ImageNet's layout)")
        classes = sum(1 for p in (root / "train").iterdir() if p.is_dir())
        if classes != req.num_classes:
            raise BadInput(f"{root / 'train'} has {classes} class folders but the run's models have "
                           f"{req.num_classes} outputs")
        return req
    check_dataset(req)
    return req  # synthetic: made, not found


def _find(req: DataRequest) -> Path | None:
    for root in search_roots(req):
        for folder in _candidates(req.kind, root):
            if _complete(req.kind, folder):
                return folder
    return None


def _candidates(kind: str, root: Path) -> list[Path]:
    if kind == "fashion-mnist":
        return [root, root / "fashion-mnist", root / "FashionMNIST" / "raw"]
    return [root]


def _complete(kind: str, folder: Path) -> bool:
    if kind == "fashion-mnist":
        return all(_idx_path(folder, name) for pair in FASHION_FILES.values() for name in pair)
    return (folder / CIFAR_FOLDER / "batches.meta").is_file()


def _download(req: DataRequest) -> Path:
    """torchvision's download into --data-dir (or the cache); BadInput saying how to get it otherwise."""
    from torchvision import datasets

    target = user_dir(req) or cache_dir()
    looked = ", ".join(str(r) for r in search_roots(req))
    why = "downloading is off (--no-download)"
    if req.download:
        staging = None
        try:  # into a private folder beside the target, moved in only when complete: a failure leaves nothing
            near = next(p for p in [target, *target.parents] if p.is_dir())
            staging = Path(tempfile.mkdtemp(prefix=".dsd-download-", dir=near))
            cls = datasets.FashionMNIST if req.kind == "fashion-mnist" else datasets.CIFAR10
            for train in (True, False):
                cls(str(staging), train=train, download=True)
            if _find(replace(req, data_dir=str(staging))):
                _move_into(staging, target)
                found = _find(req)
                if found:
                    return found
            why = "the download gave no usable files"
        except Exception as e:  # noqa: BLE001  (offline, proxy, disk: all mean "get it yourself")
            why = f"the download failed ({str(e).strip().splitlines()[0]})"
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
    if req.kind == "fashion-mnist":
        how = ("install Debian's package (`sudo apt-get install dataset-fashion-mnist`), or put the four "
               "*-ubyte.gz files of https://github.com/zalandoresearch/fashion-mnist into a folder and pass "
               "--data-dir DIR (or set DSD_DATA_DIR), or run once with internet access")
    else:
        how = ("download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, extract it into DIR (giving "
               f"DIR/{CIFAR_FOLDER}) and pass --data-dir DIR (or set DSD_DATA_DIR), or run once with internet access")
    raise BadInput(f"{req.kind} not found (looked in {looked}) and {why}: {how}")


def _move_into(source: Path, target: Path) -> None:
    """Move the files under source into target, merging folders that exist on both sides."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.is_dir() and (target / entry.name).is_dir():
            _move_into(entry, target / entry.name)
        else:
            os.replace(entry, target / entry.name)


def _eval_folder(root: Path) -> Path | None:
    return next((root / n for n in ("val", "test") if (root / n).is_dir()), None)


# ---- loading (training process) ---------------------------------------------------------------------

def load(req: DataRequest) -> "TensorData | FolderData":
    """The data set of a located request, with its fixed train / eval subsets applied."""
    if req.kind == "imagefolder":
        return _imagefolder(req)
    if req.kind == "synthetic":
        data = _synthetic(req)
    elif req.kind == "fashion-mnist":
        data = _fashion(Path(req.data_dir))
    else:
        data = _cifar(Path(req.data_dir))
    return data.subset(req.train_images, req.eval_images)


def subset_indices(total: int, n: int | None) -> torch.Tensor | None:
    """n indices out of total drawn with a fixed seed (sorted), or None for the whole split."""
    if n is None or n >= total:
        return None
    if n <= 0:
        raise BadInput(f"a subset needs at least one image, got {n}")
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(SUBSET_SEED))
    return perm[:n].sort().values


@dataclass
class TensorData:
    """A data set held as uint8 tensors (on the CPU or the training device)."""

    name: str
    train_x: torch.Tensor  # uint8 (N, C, H, W)
    train_y: torch.Tensor  # int64 (N,)
    eval_x: torch.Tensor
    eval_y: torch.Tensor
    mean: torch.Tensor     # per channel, in 0..255 units
    std: torch.Tensor
    pad: int = 0
    flip: bool = False

    @property
    def train_size(self) -> int:
        return len(self.train_y)

    @property
    def eval_size(self) -> int:
        return len(self.eval_y)

    def subset(self, train: int | None, eval: int | None) -> "TensorData":
        ti, ei = subset_indices(self.train_size, train), subset_indices(self.eval_size, eval)
        return replace(self, train_x=self.train_x if ti is None else self.train_x[ti],
                       train_y=self.train_y if ti is None else self.train_y[ti],
                       eval_x=self.eval_x if ei is None else self.eval_x[ei],
                       eval_y=self.eval_y if ei is None else self.eval_y[ei])

    def to(self, device) -> "TensorData":
        return replace(self, **{k: getattr(self, k).to(device) for k in
                                ("train_x", "train_y", "eval_x", "eval_y", "mean", "std")})

    def train_batches(self, batch_size: int, generator: torch.Generator):
        """One epoch of shuffled, augmented full batches (the last partial batch is dropped)."""
        perm = torch.randperm(self.train_size, generator=generator, device=self.train_x.device)
        for i in range(0, self.train_size - batch_size + 1, batch_size):
            idx = perm[i:i + batch_size]
            yield crop_flip(self.train_x[idx], self.pad, self.flip, generator), self.train_y[idx]

    def eval_batches(self, batch_size: int):
        for i in range(0, self.eval_size, batch_size):
            yield self.eval_x[i:i + batch_size], self.eval_y[i:i + batch_size]

    def close(self) -> None:
        """Nothing to release: the tensors serve every model, and no loader processes run."""


def crop_flip(x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip of a uint8 batch, as one gather.

    Each image gets its own offsets (and flip), drawn as tensors on x's device; the result is an
    (N, C, H, W) view in channels-last memory order, which is what the models run in.
    """
    if not pad and not flip:
        return x
    n, _, h, w = x.shape
    dev = x.device
    x = torch.nn.functional.pad(x, (pad, pad, pad, pad)).permute(0, 2, 3, 1)  # N, H+2p, W+2p, C
    rows = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=dev) + torch.arange(h, device=dev)
    cols = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=dev) + torch.arange(w, device=dev)
    if flip:
        flipped = torch.rand((n, 1), generator=generator, device=dev) < 0.5
        cols = torch.where(flipped, cols.flip(1), cols)
    out = x[torch.arange(n, device=dev)[:, None, None], rows[:, :, None], cols[:, None, :]]  # N, H, W, C
    return out.permute(0, 3, 1, 2)


def _tensor_data(name: str, train_x, train_y, eval_x, eval_y) -> TensorData:
    """Wrap numpy arrays (N, C, H, W) uint8; mean and std come from a fixed sample of the train split."""
    tx = torch.from_numpy(np.ascontiguousarray(train_x))
    idx = subset_indices(len(tx), 10000)
    sample = (tx if idx is None else tx[idx]).double()
    pad, flip = AUGMENT.get(name, (0, False))
    return TensorData(name, tx, torch.as_tensor(np.asarray(train_y), dtype=torch.int64),
                      torch.from_numpy(np.ascontiguousarray(eval_x)),
                      torch.as_tensor(np.asarray(eval_y), dtype=torch.int64),
                      sample.mean(dim=(0, 2, 3)).float(), sample.std(dim=(0, 2, 3)).float(), pad, flip)


def _idx_path(folder: Path, name: str) -> Path | None:
    return next((folder / f for f in (name + ".gz", name) if (folder / f).is_file()), None)


def read_idx(path: Path) -> np.ndarray:
    """An array in the IDX format of (Fashion-)MNIST, gzipped or not."""
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if raw[:2] != b"\0\0" or raw[2] != 8:
        raise BadInput(f"{path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape).copy()


def _fashion(folder: Path) -> TensorData:
    arrays = {split: [read_idx(_idx_path(folder, name)) for name in names] for split, names in FASHION_FILES.items()}
    (tx, ty), (ex, ey) = arrays["train"], arrays["eval"]
    return _tensor_data("fashion-mnist", tx[:, None], ty, ex[:, None], ey)


def _cifar(root: Path) -> TensorData:
    from torchvision.datasets import CIFAR10

    train, test = (CIFAR10(str(root), train=t, download=False) for t in (True, False))
    return _tensor_data("cifar10", train.data.transpose(0, 3, 1, 2), train.targets,
                        test.data.transpose(0, 3, 1, 2), test.targets)


def _synthetic(req: DataRequest) -> TensorData:
    """Class templates (smooth random patterns) plus pixel noise: small, deterministic and learnable."""
    g = torch.Generator().manual_seed(SUBSET_SEED)
    side, c, k = req.resolution, req.in_channels, req.num_classes
    coarse = torch.randn(k, c, 4, 4, generator=g)
    templates = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)

    def split(n):
        y = torch.randint(0, k, (n,), generator=g)
        x = 128 + 64 * templates[y] + 24 * torch.randn(n, c, side, side, generator=g)
        return x.clamp(0, 255).to(torch.uint8).numpy(), y.numpy()

    n_train = req.train_images or SYNTHETIC_SIZES[0]
    n_eval = req.eval_images or SYNTHETIC_SIZES[1]
    return _tensor_data("synthetic", *split(n_train), *split(n_eval))


def item_seed(epoch_seed: int, index: int) -> int:
    """The seed of one image's augmentation in one epoch: well mixed, so neighbouring images and epochs
    draw unrelated crops."""
    return int(np.random.SeedSequence([epoch_seed, index]).generate_state(1)[0])


class SeededItems(torch.utils.data.Dataset):
    """A data set read by (index, epoch seed): each image is augmented under its own seed, in whichever
    process reads it, leaving that process's global RNG as it was."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, epoch_seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed(epoch_seed, index))
            return self.dataset[index]


class EpochOrder(torch.utils.data.Sampler):
    """One epoch's shuffled (index, epoch seed) pairs; the trainer sets the seed before each epoch, in
    the parent process, which is where a DataLoader draws indices even when its workers persist."""

    def __init__(self, size: int):
        self.size, self.seed = size, 0

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed))
        return iter([(i, self.seed) for i in order.tolist()])


@dataclass
class FolderData:
    """An image-folder data set decoded and augmented by DataLoader workers into uint8 batches.

    The two loaders (train, eval) are made at a model's first epoch and kept, with their workers, until
    close(): starting loader processes every epoch would leave the GPU waiting on their start-up."""

    name: str
    train: torch.utils.data.Dataset
    eval: torch.utils.data.Dataset
    mean: torch.Tensor
    std: torch.Tensor
    workers: int
    device: torch.device = torch.device("cpu")
    loaders: dict = field(default_factory=dict, repr=False)

    @property
    def train_size(self) -> int:
        return len(self.train)

    @property
    def eval_size(self) -> int:
        return len(self.eval)

    def to(self, device) -> "FolderData":
        return replace(self, device=torch.device(device), mean=self.mean.to(device), std=self.std.to(device),
                       loaders={})

    def loader(self, split: str, batch_size: int):
        """The split's DataLoader at this batch size, made on first use: its workers persist from epoch
        to epoch and prefetch (DataLoader's default, 2 batches per worker)."""
        from torch.utils.data import DataLoader

        key = (split, batch_size)
        if key not in self.loaders:
            train = split == "train"
            dataset = SeededItems(self.train) if train else self.eval
            self.loaders[key] = DataLoader(
                dataset, batch_size=batch_size, sampler=EpochOrder(len(dataset)) if train else None,
                drop_last=train, num_workers=self.workers, persistent_workers=self.workers > 0,
                pin_memory=self.device.type == "cuda", generator=torch.Generator())  # not the global RNG
        return self.loaders[key]

    def _batches(self, loader):
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def train_batches(self, batch_size: int, generator: torch.Generator):
        """One shuffled epoch; its order and augmentation are seeded from the trainer's generator."""
        loader = self.loader("train", batch_size)
        loader.sampler.seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
        return self._batches(loader)

    def eval_batches(self, batch_size: int):
        return self._batches(self.loader("eval", batch_size))

    def close(self) -> None:
        """Drop the model's loaders, which ends their worker processes."""
        self.loaders.clear()


def _imagefolder(req: DataRequest) -> FolderData:
    """ImageNet-style augmentation in the workers (random-resized crop, flip; resize + center crop to eval)."""
    from torch.utils.data import Subset
    from torchvision import datasets, transforms

    root = Path(req.dataset.split(":", 1)[1]).expanduser()
    side, gray = req.resolution, req.in_channels == 1
    mode = [transforms.Grayscale(1)] if gray else []  # ImageFolder's loader gives RGB
    train_tf = transforms.Compose(mode + [transforms.RandomResizedCrop(side), transforms.RandomHorizontalFlip(),
                                          transforms.PILToTensor()])
    eval_tf = transforms.Compose(mode + [transforms.Resize(round(side / 0.875)), transforms.CenterCrop(side),
                                         transforms.PILToTensor()])
    sets = []
    for folder, tf, n in ((root / "train", train_tf, req.train_images), (_eval_folder(root), eval_tf, req.eval_images)):
        ds = datasets.ImageFolder(str(folder), transform=tf)
        idx = subset_indices(len(ds), n)
        sets.append(ds if idx is None else Subset(ds, idx.tolist()))
    mean = torch.tensor([sum(IMAGENET_MEAN) / 3] if gray else IMAGENET_MEAN) * 255
    std = torch.tensor([sum(IMAGENET_STD) / 3] if gray else IMAGENET_STD) * 255
    return FolderData(req.dataset, sets[0], sets[1], mean, std, req.loader_workers)
