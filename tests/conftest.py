"""Shared fixtures: small run folders sampled in-process, for the training and scheduler tests."""
from __future__ import annotations

from pathlib import Path

import pytest


def sample_run(folder: Path, n: int = 4, space: str = "RegNetX", regime: str = "fashion",
               flops: str = ":800K", seed: int = 0) -> Path:
    """A run folder as `dsd sample --space SPACE --regime REGIME --n N --flops FLOPS --out FOLDER` makes it."""
    from dsd.api import sample_run as sample

    sample(space, n, regime=regime, flops=flops, seed=seed, out=folder)
    return Path(folder)


@pytest.fixture
def tiny_run(tmp_path):
    """Factory: tiny_run(n=4, ...) -> a fresh run folder of small Fashion-MNIST-regime models."""
    count = iter(range(1000))
    return lambda n=4, **kw: sample_run(tmp_path / f"run{next(count)}", n, **kw)


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
