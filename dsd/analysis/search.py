"""Random-search efficiency (NDS): how good is the best of k random models from a space?

For k = 1, 2, 4, ... the minimum error of k models drawn at random (with replacement) from a run's
trained models. Its distribution is known exactly from the sorted errors e_(1) <= ... <= e_(n): the
minimum is e_(i) with probability ((n-i+1)/n)^k - ((n-i)/n)^k. So the mean, spread and quantiles are
computed exactly instead of by Monte-Carlo, and need no seed. A space whose curve drops faster needs
fewer trials to find a good model.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from dsd.analysis.load import run_names, scored


def sample_sizes(n: int) -> np.ndarray:
    """1, 2, 4, ... up to n."""
    return 2 ** np.arange(int(np.floor(np.log2(n))) + 1) if n >= 1 else np.zeros(0, dtype=int)


def min_of_k(errors, ks) -> pd.DataFrame:
    """Per k: mean, std, 25% and 75% quantiles of the minimum error of k random models."""
    e = np.sort(np.asarray(errors, dtype=float))
    n = len(e)
    ks = np.asarray(ks)
    survive = ((n - np.arange(n + 1)) / n)[None, :] ** ks[:, None]   # P(min at sorted position >= i)
    p = survive[:, :-1] - survive[:, 1:]                              # P(min is e_(i)), rows sum to 1
    mean = p @ e
    std = np.sqrt(np.maximum(p @ e**2 - mean**2, 0.0))
    cdf = np.cumsum(p, axis=1)
    q25, q75 = (e[np.minimum((cdf < q).sum(axis=1), n - 1)] for q in (0.25, 0.75))
    return pd.DataFrame({"k": ks, "mean": mean, "std": std, "q25": q25, "q75": q75})


def search_efficiency(frame: pd.DataFrame) -> pd.DataFrame:
    """min_of_k per run for k = 1, 2, 4, ... up to the run's number of trained models (diverged at chance)."""
    models = scored(frame)
    tables = []
    for run in run_names(frame):
        e = models.loc[models["run"] == run, "err"].to_numpy()
        table = min_of_k(e, sample_sizes(len(e)))
        table.insert(0, "run", run)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)
