"""dsd's own complexity of every imported model, and how it compares with the source's numbers.

Ten thousand models one at a time cost a few seconds; dsd.design.complexity works elementwise on
arrays, so models that share the scalar parts of a network (stem, block, SE ratio, number of stages)
are counted in one call. The comparison is what tells whether a source's conventions match dsd's: a
model whose flops or params differ is imported all the same, and the summary names the worst one.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from dsd.design.complexity import network
from dsd.design.spec import ModelSpec

KINDS = ("flops", "params", "acts")
COMPARED = ("flops", "params")  # what NDS and pycls both report (pycls's acts rules changed over time)


def _column(specs: list[ModelSpec], name: str) -> np.ndarray:
    return np.array([getattr(s, name) for s in specs])


def _stage_columns(specs: list[ModelSpec], name: str) -> list[np.ndarray]:
    """Per stage, the column of that stage's value over the specs (all have as many stages)."""
    return list(_column(specs, name).T)


def batched(specs: list[ModelSpec]) -> dict[str, np.ndarray]:
    """{"flops", "params", "acts"}: int64 arrays, one entry per spec, exactly as complexity(spec) counts."""
    groups = defaultdict(list)
    for i, s in enumerate(specs):
        groups[(s.stem, s.block, s.se_ratio, len(s.depths))].append(i)
    out = {k: np.zeros(len(specs), dtype=np.int64) for k in KINDS}
    for (stem, block, se_ratio, _), index in groups.items():
        part = [specs[i] for i in index]
        cx = network(stem_kind=stem, stem_width=_column(part, "stem_width"), block_kind=block,
                     se_ratio=se_ratio, in_channels=_column(part, "in_channels"),
                     num_classes=_column(part, "num_classes"), resolution=_column(part, "resolution"),
                     depths=_stage_columns(part, "depths"), widths=_stage_columns(part, "widths"),
                     bottleneck_ratios=[c.astype(float) for c in _stage_columns(part, "bottleneck_ratios")],
                     group_widths=_stage_columns(part, "group_widths"), strides=_stage_columns(part, "strides"))
        for k in KINDS:
            out[k][index] = getattr(cx, k)
    return out


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
