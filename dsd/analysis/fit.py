"""Quantized linear fits (docs/method.md section 5): how close a model's widths are to the RegNet rule.

For a model of total depth d with per-block widths w_j, a grid search over (w0, wa, wm) minimizes
e_fit = mean_j |log(w_j_pred / w_j)|, where w_j_pred is the quantized linear rule of dsd.design.regnet. Good
AnyNet models turn out to fit well (small e_fit): that observation is what led to RegNet.

The search is vectorized: every point of a coarse grid (w0 multiples of 8 in 8..256, wa in 0..256
log-spaced, wm in 1.5..3 log-spaced, the ranges of RegNetX) is evaluated at once, then twice refined
on a finer grid around the best point. The predictions of the coarse grid do not depend on the model,
so they are computed once per call for all models.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from dsd import runfolder
from dsd.analysis.load import run_names, run_path, scored
from dsd.design.regnet import quantized_linear_widths
from dsd.errors import BadInput
from dsd.runfolder import FITS_SCHEMA

W0_GRID = np.arange(8.0, 257.0, 8.0)
WA_GRID = np.concatenate([[0.0], np.geomspace(1.0, 256.0, 40)])
WM_GRID = np.geomspace(1.5, 3.0, 24)
REFINE_POINTS = 33
STARTS = 8

def block_widths(depths, widths) -> np.ndarray:
    """Per-block widths w_j of a model given per stage."""
    return np.repeat(np.asarray(widths, dtype=float), np.asarray(depths, dtype=int))


def _grid(w0s, was, wms):
    return [a.ravel() for a in np.meshgrid(w0s, was, wms, indexing="ij")]


def _log_predictions(points, depth: int) -> np.ndarray:
    w0, wa, wm = (p[:, None] for p in points)
    return np.log(quantized_linear_widths(depth, w0, wa, wm))


class Coarse:
    """The coarse grid and its log-predicted widths up to a depth, shared by all fits of one call."""

    def __init__(self, max_depth: int):
        self.points = _grid(W0_GRID, WA_GRID, WM_GRID)
        self.log_pred = _log_predictions(self.points, max_depth)


def _costs(log_pred, j, log_w) -> np.ndarray:
    diff = log_pred[:, j] - log_w
    return np.abs(diff, out=diff).mean(axis=1)  # in place: the fits' hot spot, half the memory traffic


def _around(grid, value, points=REFINE_POINTS):
    i = int(np.argmin(np.abs(grid - value)))
    return np.linspace(grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)], points)


def _refine(start, j, log_w) -> tuple[float, tuple]:
    """Two rounds of a finer grid around one coarse point: (e_fit, (w0, wa, wm))."""
    w0, wa, wm = start
    w0s = np.unique(np.clip([w0 - 8, w0, w0 + 8], W0_GRID[0], W0_GRID[-1]))
    was, wms = _around(WA_GRID, wa), _around(WM_GRID, wm)
    for _ in range(2):
        points = _grid(w0s, was, wms)
        cost = _costs(_log_predictions(points, int(j.max()) + 1), j, log_w)
        k = int(np.argmin(cost))
        w0, wa, wm = (float(p[k]) for p in points)
        w0s, was, wms = np.array([w0]), _around(was, wa), _around(wms, wm)
    return float(cost[k]), (w0, wa, wm)


def fit_blocks(j, log_w, coarse: Coarse) -> dict:
    """Best (w0, wa, wm) and e_fit for blocks at positions j with log widths log_w (one model, or the
    blocks of many models pooled for a population fit). The best STARTS coarse points are refined,
    since the narrow regions of an exact fit need not lie next to the single best coarse point."""
    j = np.asarray(j, dtype=int)
    cost = _costs(coarse.log_pred, j, log_w)
    starts = np.argpartition(cost, STARTS)[:STARTS] if len(cost) > STARTS else np.arange(len(cost))
    e_fit, (w0, wa, wm) = min(_refine(tuple(p[k] for p in coarse.points), j, log_w) for k in starts)
    return {"w0": w0, "wa": wa, "wm": wm, "e_fit": e_fit}


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
    coarse = Coarse(int(frame["depth"].max()))
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # numpy releases the GIL: the fits run in parallel
        fitted = list(pool.map(lambda rec: fit_model(rec.depths, rec.widths, coarse),
                               chosen.itertuples(index=False)))
    chosen = chosen.assign(fit=fitted)
    rows = []
    for run in run_names(frame):
        part = chosen[chosen["run"] == run]
        for rec in part.itertuples(index=False):
            rows.append({"run": run, "scope": "model", "model_id": rec.model_id, "rank": rec.rank,
                         "depth": rec.depth, "error": rec.err, **rec.fit})
        best = part[part["err"].notna()].head(population_top)
        if len(best):
            rows.append({"run": run, "scope": "population", "depth": int(best["depth"].max()),
                         "error": float(best["err"].mean()), **population_fit(best, coarse)})
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
