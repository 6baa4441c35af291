"""Per-epoch checkpoints: the whole training state of a model, saved atomically and resumed exactly.

A checkpoint holds weights, momentum, the schedule, the augmentation generator, torch's global RNG and
the curves so far, under a fingerprint of the settings it was made with; one made under other settings
(or one that cannot be read) is ignored, and the model starts afresh.
"""
from __future__ import annotations

from pathlib import Path

import torch

from dsd.design.spec import ModelSpec
from dsd.runfolder import write_atomic
from dsd.training.settings import TrainSettings


def fingerprint(spec: ModelSpec, settings: TrainSettings, data, device: torch.device) -> str:
    """What a checkpoint must have been trained with to be resumed under these settings.

    The device type is part of it: generator states and the fused optimizer differ between CPU and GPU;
    so is the memory format: momentum buffers keep the layout they were made in, and fused SGD on CUDA
    refuses a mix; so is --deterministic, whose re-runs are identical only if every epoch ran under it.
    """
    s = settings
    return repr((spec, s.epochs, s.batch_size, s.lr, s.wd, s.momentum, s.seed, s.data.dataset,
                 data.train_size, data.eval_size, device.type, s.amp, s.channels_last, s.warmup_epochs, s.warmup_factor,
                 s.zero_init_residual, s.deterministic))


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
