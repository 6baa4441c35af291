"""How many epochs does a study need? The rank agreement of early and final errors.

A design-space study compares populations of models, so a short protocol is good enough when it ranks
the models as the full one does. For every epoch k of a run: Kendall's tau-b and Spearman's rho between
the models' errors after epoch k (error_curve[k-1]) and their final errors (error_curve[-1]), with
percentile bootstrap intervals over models. Only done models whose curve has the run's most common
length E take part (a shorter curve comes from another protocol, not from an earlier epoch).

The bootstrap resamples the models with replacement; one resample is a vector c of multiplicities,
and every statistic of the resampled data follows from c without materializing it, so all resamples
are computed at once: with S_ij = sign(x_i - x_j) sign(y_i - y_j), tau-b's numerator is c^T S c / 2
and its tie counts are sum over tied groups of (group multiplicity choose 2); Spearman is the
c-weighted Pearson correlation of the resampled average ranks. Copies of one model tie in both errors,
as in the explicitly resampled data. S takes n^2 memory, so above DENSE_MAX models Kendall's bootstrap
calls scipy per resample instead (slower, same values).
"""
from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from dsd.analysis.bootstrap import check_settings
from dsd.analysis.load import run_names

DENSE_MAX = 4000            # tau-b by multiplicities up to here (memory n^2 float32; exact below 4096)
CHUNK_CELLS = 2_000_000     # resamples x models per chunk: bounds the memory of the bootstrap
COLUMNS = ["run", "epoch", "epochs", "n", "kendall", "kendall_lo", "kendall_hi", "spearman",
           "spearman_lo", "spearman_hi", "level"]


def usable_curves(part: pd.DataFrame) -> np.ndarray:
    """The (models, E) curves of a run's done models whose curve has the most common length E (the
    longest of equally common ones); curves with a non-finite value are left out."""
    done = part.loc[part["status"] == "done", "error_curve"]
    curves = [np.asarray(c, dtype=float) for c in done if isinstance(c, (list, np.ndarray))]
    lengths = np.array([len(c) for c in curves if len(c)], dtype=int)
    if not len(lengths):
        return np.zeros((0, 0))
    values, counts = np.unique(lengths, return_counts=True)
    epochs = int(values[counts == counts.max()].max())
    matrix = np.array([c for c in curves if len(c) == epochs]).reshape(-1, epochs)
    return matrix[np.isfinite(matrix).all(axis=1)]


@contextlib.contextmanager
def _quiet():
    """scipy warns on constant input, numpy on 0/0 and all-NaN quantiles; all mean NaN here, which
    the table shows."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _ranks(counts: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For multiplicities counts (models, resamples): each model's average rank (1-based, ties
    averaged) in every resample, centered on the mean rank (N + 1) / 2 of N resampled models; and
    per resample the number of pairs of resampled models whose x differ (for tau-b)."""
    _, inverse = np.unique(x, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    ends = np.r_[np.flatnonzero(np.diff(inverse[order])), len(x) - 1]
    cum = np.cumsum(counts[order], axis=0)[ends]          # resampled models up to each value group
    groups = np.diff(cum, axis=0, prepend=0)
    total = cum[-1]
    untied = (total**2 - np.einsum("ji,ji->i", groups, groups)) / 2
    return (cum - (groups - 1) / 2 - (total + 1) / 2)[inverse], untied


def _signs(v: np.ndarray) -> np.ndarray:
    """sign(v_i - v_j) as int8: an n x n matrix of float64 would take 8 times the memory."""
    return (v[:, None] > v).astype(np.int8) - (v[:, None] < v).astype(np.int8)


def _kendall_dense(c32: np.ndarray, x: np.ndarray, y: np.ndarray, untied_x, untied_y) -> np.ndarray:
    """tau-b of every resample from the multiplicities c32 (float32 is exact: all terms are integers
    below 2^24 = 4096^2 for n <= DENSE_MAX)."""
    s = (_signs(x) * _signs(y)).astype(np.float32)
    numerator = np.einsum("ji,ji->i", s @ c32, c32, dtype=np.float64) / 2
    return numerator / np.sqrt(untied_x * untied_y)


def bootstrap_values(curves: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(kendall, spearman), each (resamples, epochs): the statistics of curves[idx[r]] against their
    final errors, for every row r of the resample indices idx."""
    rows, n = len(idx), len(curves)
    counts = np.bincount((idx * rows + np.arange(rows)[:, None]).ravel(), minlength=rows * n)
    counts = counts.reshape(n, rows).astype(float)        # (models, resamples): multiplicities
    c32 = counts.astype(np.float32)
    y = curves[:, -1]
    dy, untied_y = _ranks(counts, y)
    weighted_dy = counts * dy
    var_y = np.einsum("ji,ji->i", weighted_dy, dy)
    kendall, spearman = np.empty((rows, curves.shape[1])), np.empty((rows, curves.shape[1]))
    with _quiet():
        for k in range(curves.shape[1]):
            x = curves[:, k]
            dx, untied_x = _ranks(counts, x)
            spearman[:, k] = np.einsum("ji,ji->i", dx, weighted_dy) / np.sqrt(
                np.einsum("ji,ji,ji->i", counts, dx, dx) * var_y)
            kendall[:, k] = (_kendall_dense(c32, x, y, untied_x, untied_y) if n <= DENSE_MAX
                             else [stats.kendalltau(x[i], y[i]).statistic for i in idx])
    return kendall, spearman


def _agreement(curves: np.ndarray, samples: int, level: float, seed: int) -> pd.DataFrame:
    """One run's table. Resamples are drawn in chunks of CHUNK_CELLS / n from one generator, the same
    resamples for every epoch."""
    n, epochs = curves.shape
    rng = np.random.default_rng(seed)
    chunk = max(1, CHUNK_CELLS // n)
    parts = [bootstrap_values(curves, rng.integers(0, n, size=(min(chunk, samples - start), n)))
             for start in range(0, samples, chunk)]
    q = [(1 - level) / 2, (1 + level) / 2]
    with _quiet():
        kendall = [stats.kendalltau(curves[:, k], curves[:, -1]).statistic for k in range(epochs)]
        spearman = [stats.spearmanr(curves[:, k], curves[:, -1]).statistic for k in range(epochs)]
        k_lo, k_hi = np.nanquantile(np.concatenate([p[0] for p in parts]), q, axis=0)
        s_lo, s_hi = np.nanquantile(np.concatenate([p[1] for p in parts]), q, axis=0)
    return pd.DataFrame({"epoch": np.arange(1, epochs + 1), "epochs": epochs, "n": n,
                         "kendall": kendall, "kendall_lo": k_lo, "kendall_hi": k_hi,
                         "spearman": spearman, "spearman_lo": s_lo, "spearman_hi": s_hi, "level": level})


def rank_agreement(frame: pd.DataFrame, samples: int = 1000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Per run and epoch k = 1..E: Kendall tau-b and Spearman rho of the errors after epoch k against
    the final errors, with percentile bootstrap intervals (see the module docstring); columns COLUMNS.
    Runs with fewer than 3 usable models have no rows."""
    check_settings(samples, level=level)
    tables, models = [], frame[["run", "status", "error_curve"]]
    models.attrs = {}                   # not copied along with every run's rows
    for run in run_names(frame):
        curves = usable_curves(models[models["run"] == run])
        if len(curves) >= 3:
            table = _agreement(curves, samples, level, seed)
            table.insert(0, "run", run)
            tables.append(table)
    return pd.concat(tables, ignore_index=True)[COLUMNS] if tables else pd.DataFrame(columns=COLUMNS)


def agreement_sentence(table: pd.DataFrame, run: str, threshold: float = 0.8) -> str | None:
    """The earliest epoch before the last whose Kendall interval lies at or above threshold, or else
    the agreement one epoch before the end (epochs with an undefined tau skipped); None when the run
    has no such epoch."""
    part = table[(table["run"] == run) & (table["epoch"] < table["epochs"])]
    part = part[np.isfinite(part["kendall"].to_numpy(dtype=float))]
    if part.empty:
        return None
    good = part[part["kendall_lo"] >= threshold]
    row = good.iloc[0] if len(good) else part.iloc[-1]
    only = "" if len(good) else "only "
    return (f"the ranking after {row['epoch']} of {row['epochs']} epochs agrees with the final one at "
            f"{only}Kendall tau = {row['kendall']:.2f} [{row['kendall_lo']:.2f}, {row['kendall_hi']:.2f}] "
            f"({100 * row['level']:g}% bootstrap interval, {row['n']} models)")
