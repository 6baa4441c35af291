"""What each importer hands over: one `Job` per trained (or planned) model, and the typed readers that
turn a source's loosely typed JSON / YAML into it with a one-line BadInput naming the job and field.

A Job is format-free: its spec is already a dsd ModelSpec, its counts are the source's own flops and
params, its settings and outcome are result columns. dsd.importers.runs turns a list of them into a run
folder, so the NDS and pycls readers only have to parse.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from dsd.design.spec import ModelSpec
from dsd.errors import BadInput


@dataclass(frozen=True)
class Job:
    """One model of a source: where it came from (label: "job 4711 (index 3)", "job 000012"), its network,
    the models' `space` column (group: the file, the NDS list or the sweep it is in), the source's
    own complexity counts (flops / params / acts, absent where it gives none), how it was trained
    (settings: lr, wd, epochs, batch_size, warmup_epochs, zero_init_residual, train_seed) and, once it
    finished, what came of it (outcome: status, error, best_error, train_loss, error_curve, loss_curve)."""

    label: str
    spec: ModelSpec
    group: str
    counts: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    outcome: dict | None = None


def finished(errors: list[float], losses: list[float]) -> dict:
    """A Job's outcome from its per-epoch test errors (%) and training losses: a non-finite final error
    is a diverged model (analysis counts it at chance), as in `dsd train`."""
    finite = [e for e in errors if math.isfinite(e)]
    done = math.isfinite(errors[-1])
    return {"status": "done" if done else "diverged", "error": errors[-1] if done else None,
            "best_error": min(finite) if finite else None, "train_loss": losses[-1] if losses else None,
            "error_curve": errors, "loss_curve": losses}


REQUIRED = object()  # number()'s default: the key must be there
INT64_END = 2 ** 63  # whole numbers are stored as 64-bit integers: every one must lie below this


def _real(value, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadInput(f"{where}: {key} is {value!r}, not a number")
    return value


def number(obj: dict, key: str, where: str, *, integer: bool = False, positive: bool = True,
           default=REQUIRED):
    """obj[key] as a finite number (an int where `integer`, below 2**63: the run folder's integer columns
    are 64-bit), positive (else at least 0); a missing key is `default`, or BadInput when none is given."""
    if key not in obj:
        if default is REQUIRED:
            raise BadInput(f"{where}: no {key}")
        return default
    value = _real(obj[key], where, key)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise BadInput(f"{where}: {key} is {value!r}; it must be {'positive' if positive else 'at least 0'}")
    if integer and value != int(value):
        raise BadInput(f"{where}: {key} is {value!r}, not a whole number")
    if integer and value >= INT64_END:
        raise BadInput(f"{where}: {key} is {value!r}; a whole number must be below 2**63 (a 64-bit integer)")
    return int(value) if integer else float(value)


def numbers(obj: dict, key: str, where: str, *, integer: bool = False, length: int | None = None) -> list:
    """obj[key] as a non-empty list of positive numbers, of `length` entries when given."""
    values = obj.get(key)
    if not isinstance(values, list) or not values:
        raise BadInput(f"{where}: {key} must be a non-empty list, got {str(values)[:40]}")
    if length is not None and len(values) != length:
        raise BadInput(f"{where}: {key} has {len(values)} entries, not {length} as the other stage lists")
    return [number({key: v}, key, where, integer=integer) for v in values]


def curve(obj: dict, key: str, where: str, *, required: bool = True) -> list[float]:
    """obj[key] as a list of numbers (NaN allowed: a diverged epoch); [] when absent and not required."""
    values = obj.get(key)
    if values is None and not required:
        return []
    if not isinstance(values, list) or (required and not values):
        raise BadInput(f"{where}: {key} must be a non-empty list of numbers, got {str(values)[:40]}")
    types = set(map(type, values))  # one pass in C: curves are most of a source's numbers
    if types == {float}:
        return values
    if not types <= {int, float}:
        for v in values:
            _real(v, where, key)
    return [float(v) for v in values]


def section(obj: dict, key: str, where: str) -> dict:
    """obj[key], which must be a mapping."""
    if key not in obj:
        raise BadInput(f"{where}: no {key}")
    value = obj[key]
    if not isinstance(value, dict):
        raise BadInput(f"{where}: {key} must be a mapping, got {str(value)[:40]}")
    return value
