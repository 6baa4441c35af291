"""How the best models' complexity grows with flops across a flop-regime series (docs/method.md section
5.5, the paper's Fig. 12): activations like sqrt(flops), parameters about linearly, runtime in between.

For each series (dsd.analysis.series), the `top` best models of each of its runs are pooled and, per
statistic s (acts, params, and infer_ms / train_ms once timed), the exponent k of s ~ flops^k is the
least-squares slope of log s on log flops. Its interval is a percentile bootstrap over the pooled
models (resample them with replacement, refit).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from dsd.analysis.load import TIMING_COLUMNS, scored
from dsd.analysis.series import series_runs

STATS = ("acts", "params", *TIMING_COLUMNS)
COLUMNS = ["series", "stat", "exponent", "lo", "hi", "models", "regimes"]


def best_of_runs(frame: pd.DataFrame, runs, top: int) -> pd.DataFrame:
    """The `top` lowest-error scored models of each run (ties: lower model id)."""
    models = scored(frame)
    models = models[models["run"].isin(list(runs))].sort_values(["run", "err", "model_id"], kind="stable")
    return models.groupby("run", sort=False).head(top)


def slopes(log_x: np.ndarray, log_y: np.ndarray) -> np.ndarray:
    """Least-squares slopes of each row of log_y on the matching row of log_x (rows: resamples)."""
    x = log_x - log_x.mean(axis=-1, keepdims=True)
    y = log_y - log_y.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x * y).sum(axis=-1) / (x * x).sum(axis=-1)


def complexity_exponents(frame: pd.DataFrame, top: int = 5, samples: int = 1000, level: float = 0.95,
                         seed: int = 0) -> pd.DataFrame:
    """Per series and statistic: the exponent of s ~ flops^k over the best `top` models of each run,
    with its bootstrap interval (COLUMNS). No series: no rows."""
    rows = []
    for name, runs in series_runs(frame).items():
        best = best_of_runs(frame, runs, top)
        log_f = np.log(best["flops"].to_numpy(dtype=float))
        idx = np.random.default_rng(seed).integers(0, len(best), size=(samples, len(best)))
        for stat in (s for s in STATS if s in best and best[s].notna().all()):
            log_s = np.log(best[stat].to_numpy(dtype=float))
            k = float(slopes(log_f, log_s))
            lo, hi = np.nanquantile(slopes(log_f[idx], log_s[idx]), [(1 - level) / 2, (1 + level) / 2])
            rows.append({"series": name, "stat": stat, "exponent": k, "lo": float(lo), "hi": float(hi),
                         "models": len(best), "regimes": len(runs)})
    return pd.DataFrame(rows, columns=COLUMNS)
