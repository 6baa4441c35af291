"""dsd's own complexity of every imported model, and how it compares with the source's numbers.

Ten thousand models one at a time cost a few seconds; dsd.design.complexity works elementwise on
arrays, so models that share the scalar parts of a network (stem, block, SE ratio, number of stages)
are counted in one call; checked() finds the networks too large for 64-bit counts (numpy's int64 wraps
around silently), which an import refuses. The comparison is what tells whether a source's conventions
match dsd's: a model whose flops or params differ is imported all the same, and the summary names the
worst one.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from dsd.design.complexity import network
from dsd.design.spec import ModelSpec

KINDS = ("flops", "params", "acts")
COMPARED = ("flops", "params")  # what NDS and pycls both report (pycls's acts rules changed over time)
LIMIT = 2.0 ** 63  # the counts are stored as int64
CHANNELS = 2 ** 29  # widest layer checked() can tell an overflow for (9 * w_b * w_b stays below 2**63)


def _column(specs: list[ModelSpec], name: str) -> np.ndarray:
    return np.array([getattr(s, name) for s in specs])


def _stage_columns(specs: list[ModelSpec], name: str) -> list[np.ndarray]:
    """Per stage, the column of that stage's value over the specs (all have as many stages)."""
    return list(_column(specs, name).T)


def _count(specs: list[ModelSpec], dtype) -> dict[str, np.ndarray]:
    """dsd.design.complexity.network over the specs, with their integer columns as `dtype`."""
    groups = defaultdict(list)
    for i, s in enumerate(specs):
        groups[(s.stem, s.block, s.se_ratio, len(s.depths))].append(i)
    out = {k: np.zeros(len(specs), dtype=dtype) for k in KINDS}
    for (stem, block, se_ratio, _), index in groups.items():
        part = [specs[i] for i in index]
        col = lambda name: _column(part, name).astype(dtype)  # noqa: E731
        stages = lambda name: [c.astype(dtype) for c in _stage_columns(part, name)]  # noqa: E731
        with np.errstate(all="ignore"):  # a count past int64 is found by checked(), not warned about
            cx = network(stem_kind=stem, stem_width=col("stem_width"), block_kind=block, se_ratio=se_ratio,
                         in_channels=col("in_channels"), num_classes=col("num_classes"),
                         resolution=col("resolution"), depths=stages("depths"), widths=stages("widths"),
                         bottleneck_ratios=[c.astype(float) for c in _stage_columns(part, "bottleneck_ratios")],
                         group_widths=stages("group_widths"), strides=stages("strides"))
        for k in KINDS:
            out[k][index] = getattr(cx, k)
    return out


def batched(specs: list[ModelSpec]) -> dict[str, np.ndarray]:
    """{"flops", "params", "acts"}: int64 arrays, one entry per spec, exactly as complexity(spec) counts
    (where the counts fit in int64: see checked())."""
    return _count(specs, np.int64)


def _widest(spec: ModelSpec) -> float:
    """The most channels any layer of the network has (a bottleneck's w / b included)."""
    bottlenecks = [float(w) / b for w, b in zip(spec.widths, spec.bottleneck_ratios)]
    return max(*map(float, (*spec.widths, spec.stem_width, spec.in_channels, spec.num_classes)), *bottlenecks)


def checked(specs: list[ModelSpec]) -> tuple[dict[str, np.ndarray], dict[int, str]]:
    """batched()'s counts, and {index: why} for the specs dsd cannot count in 64-bit integers.

    numpy's int64 arithmetic wraps around silently, so each spec is counted a second time in float64
    (exact to about 1e-13): a count of 2**63 or more, or an int64 count that differs from it, did not fit.
    The float count multiplies two channel counts in int64 where a bottleneck width is rounded, so channel
    counts are bounded first (CHANNELS)."""
    approx = _count(specs, np.float64)
    too_large = {}
    for i, s in enumerate(specs):
        if _widest(s) >= CHANNELS:
            too_large[i] = f"a layer of {_widest(s):.3g} channels, past the 2**29 that dsd counts"
        elif max(approx[k][i] for k in KINDS) >= LIMIT:
            too_large[i] = f"about {approx['flops'][i]:.3g} flops, {approx['params'][i]:.3g} params"
    fits = [i for i in range(len(specs)) if i not in too_large]
    counts = {k: np.zeros(len(specs), dtype=np.int64) for k in KINDS}
    if fits:
        exact = batched([specs[i] for i in fits])
        for k in KINDS:
            counts[k][fits] = exact[k]
            off = np.abs(exact[k] - approx[k][fits]) > 1e-9 * approx[k][fits] + 1
            for i in np.asarray(fits)[off]:
                too_large.setdefault(int(i), f"about {approx['flops'][i]:.3g} flops, {approx['params'][i]:.3g} "
                                             f"params; an intermediate product passes 2**63")
    return counts, dict(sorted(too_large.items()))


def compare(ours: dict[str, np.ndarray], theirs: list[dict], labels: list[str]) -> dict:
    """Per compared count: how many models the source gives it for, how many differ from dsd's, the
    largest relative difference |dsd - source| / source and the model it belongs to (None when none differ)."""
    summary = {}
    for kind in COMPARED:
        index = np.array([i for i, c in enumerate(theirs) if kind in c], dtype=np.int64)
        given = np.array([theirs[i][kind] for i in index], dtype=np.float64)
        diff = np.abs(ours[kind][index] - given) / np.maximum(given, 1.0)
        worst = int(np.argmax(diff)) if len(diff) and diff.max() > 0 else None
        summary[kind] = {"compared": int(len(index)), "differ": int(np.count_nonzero(diff)),
                         "max_rel_diff": float(diff[worst]) if worst is not None else 0.0,
                         "worst": labels[index[worst]] if worst is not None else None}
    return summary
