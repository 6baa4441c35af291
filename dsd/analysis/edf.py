"""Error EDFs (docs/method.md section 5), the complexity-normalized EDF of NDS, and the KS comparison of runs.

F(e) = (1/n) sum_i 1[e_i < e] is the fraction of models with error strictly below e. The normalized EDF
weighs each model so that every occupied complexity bin carries the same mass: two spaces whose
models spread differently over flops are then compared at equal complexity, not at their own mix.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from dsd.errors import BadInput
from dsd.analysis.load import run_names, scored, status_counts

NORMALIZE = ("flops", "params", "acts", "infer_ms", "train_ms")  # the last two once runs are timed (`dsd time`)


def edf(errors, at, weights=None) -> np.ndarray:
    """F(at) = sum of the weights (1/n each by default) of the models with error < at."""
    errors = np.asarray(errors, dtype=float)
    order = np.argsort(errors, kind="stable")
    sorted_errors = errors[order]
    w = np.full(len(errors), 1.0 / len(errors)) if weights is None else np.asarray(weights, float)[order]
    cum = np.concatenate([[0.0], np.cumsum(w)])
    return cum[np.searchsorted(sorted_errors, np.asarray(at, dtype=float), side="left")]


def edf_steps(errors, weights=None) -> tuple[np.ndarray, np.ndarray]:
    """(x, F) for a step plot: F just after each sorted error, including it (right-continuous display)."""
    errors = np.asarray(errors, dtype=float)
    order = np.argsort(errors, kind="stable")
    w = np.full(len(errors), 1.0 / len(errors)) if weights is None else np.asarray(weights, float)[order]
    return errors[order], np.cumsum(w)


def check_bins(bins: int) -> None:
    """--bins is refused below 1 even where it goes unused (no --normalize, flops all equal), so that
    the same value is accepted or refused by every command, whatever the data."""
    if bins < 1:
        raise BadInput(f"--bins must be at least 1, got {bins}")


def bin_edges(values, bins: int, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """k equal-width bins over [lo, hi] (default: the range of the values)."""
    check_bins(bins)
    values = np.asarray(values, dtype=float)
    lo = float(np.min(values)) if lo is None else lo
    hi = float(np.max(values)) if hi is None else hi
    if hi <= lo:
        hi = lo + 1.0
    return np.linspace(lo, hi, bins + 1)


def normalized_weights(values, edges) -> np.ndarray:
    """Weight 1 / (count of the model's bin) / (number of occupied bins): sums to 1, equal mass per bin.

    Values outside the edges fall into the first or last bin.
    """
    k = len(edges) - 1
    index = np.clip(np.searchsorted(edges, np.asarray(values, dtype=float), side="right") - 1, 0, k - 1)
    counts = np.bincount(index, minlength=k)
    return 1.0 / counts[index] / np.count_nonzero(counts)


def weighted_ks(e1, w1, e2, w2) -> tuple[float, float]:
    """Two-sample KS for weighted EDFs: D = max |F1 - F2|; p as scipy's asymptotic two-sample p-value
    (the Kolmogorov distribution at n1 n2 / (n1 + n2)), with the Kish effective sample sizes
    n_eff = (sum w)^2 / sum w^2 for n1 and n2. Equal weights give ks_2samp(method="asymp")."""
    grid = np.unique(np.concatenate([e1, e2]))
    at = np.concatenate([grid, [np.inf]])
    d = float(np.max(np.abs(edf(e1, at, w1) - edf(e2, at, w2))))
    n1 = np.sum(w1) ** 2 / np.sum(np.square(w1))
    n2 = np.sum(w2) ** 2 / np.sum(np.square(w2))
    p = float(stats.kstwo.sf(d, max(1, round(n1 * n2 / (n1 + n2)))))
    return d, p


def run_weights(frame: pd.DataFrame, normalize: str | None, bins: int) -> np.ndarray:
    """Per-row EDF weights of a frame of scored models: 1/n per run, or complexity-normalized per run
    with bin edges shared by all runs (so that every run is binned the same way)."""
    check_bins(bins)
    if normalize is None:
        return 1.0 / frame.groupby("run")["err"].transform("size").to_numpy()
    if normalize not in NORMALIZE:
        raise BadInput(f"--normalize {normalize}: choose one of {', '.join(NORMALIZE)}")
    if normalize not in frame or frame[normalize].isna().any():
        raise BadInput(f"--normalize {normalize}: not every trained model has it (time the runs with `dsd time`)")
    values = frame[normalize].to_numpy(dtype=float)
    edges = bin_edges(values, bins)
    weights = np.empty(len(frame))
    for rows in frame.groupby("run", sort=False).indices.values():
        weights[rows] = normalized_weights(values[rows], edges)
    return weights


def edf_table(frame: pd.DataFrame, normalize: str | None = None, bins: int = 10) -> pd.DataFrame:
    """Per run: status counts, min / mean / median error, KS D and p against the first run.

    Means and medians are the weighted ones under --normalize. Diverged models count at chance error.
    """
    models = scored(frame)
    weights = run_weights(models, normalize, bins)
    names = run_names(frame)
    rows, first = [], None
    for name in names:
        mask = (models["run"] == name).to_numpy()
        e, w = models["err"].to_numpy()[mask], weights[mask]
        row = {"run": name, "n": int(mask.sum()), **status_counts(frame[frame["run"] == name]),
               "min": float(e.min()), "mean": float(np.sum(e * w) / np.sum(w)),
               "median": _weighted_median(e, w), "ks_d": None, "ks_p": None}
        if first is None:
            first = (e, w)
        elif normalize is None:
            res = stats.ks_2samp(first[0], e)
            row["ks_d"], row["ks_p"] = float(res.statistic), float(res.pvalue)
        else:
            row["ks_d"], row["ks_p"] = weighted_ks(first[0], first[1], e, w)
        rows.append(row)
    return pd.DataFrame(rows)


def _weighted_median(e, w) -> float:
    if np.allclose(w, w[0]):
        return float(np.median(e))
    order = np.argsort(e)
    cum = np.cumsum(w[order]) / np.sum(w)
    return float(e[order][np.searchsorted(cum, 0.5)])


def edf_curves(frame: pd.DataFrame, normalize: str | None = None, bins: int = 10) -> dict:
    """Per run the (x, F) step curve of its (possibly normalized) EDF, in the order the runs were given."""
    models = scored(frame)
    weights = run_weights(models, normalize, bins)
    curves = {}
    for name in run_names(frame):
        mask = (models["run"] == name).to_numpy()
        curves[name] = edf_steps(models["err"].to_numpy()[mask], weights[mask])
    return curves
