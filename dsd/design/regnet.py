"""The RegNet rules (docs/method.md sections 1.1 and 3.1): the quantized linear width rule, the split of
per-block widths into stages, and the group-width compatibility step.

Each is written once and works elementwise on numpy arrays, so the sampler applies it to a whole batch
of candidates and `dsd describe`, the fits and the figures apply it to one model through the same code.
"""
from __future__ import annotations

import numpy as np


def quantized_linear_widths(depth, w0, wa, wm, quantum: int = 8) -> np.ndarray:
    """Per-block widths w_j, j = 0..depth-1, of the quantized linear rule (half-to-even rounding).

    w0, wa, wm may be arrays of shape (n, 1): the result is then (n, depth), one row per candidate.
    The powers wm ** s are computed once per exponent s and looked up, as there are far fewer exponents
    than blocks."""
    u = w0 + wa * np.arange(int(depth))
    s = np.round(np.log(u / w0) / np.log(wm))
    powers = np.power(np.reshape(wm, (-1, 1)), np.arange(int(s.max(initial=0)) + 1, dtype=float))
    grown = np.take_along_axis(powers, s.reshape(len(powers), -1).astype(np.intp), axis=1).reshape(s.shape)
    return (np.round(w0 * grown / quantum) * quantum).astype(np.int64)


def stage_runs(block_widths, depth, stages: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per candidate (a row of block_widths, of which the first depth[i] entries count): the depths and
    widths of its first `stages` runs of equal consecutive widths, as (n, stages) arrays (0 past its
    last run), and how many runs it has."""
    w = np.atleast_2d(block_widths)
    depth = np.atleast_1d(depth)
    starts = np.ones(w.shape, bool)
    np.not_equal(w[:, 1:], w[:, :-1], out=starts[:, 1:])
    starts &= np.arange(w.shape[1]) < depth[:, None]
    runs = starts.sum(axis=1)
    row, col = np.nonzero(starts)
    rank = np.arange(len(row)) - np.repeat(np.cumsum(runs) - runs, runs)  # the run's place in its row
    end = np.append(col[1:], 0)
    last = np.append(row[1:] != row[:-1], True)
    end[last] = depth[row[last]]
    keep = rank < stages
    depths, widths = np.zeros((len(w), stages), np.int64), np.zeros((len(w), stages), w.dtype)
    depths[row[keep], rank[keep]] = (end - col)[keep]
    widths[row[keep], rank[keep]] = w[row[keep], col[keep]]
    return depths, widths, runs


def stages_from_block_widths(block_widths) -> tuple[list[int], list[int]]:
    """Stage depths and widths of one model: the runs of equal consecutive per-block widths."""
    w = np.asarray(block_widths)
    runs = 1 + int(np.count_nonzero(w[1:] != w[:-1]))
    depths, widths, _ = stage_runs(w, [len(w)], runs)
    return depths[0].tolist(), widths[0].tolist()


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
