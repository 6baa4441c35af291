"""Train one model by the protocol of docs/method.md section 4 and return its result row.

SGD with momentum 0.9 and weight decay on every parameter, a half-period cosine learning rate (per
step, from lr down to 0) after an optional linear warm-up, optionally zero-initialised residual
branches (docs/method.md section 4.1), top-1 error on the eval split after every epoch, everything seeded by
(seed, model id). The hot loop does no per-sample Python and no host sync: batches arrive as uint8 on
the device (see dsd.training.data), are normalized there, and the loss is summed on the device and read
once per epoch, which is also when a NaN loss is noticed. On a GPU: bf16 autocast, channels-last, cudnn
autotuning and, optionally, torch.compile. Channels-last is on by default on the CPU too (oneDNN runs
these small convolutions faster in it; measured in bench/train.py). Every batch a model sees has one
shape (training drops the last partial batch, evaluation pads it), so that a compiled model compiles
once for training and once for evaluation, and cudnn tunes one shape each.

After every epoch the whole training state can be saved to a checkpoint (dsd.training.checkpoints), so
that a model interrupted at any moment resumes from its last finished epoch and ends exactly as if it
had never stopped (on the CPU, bit for bit).
"""
from __future__ import annotations

import math
import os
import platform
import socket
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dsd.version import __version__
from dsd.design.model import build_model
from dsd.design.spec import ModelSpec
from dsd.errors import BadInput
from dsd.training.checkpoints import fingerprint, load_checkpoint, save_state
from dsd.training.devices import device_name
from dsd.training.faults import injected_fault, strike
from dsd.training.settings import TrainSettings


def train_seed(seed: int, model_id: int) -> int:
    """A well-mixed 31-bit seed per (seed, model): the same model trains the same way every time."""
    return int(np.random.SeedSequence([seed, model_id]).generate_state(1)[0] >> 1)


def result_row(model_id: int, settings: TrainSettings, device, **fields) -> dict:
    """A result row (dsd.runfolder.RESULT_SCHEMA) with the settings filled in; fields override."""
    row = {"model_id": int(model_id), "status": "failed", "epochs": 0, "dataset": settings.data.dataset,
           "train_images": settings.data.train_images, "eval_images": settings.data.eval_images,
           "batch_size": settings.batch_size, "lr": settings.lr, "wd": settings.wd,
           "warmup_epochs": float(settings.warmup_epochs), "zero_init_residual": settings.zero_init_residual,
           "train_seed": train_seed(settings.seed, model_id), "deterministic": settings.deterministic,
           "device": device_name(device),
           "error_curve": [], "loss_curve": [], "message": "",
           "versions": f"dsd {__version__}; torch {torch.__version__}; python {platform.python_version()}",
           "host": socket.gethostname(), "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    row.update(fields)
    return row


@dataclass
class State:
    """What the loop advances and a checkpoint holds: the modules, the curves so far and the time spent."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    errors: list = field(default_factory=list)
    losses: list = field(default_factory=list)
    train_s: float = 0.0
    wall_s: float = 0.0  # wall time of the epochs before a resume

    def checkpoint(self, expected: str, wall_s: float) -> dict:
        return {"fingerprint": expected, "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "schedule": self.schedule.state_dict(), "generator": self.generator.get_state(),
                "rng": torch.get_rng_state(), "errors": self.errors, "losses": self.losses,
                "train_s": self.train_s, "wall_s": wall_s}


def lr_factor(step: int, total: int, warmup_steps: float, warmup_factor: float) -> float:
    """The learning rate at a step as a fraction of the peak: the half-period cosine from 1 at step 0
    to 0 at `total`, multiplied during the first warmup_steps by a linear ramp from warmup_factor to 1
    (so the warm-up ends on the cosine, not on the peak; docs/method.md section 4.1)."""
    cosine = 0.5 * (1 + math.cos(math.pi * step / total))
    if step >= warmup_steps:
        return cosine
    ramp = step / warmup_steps
    return cosine * (warmup_factor * (1 - ramp) + ramp)


def fresh_state(spec: ModelSpec, settings: TrainSettings, device: torch.device, seed: int, steps: int) -> State:
    """Seeded weights, optimizer, schedule and augmentation generator at step 0."""
    torch.manual_seed(seed)
    fmt = torch.channels_last if settings.channels_last else torch.contiguous_format
    model = build_model(spec, zero_init=settings.zero_init_residual).to(device, memory_format=fmt)
    fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
    opt = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                          weight_decay=settings.wd, **fast)
    total, warm = settings.epochs * steps, settings.warmup_epochs * steps
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: lr_factor(t, total, warm, settings.warmup_factor))
    return State(model, opt, schedule, torch.Generator(device=device).manual_seed(seed))


def resumed_state(saved: dict | None, fresh) -> tuple[State, str]:
    """The state of a checkpoint, loaded into fresh() modules; fresh() itself when there is none or it
    does not fit (which costs only the epochs it held)."""
    state = fresh()
    if saved is None:
        return state, ""
    try:
        state.model.load_state_dict(saved["model"])
        state.opt.load_state_dict(saved["optimizer"])
        state.schedule.load_state_dict(saved["schedule"])
        state.generator.set_state(saved["generator"])
        torch.set_rng_state(saved["rng"])  # DataLoader transforms draw from it without workers
        state.errors, state.losses = list(saved["errors"]), list(saved["losses"])
        state.train_s, state.wall_s = saved["train_s"], saved["wall_s"]
        return state, f"resumed from the checkpoint of epoch {len(state.errors)}"
    except Exception:  # noqa: BLE001
        return fresh(), ""


AMP_DEVICES = ("cuda",)  # device types that --amp runs under bf16 autocast (CPU results stay fp32)


def compiled(model: torch.nn.Module) -> torch.nn.Module:
    """torch.compile for a new model, with the compile cache emptied first: the cache is shared by every
    model of the process and holds 8 entries per function (each model adds 2 or more), so from about the
    third model of a long-lived worker on, training would silently run uncompiled."""
    torch.compiler.reset()
    return torch.compile(model)


@contextmanager
def kernel_choice(deterministic: bool):
    """While a model trains: with `deterministic`, no cudnn autotuning (it times kernels in each process
    and may pick a different one each time) and only deterministic kernels (torch warns where an op has
    none; cuBLAS needs CUBLAS_WORKSPACE_CONFIG, read when the process first uses it). The process's own
    choice (dsd.training.devices.setup_process) is restored afterwards."""
    if not deterministic:
        yield
        return
    cudnn = torch.backends.cudnn
    saved = (cudnn.benchmark, cudnn.deterministic, torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    cudnn.benchmark, cudnn.deterministic = False, True
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        cudnn.benchmark, cudnn.deterministic = saved[:2]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


class Steps:
    """The per-batch work on the device: normalize, forward (compiled or not), under autocast on a GPU."""

    def __init__(self, state: State, data, settings: TrainSettings, device: torch.device, nan: bool):
        self.state, self.data, self.settings, self.nan = state, data, settings, nan
        self.forward = compiled(state.model) if settings.compile else state.model
        self.fmt = torch.channels_last if settings.channels_last else torch.contiguous_format
        self.mean, self.std = data.mean.view(1, -1, 1, 1), data.std.view(1, -1, 1, 1)
        self.amp = settings.amp and device.type in AMP_DEVICES
        self.device = device

    def prepare(self, x):
        return ((x.float() - self.mean) / self.std).contiguous(memory_format=self.fmt)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def train_epoch(self, steps: int) -> float:
        """One epoch of SGD steps; the mean loss, read with the epoch's one host sync."""
        s = self.state
        s.model.train()
        loss_sum = torch.zeros((), device=self.device)
        for x, y in self.data.train_batches(self.settings.batch_size, s.generator):
            with self.autocast():
                loss = F.cross_entropy(self.forward(self.prepare(x)), y)
            if self.nan:
                loss = loss * float("nan")
            s.opt.zero_grad(set_to_none=True)
            loss.backward()
            s.opt.step()
            s.schedule.step()
            loss_sum += loss.detach().float()
        return float(loss_sum) / steps

    def evaluate(self) -> float:
        return evaluate(self.forward, self.data, self.settings.batch_size, self.prepare, self.autocast)


@torch.enable_grad()  # whatever the caller's grad mode
def train_model(spec: ModelSpec, data, settings: TrainSettings, *, model_id: int = 0, device="cpu",
                on_epoch=None, weights_path: Path | None = None, checkpoint_path: Path | None = None) -> dict:
    """Train a model on data (a dsd.training.data set already on `device`); return its result row.

    on_epoch(epoch, error, loss) is called after each evaluation. A non-finite epoch loss stops
    training with status "diverged"; exceptions propagate (the caller records them as "failed").
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
    strike(model_id, fault, fault_epoch, 0)
    expected = fingerprint(spec, settings, data, device)
    state, message = resumed_state(load_checkpoint(checkpoint_path, expected),
                                   lambda: fresh_state(spec, settings, device, seed, steps))
    start -= state.wall_s
    work, status = Steps(state, data, settings, device, nan=fault == "nan"), "done"
    with kernel_choice(settings.deterministic), closing(data):  # closing: a model's loader workers end with it
        for epoch in range(len(state.errors) + 1, settings.epochs + 1):
            t = time.perf_counter()
            state.losses.append(work.train_epoch(steps))
            state.train_s += time.perf_counter() - t
            if not math.isfinite(state.losses[-1]):
                status, message = "diverged", f"the training loss became {state.losses[-1]} in epoch {epoch}"
                break
            state.errors.append(work.evaluate())
            if checkpoint_path is not None and epoch < settings.epochs:
                save_state(checkpoint_path, state.checkpoint(expected, time.perf_counter() - start))
            strike(model_id, fault, fault_epoch, epoch)
            if on_epoch:
                on_epoch(epoch, state.errors[-1], state.losses[-1])
    if weights_path is not None and status == "done":
        save_state(weights_path, {k: v.detach().cpu() for k, v in state.model.state_dict().items()})
    errors, losses = state.errors, state.losses
    return result_row(
        model_id, settings, device, status=status, error=errors[-1] if status == "done" else None,
        best_error=min(errors) if errors else None, train_loss=losses[-1], epochs=len(errors),
        train_images=data.train_size, eval_images=data.eval_size, wall_s=time.perf_counter() - start,
        images_per_s=len(losses) * steps * settings.batch_size / max(state.train_s, 1e-9),
        error_curve=errors, loss_curve=losses, message=message)


def evaluate(model, data, batch_size: int, prepare, autocast) -> float:
    """Top-1 error (%) on the eval split; the count stays on the device until the end. A last partial
    batch is padded to the full size and only its real images are counted (in eval mode each image's
    output depends on that image alone), so the model sees one shape."""
    model.eval()
    wrong = torch.zeros((), dtype=torch.int64, device=data.mean.device)
    with torch.inference_mode(), autocast():
        for x, y in data.eval_batches(batch_size):
            wrong += (model(prepare(padded(x, batch_size))).argmax(1)[:len(y)] != y).sum()
    return 100.0 * float(wrong) / data.eval_size


def padded(x: torch.Tensor, size: int) -> torch.Tensor:
    """The batch x with zero images appended up to `size`."""
    missing = size - len(x)
    return x if missing <= 0 else torch.cat([x, x.new_zeros((missing, *x.shape[1:]))])
