"""The RegNet rules of PAPER.md: the quantized linear width rule and the group-width compatibility step.

Both work elementwise on numpy arrays so the sampler can apply them to a whole batch of candidates;
scalars go through the same code as 0-d arrays.
"""
from __future__ import annotations

import numpy as np


def quantized_linear_widths(depth, w0, wa, wm, quantum: int = 8) -> np.ndarray:
    """Per-block widths w_j, j = 0..depth-1, of the quantized linear rule (half-to-even rounding)."""
    u = w0 + wa * np.arange(int(depth))
    s = np.round(np.log(u / w0) / np.log(wm))
    return (np.round(w0 * np.power(wm, s) / quantum) * quantum).astype(np.int64)


def stages_from_block_widths(block_widths) -> tuple[list[int], list[int]]:
    """Stage depths and widths: the runs of equal consecutive per-block widths."""
    widths, depths = [], []
    for w in np.asarray(block_widths).tolist():
        if widths and widths[-1] == w:
            depths[-1] += 1
        else:
            widths.append(int(w))
            depths.append(1)
    return depths, widths


def regnet_stages(depth, w0, wa, wm, quantum: int = 8) -> tuple[list[int], list[int]]:
    """Stage depths and (raw, pre-compatibility) widths of one RegNet parameter set."""
    return stages_from_block_widths(quantized_linear_widths(depth, w0, wa, wm, quantum))


def compatible_widths(widths, bottleneck_ratios, group_widths):
    """The group-width compatibility step, elementwise: returns (widths, group_widths) as int64 arrays.

    v = w / b; g = min(g, v); v = max(g, round(v / g) * g) with half-to-even rounding; w = v * b.
    """
    w = np.asarray(widths, dtype=np.int64)
    b = np.asarray(bottleneck_ratios)
    v = np.rint(w / b).astype(np.int64)
    g = np.minimum(np.asarray(group_widths, dtype=np.int64), v)
    v = np.maximum(g, np.rint(v / g).astype(np.int64) * g)
    return np.rint(v * b).astype(np.int64), g
