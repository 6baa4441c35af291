"""Faults injected on purpose, to test the failure paths of a sweep; never set in normal use.

$DSD_FAULTS = "3:nan,5:raise,6:cuda,7:crash,8:crash@2": model 3's loss becomes NaN from the first step,
model 5 raises at the start, model 6 raises what torch raises after a fatal CUDA error, model 7 kills its
process at the start, model 8 after epoch 2 (its checkpoint written).
"""
from __future__ import annotations

import os
import signal

FAULTS_ENV = "DSD_FAULTS"


def injected_fault(model_id: int) -> tuple[str | None, int]:
    """The fault $DSD_FAULTS asks for this model ("nan", "raise", "cuda", "crash" or None), and for "crash" the
    epoch after which it strikes (0: at the start)."""
    for item in os.environ.get(FAULTS_ENV, "").split(","):
        mid, _, kind = item.partition(":")
        if mid.strip() == str(model_id):
            kind, _, epoch = kind.strip().partition("@")
            return kind, int(epoch or 0)
    return None, 0


def strike(model_id: int, fault: str | None, fault_epoch: int, epoch: int) -> None:
    """Raise or kill this process where the fault asks for it (epoch 0: at the start)."""
    if fault == "raise" and epoch == 0:
        raise RuntimeError(f"fault injected by ${FAULTS_ENV} into model {model_id}")
    if fault == "cuda" and epoch == 0:
        raise RuntimeError(f"CUDA error: an illegal memory access was encountered (injected by ${FAULTS_ENV} "
                           f"into model {model_id})")
    if fault == "crash" and epoch == fault_epoch:
        os.kill(os.getpid(), signal.SIGKILL)
