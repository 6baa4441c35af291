"""Flop-regime series (the RegNet paper's Fig. 11): one space sampled once per flops target F, each run
in the band [0.9 F, F], so that analysis can ask how the best designs move with complexity.

`dsd sample --flops-targets` names the runs (regnetx-200mf, regnetx-1.6gf) and records in each run.yaml
`series: {name, targets, target}`; `series_runs` finds the series among loaded runs. Only the runs of
one series share a meaning along the flops axis, so the across-runs trend figure is drawn for them alone.
Pure Python (no pandas import): `dsd sample` uses it and must stay fast.
"""
from __future__ import annotations

from dsd.design.regimes import parse_quantity
from dsd.errors import BadInput


def run_name(short: str, target: float) -> str:
    """The folder name of a series' run: the space's short name and the target's label, lowercased
    (regnetx-400mf, regnetx-1.6gf)."""
    return f"{short}-{flops_label(target).lower()}"


def flops_label(flops: float) -> str:
    """The paper's name of a flops regime: 2e8 -> '200MF', 1.6e9 -> '1.6GF', 8e5 -> '800KF'."""
    for unit, f in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if flops >= f:
            return f"{flops / f:g}{unit}F"
    return f"{flops:g}F"


def band(target: float) -> tuple[float, float]:
    """The flops band of a target F: [0.9 F, F], as the paper's 360M..400M is its 400MF regime.
    F * 9 / 10 is exact for round targets (0.9 * F often is not)."""
    return target * 9 / 10, target


def parse_targets(targets) -> list[float]:
    """Flops targets ('200M', '1.6G' or numbers; or one text '200M,1.6G') in ascending order; BadInput for
    none, a text that is not a quantity, a target that is not positive, or two with one name (1G, 1000M)."""
    if isinstance(targets, str):
        targets = targets.split(",")
    given = sorted(((_quantity(t), t) for t in targets), key=lambda pair: pair[0])
    if not given:
        raise BadInput("--flops-targets: no target given (e.g. 200M,400M,800M,1.6G)")
    for (low, a), (high, b) in zip(given, given[1:]):
        if flops_label(low) == flops_label(high):
            raise BadInput(f"--flops-targets: {a!r} and {b!r} are the same target ({flops_label(low)})")
    return [value for value, _ in given]


def _quantity(target) -> float:
    """One positive target, from a text such as '1.6G' or a number."""
    try:
        value = parse_quantity(target) if isinstance(target, str) else float(target)
    except BadInput as e:
        raise BadInput(f"--flops-targets: {e}") from None
    except (TypeError, ValueError):
        raise BadInput(f"--flops-targets: {target!r} is not a quantity (examples: 400M, 1.5G, 2e6)") from None
    if not value > 0 or value == float("inf"):
        raise BadInput(f"--flops-targets: a target must be a positive number, got {target!r}")
    return value


def series_runs(frame) -> dict[str, dict[str, float]]:
    """The series among the runs of frame: {series name: {run: flops target}}, runs in target order.

    A series counts when at least two of its runs are loaded, each with a target of its own; a name
    whose runs repeat a target (two series of one space loaded together) is ambiguous and left out.
    With --split each half of a series is a series of its own ("regnetx: EXPR", "regnetx: not EXPR")."""
    groups: dict[str, dict[str, float]] = {}
    split = frame.attrs.get("split")
    for run, info in (frame.attrs.get("runs") or {}).items():
        member = _member(info.get("meta") or {})
        if member is not None:
            name = member[0] + (split_side(run, split) if split else "")
            groups.setdefault(name, {})[run] = member[1]
    return {name: dict(sorted(runs.items(), key=lambda item: item[1])) for name, runs in groups.items()
            if len(runs) > 1 and len(set(runs.values())) == len(runs)}


def _member(meta: dict) -> tuple[str, float] | None:
    """(series name, target) of a run.yaml, None for a run of no series. A copy run (`dsd reseed`,
    `dsd promote`) of a series' run keeps its series entry but holds a few chosen models, not a sample
    of the band: it is not one of the series."""
    entry = meta.get("series")
    if "copies" in meta or not isinstance(entry, dict) or not entry.get("name"):
        return None
    target = entry.get("target")
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not target > 0:
        return None
    return str(entry["name"]), float(target)


def split_side(run: str, split: str) -> str:
    """Which half of a --split a run label is (dsd.analysis.filters.subpopulations names them)."""
    return f": not {split}" if run.endswith(f": not {split}") else f": {split}"
