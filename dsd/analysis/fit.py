"""Quantized linear fits (docs/method.md section 5): how close a model's widths are to the RegNet rule.

For a model of total depth d with per-block widths w_j, a grid search over (w0, wa, wm) minimizes
e_fit = mean_j |log(w_j_pred / w_j)|, where w_j_pred is the quantized linear rule of dsd.design.regnet. Good
AnyNet models turn out to fit well (small e_fit): that observation is what led to RegNet.

The search: every point of a coarse grid (w0 multiples of 8 in 8..256, wa in 0..256 log-spaced, wm in
1.5..3 log-spaced, the ranges of RegNetX) is evaluated, and each of the STARTS best is refined twice
on a finer grid around it (REFINE_POINTS values of wa and of wm between the neighbours of the point);
the best refined point wins. Ties go as in a plain evaluation of every grid point: the coarse starts
are the STARTS least (e_fit, point) in (w0, wa, wm) order, each e_fit summed block after block; within
a fine grid the first minimum in that order; then the least (e_fit, w0, wa, wm). No step depends on
how a sort or a sum is vectorized (numpy's argpartition, which chose the starts until 2026-12, picks
among equal costs by the CPU's vector instructions).

The coarse grid is not evaluated point by point either: a fit's blocks form runs of consecutive
positions with equal widths (a model's stages; a population fit has each model's), and along a run the
predicted widths only grow, so the run's two end blocks bound its cost from below at every point. Only
the points whose bound does not exceed the STARTS-th cost found among the best-bounded ones can be
starts, and only these are summed.

The fine grids are not evaluated point by point. Along wa (w0 and wm fixed) a block's exponent
s_j = round(log(1 + wa j / w0) / log(wm)) only grows, so each column of a grid changes its predicted
widths at a few "events" (block j reaching exponent t), found from the inverse of the rule. Summing
the cost changes of the events gives every point's cost up to rounding; only the points within
rounding of the minimum, one per run of identical predictions, are then summed exactly, in the order
of a plain evaluation, so that e_fit and the chosen point are bit for bit those of evaluating the
whole grid. Many fits are solved together (numpy over models and grids).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dsd import runfolder
from dsd.analysis.load import run_names, run_path, scored
from dsd.errors import BadInput
from dsd.runfolder import FITS_SCHEMA

W0_GRID = np.arange(8.0, 257.0, 8.0)
WA_GRID = np.concatenate([[0.0], np.geomspace(1.0, 256.0, 40)])
WM_GRID = np.geomspace(1.5, 3.0, 24)
REFINE_POINTS = 33
STARTS = 8
QUANTUM = 8
CHUNK = 8  # models solved together: bounds the (grid, w0, wm, block) arrays, which then stay in cache
PROBE = 64  # the best-bounded coarse points summed first: the STARTS-th of their costs prunes the rest
# A certain event position lies this far (relatively) from the grid's wa values; else it is checked exactly.
EVENT_MARGIN = 1e-9


def block_widths(depths, widths) -> np.ndarray:
    """Per-block widths w_j of a model given per stage."""
    return np.repeat(np.asarray(widths, dtype=float), np.asarray(depths, dtype=int))


def _neighbours(lists: np.ndarray, i: np.ndarray) -> np.ndarray:
    """Per row, the REFINE_POINTS values from the value before lists[row, i] to the one after it (or
    from the value itself at an end): the list a refinement takes around a grid value."""
    rows = np.arange(len(lists))
    lo, hi = lists[rows, np.maximum(i - 1, 0)], lists[rows, np.minimum(i + 1, lists.shape[1] - 1)]
    return np.linspace(lo, hi, REFINE_POINTS, axis=-1)


def _log_ratio(w0, wa, j):
    """log(u_j / w0) of the rule, u_j = w0 + wa j, with the operations of
    dsd.design.regnet.quantized_linear_widths (so that exponents, widths and e_fit agree bit for bit)."""
    return np.log((w0 + wa * j) / w0)


def _exponents(w0, wa, j, log_wm):
    """The rule's exponents s_j = round(log(u_j / w0) / log(wm)), with its operations."""
    s = _log_ratio(w0, wa, j) / log_wm
    return np.round(s, out=s)


class Coarse:
    """The coarse grid and what all fits of one call share: the coarse log-predicted widths (one row
    per block position), the lists of wa and wm that the refinements take around every coarse value
    (and, for wm, around every value of those), the powers wm ** t of these, and log(8 k)."""

    def __init__(self, max_depth: int):
        self.wa_lists = _neighbours(np.tile(WA_GRID, (len(WA_GRID), 1)), np.arange(len(WA_GRID)))
        self.wm_lists = _neighbours(np.tile(WM_GRID, (len(WM_GRID), 1)), np.arange(len(WM_GRID)))
        n = REFINE_POINTS
        self.wm_lists2 = _neighbours(np.repeat(self.wm_lists, n, axis=0), np.tile(np.arange(n), len(WM_GRID)))
        # the largest u_j of any grid point bounds every exponent and predicted width (wm >= 1.5)
        top_u = WA_GRID[-1] * max(max_depth - 1, 0) + W0_GRID[-1]
        levels = np.arange(int(np.log(top_u / W0_GRID[0]) / np.log(WM_GRID[0]) + 0.5) + 2, dtype=float)
        self.powers = np.power(self.wm_lists[..., None], levels)
        self.powers2 = np.power(self.wm_lists2[..., None], levels).reshape(len(WM_GRID), n, n, len(levels))
        self.wm_lists2 = self.wm_lists2.reshape(len(WM_GRID), n, n)
        eights = np.arange(1, int(top_u * np.sqrt(WM_GRID[-1]) / QUANTUM) + 3) * QUANTUM
        self.log_width = np.concatenate([[np.nan], np.log(eights)])  # at k: log(8 k), as np.log of the int width
        self.log_pred_by_block = self._coarse_predictions(max_depth, levels)
        self.log_pred_by_point = np.ascontiguousarray(self.log_pred_by_block.T)  # a point's blocks side by side

    def _coarse_predictions(self, depth: int, levels: np.ndarray) -> np.ndarray:
        """log of quantized_linear_widths at every coarse point, (block, point): the rule's operations,
        with the powers of wm and the logs of widths looked up."""
        w0 = W0_GRID[:, None, None, None]
        s = _exponents(w0, WA_GRID[None, :, None, None], np.arange(depth), np.log(WM_GRID)[None, None, :, None])
        powers = np.power(WM_GRID[:, None], levels)
        k = np.round(w0 * powers[np.arange(len(WM_GRID))[:, None], s.astype(np.intp)] / QUANTUM)
        return np.ascontiguousarray(self.log_width[k.astype(np.intp)].reshape(-1, depth).T)


@dataclass
class Blocks:
    """The blocks of several fits, padded to one length: positions j, log widths, and which are real
    (a model's blocks, or the pooled blocks of a population fit, in their order)."""

    j: np.ndarray  # (fits, E) int
    log_w: np.ndarray  # (fits, E)
    real: np.ndarray  # (fits, E)  1.0 or 0.0
    count: np.ndarray  # (fits,)

    @classmethod
    def of(cls, fits: list[tuple[np.ndarray, np.ndarray]]) -> "Blocks":
        shape = (len(fits), max(len(j) for j, _ in fits))
        j, log_w, real = np.zeros(shape, np.intp), np.zeros(shape), np.zeros(shape)
        for row, (jj, lw) in enumerate(fits):
            j[row, :len(jj)], log_w[row, :len(jj)], real[row, :len(jj)] = jj, lw, 1.0
        return cls(j, log_w, real, np.array([len(jj) for jj, _ in fits]))


@dataclass
class Grids:
    """Fine grids, one per (fit, start): w0 values (padded; `ok` marks the real ones), wa and wm lists,
    the powers wm ** t and the coarse wm each wm list surrounds."""

    fit: np.ndarray  # (G,)
    w0: np.ndarray  # (G, n0)
    ok: np.ndarray  # (G, n0)
    wa: np.ndarray  # (G, 33)
    wm: np.ndarray  # (G, 33)
    powers: np.ndarray  # (G, 33, levels)
    coarse_wm: np.ndarray  # (G,)


def _runs(j: np.ndarray, log_w: np.ndarray) -> np.ndarray:
    """Where the runs of blocks at consecutive positions with equal widths (a model's stages) begin,
    and the end: along a run the rule's predicted widths only grow."""
    return np.flatnonzero(np.r_[True, (log_w[1:] != log_w[:-1]) | (j[1:] != j[:-1] + 1), True])


def _lower_bounds(table: np.ndarray, blocks: Blocks) -> np.ndarray:
    """A lower bound of e_fit at every coarse point, (fit, point): per run of equal widths w, its end
    terms plus, for each block inside, the least |log(w_pred / w)| that the growing predictions allow
    (how far the first one lies above w, or the last one below it)."""
    bound = np.zeros((len(blocks.count), table.shape[1]))
    for row, n in enumerate(blocks.count):
        j, log_w = blocks.j[row, :n], blocks.log_w[row, :n]
        edges = _runs(j, log_w)
        for a, b in zip(edges[:-1].tolist(), edges[1:].tolist()):
            first, last = table[j[a]] - log_w[a], table[j[b - 1]] - log_w[a]
            if b - a > 2:
                inner = np.maximum(first, np.negative(last))
                np.maximum(inner, 0.0, out=inner)
                inner *= b - a - 2
                bound[row] += inner
            bound[row] += np.abs(first, out=first)
            if b - a > 1:
                bound[row] += np.abs(last, out=last)
        bound[row] /= n
    return bound


def _costs_at(by_point: np.ndarray, blocks: Blocks, fit: np.ndarray, point: np.ndarray,
              span: int = 4096) -> np.ndarray:
    """e_fit of fits at coarse points (by_point: a row of log predictions per point), pair by pair:
    |log(w_pred / w)| summed block after block (np.add.accumulate's order, the same on every machine;
    padding blocks add 0.0 after the real ones), then / d."""
    out = np.empty(fit.shape)
    flat_fit, flat_point, flat_out = fit.ravel(), point.ravel(), out.reshape(-1)
    models = np.array_equal(blocks.j, np.broadcast_to(np.arange(blocks.j.shape[1]), blocks.j.shape) * blocks.real)
    for lo in range(0, flat_fit.size, span):
        f, p = flat_fit[lo:lo + span], flat_point[lo:lo + span]
        predicted = by_point[p, :blocks.j.shape[1]] if models else by_point[p[:, None], blocks.j[f]]
        terms = np.abs(predicted - blocks.log_w[f])
        terms *= blocks.real[f]
        flat_out[lo:lo + span] = np.add.accumulate(terms, axis=1)[:, -1] / blocks.count[f]
    return out


def coarse_starts(blocks: Blocks, coarse: Coarse) -> np.ndarray:
    """The STARTS least (e_fit, point) of the coarse grid for every fit, (fit, STARTS). Costs are summed
    only at the points that each fit's lower bounds leave in question: those whose bound, scaled down by
    a margin far above rounding, does not exceed the STARTS-th cost among the PROBE best-bounded points."""
    bound = _lower_bounds(coarse.log_pred_by_block, blocks)
    fits = np.arange(len(bound))[:, None]
    probe = np.argpartition(bound, PROBE, axis=1)[:, :PROBE]
    enough = np.partition(_costs_at(coarse.log_pred_by_point, blocks, np.broadcast_to(fits, probe.shape), probe),
                          STARTS - 1, axis=1)[:, STARTS - 1]
    fit, point = np.nonzero(bound * (1 - 1e-9) <= enough[:, None])  # at least STARTS per fit
    order = np.lexsort((point, _costs_at(coarse.log_pred_by_point, blocks, fit, point), fit))
    first = np.searchsorted(fit[order], fits[:, 0])
    return point[order][first[:, None] + np.arange(STARTS)]


def first_grids(blocks: Blocks, coarse: Coarse) -> Grids:
    """The first fine grid around each of the STARTS best coarse points of every fit."""
    k = coarse_starts(blocks, coarse).ravel()
    n_wa, n_wm = len(WA_GRID), len(WM_GRID)
    w0s = np.clip(W0_GRID[k // (n_wa * n_wm), None] + [-QUANTUM, 0, QUANTUM], W0_GRID[0], W0_GRID[-1])
    ok = np.ones(w0s.shape, bool)
    ok[:, 1:] = w0s[:, 1:] != w0s[:, :-1]  # a clipped duplicate, which np.unique leaves out
    order = np.argsort(~ok, axis=1, kind="stable")  # the real values first, still increasing
    rows = np.arange(len(k))[:, None]
    wa, wm = (k // n_wm) % n_wa, k % n_wm
    return Grids(np.repeat(np.arange(len(blocks.count)), STARTS), w0s[rows, order], ok[rows, order],
                 coarse.wa_lists[wa], coarse.wm_lists[wm], coarse.powers[wm], wm)


def second_grids(grids: Grids, best: tuple, coarse: Coarse) -> Grids:
    """The second fine grid around the best point of each first grid (at its w0 only)."""
    w, i, m = best
    rows = np.arange(len(grids.fit))
    return Grids(grids.fit, grids.w0[rows, w, None], np.ones((len(rows), 1), bool), _neighbours(grids.wa, i),
                 coarse.wm_lists2[grids.coarse_wm, m], coarse.powers2[grids.coarse_wm, m], grids.coarse_wm)


def solve(grids: Grids, blocks: Blocks, coarse: Coarse) -> tuple[np.ndarray, tuple]:
    """The minimum of each grid as a plain evaluation of all its points finds it: per grid, e_fit and
    the (w0, wa, wm) indices of its first minimum in (w0, wa, wm) order.

    Each (grid, w0, wm) is a column of REFINE_POINTS values of wa; its cost at the first wa, plus the
    changes of its events, is every point's cost up to rounding."""
    j, log_w, real = blocks.j[grids.fit], blocks.log_w[grids.fit], blocks.real[grids.fit]
    log_wm = np.log(grids.wm)
    first, last = (_exponents(grids.w0[:, :, None, None], grids.wa[:, None, None, [end]], j[:, None, None, :],
                              log_wm[:, None, :, None]) for end in (0, -1))  # (grid, w0, wm, block)
    n_levels = int(last.max()) + 1
    log_pred = coarse.log_width[np.minimum(np.round(grids.w0[:, :, None, None] * grids.powers[:, None, :, :n_levels]
                                                    / QUANTUM).astype(np.intp), len(coarse.log_width) - 1)]
    base = _terms(log_pred, first, log_w[:, None, None], real[:, None, None]).sum(axis=-1)
    at, delta = _events(grids, j, log_w, log_wm, log_pred, first, last)
    n = REFINE_POINTS
    shape = (len(grids.fit), grids.w0.shape[1], n, n)  # (grid, w0, wa, wm): the order of a plain evaluation
    approx = np.bincount(at, delta, minlength=base.size * n).astype(float, copy=False).reshape(shape)
    approx[:, :, 0] += base
    for i in range(1, n):  # a running sum along wa (np.cumsum is slower on these short axes)
        approx[:, :, i] += approx[:, :, i - 1]
    approx[~grids.ok] = np.inf
    changed = np.bincount(at, minlength=approx.size).reshape(shape) > 0
    changed[:, :, 0] = True
    low = approx.min(axis=(1, 2, 3))
    near = approx <= (low * (1 + 1e-9) + 1e-9)[:, None, None, None]
    point = np.flatnonzero(near & changed)  # one point per run of identical predictions, in grid order
    rg, rest = np.divmod(point, shape[1] * n * n)
    rw, ri, rm = rest // (n * n), rest // n % n, rest % n
    s = _exponents(grids.w0[rg, rw, None], grids.wa[rg, ri, None], j[rg], log_wm[rg, rm, None])
    cost = np.add.accumulate(_terms(log_pred[rg, rw, rm], s, log_w[rg], real[rg]), axis=1)[:, -1]
    cost /= blocks.count[grids.fit[rg]]  # block after block, then / d: as np.mean of a plain evaluation
    order = np.lexsort((point, cost, rg))
    best = order[np.r_[True, rg[order][1:] != rg[order][:-1]]]
    return cost[best], (rw[best], ri[best], rm[best])


def _terms(log_pred, s, log_w, real) -> np.ndarray:
    """|log(w_pred / w)| per block at exponents s (real blocks; 0 for padding); log_pred: the log
    predicted width per level, of the same leading shape as s."""
    levels = log_pred.shape[-1]
    index = s.astype(np.intp)
    index += (np.arange(index.size // index.shape[-1]) * levels).reshape(*index.shape[:-1], 1)
    terms = np.take(log_pred, index)
    terms -= log_w
    np.abs(terms, out=terms)
    terms *= real
    return terms


def _events(grids: Grids, j, log_w, log_wm, log_pred, first, last) -> tuple:
    """Where along wa each block's exponent steps up, and what that changes: per event its column
    (grid, w0, wm), level t, wa index and cost change. The index comes from inverting the rule; when it
    lies within rounding of a grid value, evaluating the rule there settles it."""
    steps = (last - first).reshape(-1, j.shape[1])  # per column and block: how many levels it climbs
    cells = [np.flatnonzero(steps > k) for k in range(int(steps.max()))]
    cell = np.concatenate([np.zeros(0, np.intp), *cells])
    t = first.reshape(steps.shape).ravel()[cell].astype(np.intp)
    t += np.repeat(np.arange(1, len(cells) + 1), [len(c) for c in cells])
    columns, e = np.divmod(cell, j.shape[1])
    g = columns // (first.shape[1] * first.shape[2])
    w0 = np.broadcast_to(grids.w0[:, :, None], first.shape[:3]).ravel()[columns]
    lwm = np.broadcast_to(log_wm[:, None, :], first.shape[:3]).ravel()[columns]
    block = g * j.shape[1] + e
    jj = j.ravel()[block]
    at = w0 * np.expm1((t - 0.5) * lwm) / jj  # the wa at which block j reaches exponent t
    n = REFINE_POINTS
    wa = grids.wa.ravel()
    at_wa = (at - wa[g * n]) * ((n - 1) / (grids.wa[:, -1] - grids.wa[:, 0]))[g]
    position = g * n + np.clip(np.ceil(at_wa), 1, n - 1).astype(np.intp)
    unsure = ~((wa[position - 1] < at * (1 - EVENT_MARGIN)) & (wa[position] > at * (1 + EVENT_MARGIN)))
    while unsure.any():
        k = np.flatnonzero(unsure)
        here = _exponents(w0[k], wa[position[k]], jj[k], lwm[k]) >= t[k]
        before = _exponents(w0[k], wa[position[k] - 1], jj[k], lwm[k]) >= t[k]
        position[k] += np.where(here, np.where(before, -1, 0), 1)
        unsure[k] = ~here | before
    lw = log_w.ravel()[block]
    at_level = columns * log_pred.shape[-1] + t
    delta = np.abs(log_pred.ravel()[at_level] - lw)
    delta -= np.abs(log_pred.ravel()[at_level - 1] - lw)
    wm = columns % n
    return ((columns - wm) + position - g * n) * n + wm, delta


def fit_blocks_many(fits: list[tuple], coarse: Coarse) -> list[dict]:
    """Best (w0, wa, wm) and e_fit for each (j, log_w): blocks at positions j with log widths log_w (one
    model, or the blocks of many models pooled for a population fit). The best STARTS coarse points are
    refined, since the narrow regions of an exact fit need not lie next to the single best coarse point."""
    blocks = Blocks.of([(np.asarray(j, dtype=np.int64), np.asarray(lw, dtype=float)) for j, lw in fits])
    grids = first_grids(blocks, coarse)
    _, best = solve(grids, blocks, coarse)
    grids = second_grids(grids, best, coarse)
    e_fit, (_, i, m) = solve(grids, blocks, coarse)
    rows = np.arange(len(e_fit))
    w0, wa, wm = grids.w0[:, 0], grids.wa[rows, i], grids.wm[rows, m]
    order = np.lexsort((wm, wa, w0, e_fit, grids.fit))  # per fit, the least (e_fit, w0, wa, wm)
    chosen = order[np.r_[True, grids.fit[order][1:] != grids.fit[order][:-1]]]
    return [{"w0": float(w0[k]), "wa": float(wa[k]), "wm": float(wm[k]), "e_fit": float(e_fit[k])} for k in chosen]


def fit_blocks(j, log_w, coarse: Coarse) -> dict:
    """Best (w0, wa, wm) and e_fit for blocks at positions j with log widths log_w."""
    return fit_blocks_many([(j, log_w)], coarse)[0]


def fit_models(depths, widths, coarse: Coarse, pool: ThreadPoolExecutor | None = None) -> list[dict]:
    """The quantized linear fits of many models (d = each one's total depth), solved CHUNK at a time, in
    the pool's threads when one is given (numpy releases the GIL)."""
    fits = [(np.arange(len(b)), np.log(b)) for b in map(block_widths, depths, widths)]
    parts = (pool.map if pool else map)(lambda lo: fit_blocks_many(fits[lo:lo + CHUNK], coarse),
                                        range(0, len(fits), CHUNK))
    return [f for part in parts for f in part]


def fit_model(depths, widths, coarse: Coarse | None = None) -> dict:
    """The quantized linear fit of one model's per-block widths (d = its total depth)."""
    w = block_widths(depths, widths)
    return fit_blocks(np.arange(len(w)), np.log(w), coarse or Coarse(len(w)))


def select(frame: pd.DataFrame, top: int | None) -> pd.DataFrame:
    """The models to fit, best first: the top k by error per run, or (top None) every model."""
    if top is not None and top < 1:
        raise BadInput(f"--top must be at least 1, got {top}")
    pool = frame if top is None else scored(frame)
    ranked = pool.sort_values(["run", "err", "model_id"], na_position="last", kind="stable")
    ranked = ranked.assign(rank=ranked.groupby("run").cumcount() + 1)
    return ranked if top is None else ranked[ranked["rank"] <= top]


def fit_runs(frame: pd.DataFrame, top: int | None = 20, population_top: int = 20) -> pd.DataFrame:
    """Per run: a fit row per selected model, and one population row (scope "population": one rule for
    the pooled blocks of the run's best `population_top` trained models, plus the least-squares line
    w_j = linear_w0 + linear_wa * j through them)."""
    chosen = select(frame, top)
    chosen.attrs = {}  # pandas would copy the runs' metadata into every frame made from it below
    coarse = Coarse(int(frame["depth"].max()))
    runs = run_names(frame)
    best = {run: chosen[(chosen["run"] == run) & chosen["err"].notna()].head(population_top) for run in runs}
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # the population fits (the longest) first
        populations = {run: pool.submit(population_fit, models, coarse) for run, models in best.items() if len(models)}
        chosen = chosen.assign(fit=fit_models(chosen["depths"], chosen["widths"], coarse, pool))
        rows = []
        for run in runs:
            for rec in chosen[chosen["run"] == run].itertuples(index=False):
                rows.append({"run": run, "scope": "model", "model_id": rec.model_id, "rank": rec.rank,
                             "depth": rec.depth, "error": rec.err, **rec.fit})
            if run in populations:
                rows.append({"run": run, "scope": "population", "depth": int(best[run]["depth"].max()),
                             "error": float(best[run]["err"].mean()), **populations[run].result()})
    fits = pd.DataFrame(rows, columns=["run", *FITS_SCHEMA.names])
    return fits.astype({"model_id": "Int64", "rank": "Int64", "depth": "int64"})


def population_fit(models: pd.DataFrame, coarse: Coarse) -> dict:
    """One quantized linear rule for the pooled blocks of several models (block j of every model is
    compared with w_j of the same rule), and the least-squares line through the same points."""
    blocks = [block_widths(d, w) for d, w in zip(models["depths"], models["widths"])]
    j = np.concatenate([np.arange(len(b)) for b in blocks])
    w = np.concatenate(blocks)
    slope, intercept = np.polyfit(j, w, 1) if len(np.unique(j)) > 1 else (0.0, float(w.mean()))
    return {**fit_blocks(j, np.log(w), coarse), "linear_w0": float(intercept), "linear_wa": float(slope)}


def save_fits(fits: pd.DataFrame, frame: pd.DataFrame) -> list[Path]:
    """Write each run's fits to RUN/fits.parquet (replacing earlier fits)."""
    return [runfolder.write_fits(run_path(frame, run), fits[fits["run"] == run].drop(columns="run"))
            for run in run_names(frame)]
