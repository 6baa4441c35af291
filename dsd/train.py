"""Train one model by the protocol of PAPER.md section 4 and return its result row.

SGD with momentum 0.9 and weight decay on every parameter, a half-period cosine learning rate (per
step, from lr down to 0), top-1 error on the eval split after every epoch, everything seeded by
(seed, model id). The hot loop does no per-sample Python and no host sync: batches arrive as uint8 on
the device (see dsd.data), are normalized there, and the loss is summed on the device and read once per
epoch, which is also when a NaN loss is noticed. On a GPU: bf16 autocast, channels-last, cudnn
autotuning and, optionally, torch.compile. Channels-last is on by default on the CPU too (oneDNN runs
these small convolutions faster in it; measured in bench/train.py).

After every epoch the whole training state (weights, momentum, schedule, the augmentation generator,
curves) can be saved to a checkpoint, so that a model interrupted at any moment resumes from its last
finished epoch and ends exactly as if it had never stopped (on the CPU, bit for bit).
"""
from __future__ import annotations

import math
import os
import platform
import signal
import socket
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dsd import __version__
from dsd.data import DataRequest
from dsd.errors import BadInput
from dsd.model import build_model
from dsd.regimes import Regime
from dsd.spec import ModelSpec
from dsd.store import write_atomic

# "3:nan,5:raise,7:crash": model 3's loss becomes NaN, model 5 raises, model 7 kills its process
# (tests of the failure paths; never set in normal use)
FAULTS_ENV = "DSD_FAULTS"


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides how a model is trained (all of it lands in the result row or run log)."""

    data: DataRequest
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    wd: float = 5e-4
    momentum: float = 0.9
    seed: int = 0
    amp: bool = True            # bf16 autocast, CUDA only
    channels_last: bool = True
    compile: bool = False
    save_weights: bool = False  # RUN/weights/ID.pt after the last epoch
    checkpoints: bool = True    # RUN/checkpoints/ID.pt after every epoch, to resume an interrupted model


def settings_for(regime: Regime, dataset: str | None = None, *, epochs: int | None = None,
                 batch_size: int | None = None, lr: float | None = None, wd: float | None = None,
                 data_dir: str | None = None, download: bool = True, train_images: int | None = None,
                 eval_images: int | None = None, loader_workers: int = 4, **flags) -> TrainSettings:
    """The protocol's defaults for a regime (its data set, epochs, batch size, lr, wd) with overrides.

    A batch size given without an lr scales the regime's lr linearly, keeping the lr per image.
    """
    base = {"epochs": 10, "batch_size": 128, "lr": 0.1, "wd": 5e-4, **(regime.train or {})}
    if lr is None and batch_size is not None:
        lr = base["lr"] * batch_size / base["batch_size"]
    chosen = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "wd": wd}
    values = {k: base[k] if v is None else v for k, v in chosen.items()}
    for k, v in (("train_images", train_images), ("eval_images", eval_images)):
        if v is not None and v <= 0:
            raise BadInput(f"--{k.replace('_', '-')} must be positive, got {v}")
    for k in ("epochs", "batch_size"):
        if values[k] <= 0:
            raise BadInput(f"--{k.replace('_', '-')} must be positive, got {values[k]}")
    if values["lr"] <= 0 or values["wd"] < 0:
        raise BadInput(f"--lr must be positive and --wd not negative, got {values['lr']} and {values['wd']}")
    req = DataRequest(dataset or regime.dataset, regime.resolution, regime.in_channels, regime.num_classes,
                      data_dir, download, train_images, eval_images, loader_workers)
    return TrainSettings(req, **values, **flags)


def train_seed(seed: int, model_id: int) -> int:
    """A well-mixed 31-bit seed per (seed, model): the same model trains the same way every time."""
    return int(np.random.SeedSequence([seed, model_id]).generate_state(1)[0] >> 1)


def resolve_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput(f"--device {device}: no CUDA GPU is visible to torch")
    if device != "cpu" and not device.startswith("cuda"):
        raise BadInput(f"--device {device}: expected auto, cpu, cuda or cuda:N")
    if device.startswith("cuda:"):
        index = device.partition(":")[2]
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise BadInput(f"--device {device}: torch sees {torch.cuda.device_count()} GPU(s), cuda:0..")
    return device


def setup_process(device: str, threads: int | None = None) -> None:
    """Per-process settings of a trainer: CPU threads; cudnn autotuning and TF32 on a GPU."""
    if threads:
        torch.set_num_threads(threads)
    if device.startswith("cuda"):
        if torch.device(device).index is not None:
            torch.cuda.set_device(torch.device(device))
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def device_name(device) -> str:
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def result_row(model_id: int, settings: TrainSettings, device, **fields) -> dict:
    """A result row (dsd.store.RESULT_SCHEMA) with the settings filled in; fields override."""
    row = {"model_id": int(model_id), "status": "failed", "epochs": 0, "dataset": settings.data.dataset,
           "train_images": settings.data.train_images, "eval_images": settings.data.eval_images,
           "batch_size": settings.batch_size, "lr": settings.lr, "wd": settings.wd,
           "train_seed": train_seed(settings.seed, model_id), "device": device_name(device),
           "error_curve": [], "loss_curve": [], "message": "",
           "versions": f"dsd {__version__}; torch {torch.__version__}; python {platform.python_version()}",
           "host": socket.gethostname(), "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    row.update(fields)
    return row


def injected_fault(model_id: int) -> tuple[str | None, int]:
    """The fault $DSD_FAULTS asks for this model, and for "crash" the epoch after which it strikes.

    Kinds: "nan" (from the first step), "raise" (at the start), "crash" (at the start; "crash@2": the
    process kills itself after epoch 2, its checkpoint written), or None.
    """
    for item in os.environ.get(FAULTS_ENV, "").split(","):
        mid, _, kind = item.partition(":")
        if mid.strip() == str(model_id):
            kind, _, epoch = kind.strip().partition("@")
            return kind, int(epoch or 0)
    return None, 0


def fingerprint(spec: ModelSpec, settings: TrainSettings, data, device: torch.device) -> str:
    """What a checkpoint must have been trained with to be resumed under these settings.

    The device type is part of it: generator states and the fused optimizer differ between CPU and GPU.
    """
    s = settings
    return repr((spec, s.epochs, s.batch_size, s.lr, s.wd, s.momentum, s.seed, s.data.dataset,
                 data.train_size, data.eval_size, device.type, s.amp))


def save_state(path: Path, state: dict) -> None:
    write_atomic(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path | None, expected: str) -> dict | None:
    """The checkpoint at path when it was made under the same settings; None otherwise (start afresh)."""
    if path is None or not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  (an unreadable checkpoint only costs the epochs it held)
        return None
    return state if isinstance(state, dict) and state.get("fingerprint") == expected else None


@torch.enable_grad()  # whatever the caller's grad mode
def train_model(spec: ModelSpec, data, settings: TrainSettings, *, model_id: int = 0, device="cpu",
                on_epoch=None, weights_path: Path | None = None, checkpoint_path: Path | None = None) -> dict:
    """Train a model on data (a dsd.data set already on `device`); return its result row.

    on_epoch(epoch, error, loss) is called after each evaluation. A non-finite epoch loss stops
    training with status "diverged"; exceptions propagate (the scheduler records them as "failed").
    With checkpoint_path, the state after each epoch is saved there, and a checkpoint found there at
    the start (made under the same settings) is resumed from; the caller removes it when done.
    """
    start = time.perf_counter()
    device = torch.device(device)
    seed = train_seed(settings.seed, model_id)
    steps = data.train_size // settings.batch_size
    if steps == 0:
        raise BadInput(f"{data.train_size} training images do not make one batch of {settings.batch_size}")
    fault, fault_epoch = injected_fault(model_id)
    if fault == "raise":
        raise RuntimeError(f"fault injected by ${FAULTS_ENV} into model {model_id}")
    if fault == "crash" and fault_epoch == 0:
        os.kill(os.getpid(), signal.SIGKILL)

    fmt = torch.channels_last if settings.channels_last else torch.contiguous_format
    fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
    total = settings.epochs * steps

    def fresh():
        """Seeded weights, optimizer, schedule and augmentation generator at step 0."""
        torch.manual_seed(seed)
        model = build_model(spec).to(device, memory_format=fmt)
        opt = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                              weight_decay=settings.wd, **fast)
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / total)))
        return model, opt, schedule, torch.Generator(device=device).manual_seed(seed)

    model, opt, schedule, generator = fresh()
    errors, losses, train_s, status, message = [], [], 0.0, "done", ""
    expected = fingerprint(spec, settings, data, device)
    resumed = load_checkpoint(checkpoint_path, expected)
    if resumed is not None:
        try:
            model.load_state_dict(resumed["model"])
            opt.load_state_dict(resumed["optimizer"])
            schedule.load_state_dict(resumed["schedule"])
            generator.set_state(resumed["generator"])
            torch.set_rng_state(resumed["rng"])  # DataLoader transforms draw from it without workers
            errors, losses, train_s = list(resumed["errors"]), list(resumed["losses"]), resumed["train_s"]
            start -= resumed["wall_s"]
            message = f"resumed from the checkpoint of epoch {len(errors)}"
        except Exception:  # noqa: BLE001  (a checkpoint that does not fit costs only the epochs it held)
            model, opt, schedule, generator = fresh()
    forward = torch.compile(model) if settings.compile else model
    mean, std = data.mean.view(1, -1, 1, 1), data.std.view(1, -1, 1, 1)
    amp = settings.amp and device.type == "cuda"

    def prepare(x):
        return ((x.float() - mean) / std).contiguous(memory_format=fmt)

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if amp else nullcontext()

    for epoch in range(len(errors) + 1, settings.epochs + 1):
        model.train()
        t = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        for x, y in data.train_batches(settings.batch_size, generator):
            with autocast():
                loss = F.cross_entropy(forward(prepare(x)), y)
            if fault == "nan":
                loss = loss * float("nan")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            loss_sum += loss.detach().float()
        losses.append(float(loss_sum) / steps)  # the epoch's one host sync
        train_s += time.perf_counter() - t
        if not math.isfinite(losses[-1]):
            status, message = "diverged", f"the training loss became {losses[-1]} in epoch {epoch}"
            break
        errors.append(evaluate(forward, data, settings.batch_size, prepare, autocast))
        if checkpoint_path is not None and epoch < settings.epochs:
            save_state(checkpoint_path, {
                "fingerprint": expected, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "schedule": schedule.state_dict(), "generator": generator.get_state(),
                "rng": torch.get_rng_state(), "errors": errors,
                "losses": losses, "train_s": train_s, "wall_s": time.perf_counter() - start})
        if fault == "crash" and epoch == fault_epoch:
            os.kill(os.getpid(), signal.SIGKILL)
        if on_epoch:
            on_epoch(epoch, errors[-1], losses[-1])

    if weights_path is not None and status == "done":
        save_state(weights_path, {k: v.detach().cpu() for k, v in model.state_dict().items()})
    return result_row(
        model_id, settings, device, status=status, error=errors[-1] if status == "done" else None,
        best_error=min(errors) if errors else None, train_loss=losses[-1], epochs=len(errors),
        train_images=data.train_size, eval_images=data.eval_size, wall_s=time.perf_counter() - start,
        images_per_s=len(losses) * steps * settings.batch_size / max(train_s, 1e-9),
        error_curve=errors, loss_curve=losses, message=message)


def evaluate(model, data, batch_size: int, prepare, autocast) -> float:
    """Top-1 error (%) on the eval split; the count stays on the device until the end."""
    model.eval()
    wrong = torch.zeros((), dtype=torch.int64, device=data.mean.device)
    with torch.inference_mode(), autocast():
        for x, y in data.eval_batches(batch_size):
            wrong += (model(prepare(x)).argmax(1) != y).sum()
    return 100.0 * float(wrong) / data.eval_size
