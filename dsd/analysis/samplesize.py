"""How many models does a study need? Conclusions recomputed on subsamples of the trained models.

ks_by_size: how often two runs' error distributions separate (KS p < alpha) with only n models per
run. The subsampling protocol, exactly: for each pair (a, b), each n and each repetition r = 0..R-1,
rng = np.random.default_rng([seed, r]); ia = rng.choice(len(errors_a), n, replace=False); then
ib = rng.choice(len(errors_b), n, replace=False), where errors_x are the scored errors of run x in
the order of scored(frame); the result is scipy.stats.ks_2samp(errors_a[ia], errors_b[ib]). Where n
is the size of both runs every subsample is the whole run, so that n is computed once on the full
samples (repeats 1). D is computed for all repetitions at once; the p-value of equal sample sizes
depends on the data only through (n, D), so it is taken from ks_2samp once per distinct D, on two
samples made to have that D.

width_by_size: how wide the bootstrap interval of the best value (dsd.analysis.bootstrap) is with
only the first n models of one random permutation of a run's models (nested subsamples).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

from dsd.errors import BadInput
from dsd.analysis.bootstrap import best_ranges, check_settings, run_statistics
from dsd.analysis.load import run_names, scored

KS_COLUMNS = ["a", "b", "n", "repeats", "d_median", "p_median", "power", "alpha"]
WIDTH_COLUMNS = ["run", "stat", "n", "lo", "hi", "width", "full_width"]


def default_sizes(full: int) -> list[int]:
    """10, 25, 50, 100, 250, 500, 1000, ... below full, then full itself."""
    sizes, scale = [], 10
    while True:
        for step in (1, 2.5, 5):
            if int(step * scale) >= full:
                return sizes + [int(full)]
            sizes.append(int(step * scale))
        scale *= 10


def _sizes(sizes, full: int) -> list[int]:
    """The given sizes that a run of `full` models allows (default_sizes when None)."""
    if sizes is None:
        return default_sizes(full)
    if any(int(s) < 1 for s in sizes):
        raise BadInput(f"sample sizes must be at least 1, got {list(sizes)}")
    return sorted({int(s) for s in sizes if int(s) <= full})


def ks_statistics(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row of the (repeats, n) samples a and b: n * D, D the two-sample KS statistic (an integer
    for equal sizes: the largest gap between the counts of a and b at or below a value)."""
    values = np.concatenate([a, b], axis=1)
    order = np.argsort(values, axis=1, kind="stable")
    steps = np.where(order < a.shape[1], 1, -1)
    gaps = np.abs(np.cumsum(steps, axis=1))
    ordered = np.take_along_axis(values, order, axis=1)
    last = np.ones_like(gaps, dtype=bool)              # only after the last of equal values
    last[:, :-1] = ordered[:, 1:] != ordered[:, :-1]
    return np.max(np.where(last, gaps, 0), axis=1)


def _ks_p(n: int, h: int, cache: dict) -> float:
    """ks_2samp's p-value for two samples of n with D = h / n: 0..n-1 against h..n-1+h have that D."""
    if (n, h) not in cache:
        cache[n, h] = float(ks_2samp(np.arange(n), np.arange(n) + h).pvalue)
    return cache[n, h]


def _draws(len_a: int, len_b: int, n: int, repeats: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (repeats, n) indices of the protocol in the module docstring."""
    ia, ib = np.empty((repeats, n), dtype=int), np.empty((repeats, n), dtype=int)
    for r in range(repeats):
        rng = np.random.default_rng([seed, r])
        ia[r] = rng.choice(len_a, n, replace=False)
        ib[r] = rng.choice(len_b, n, replace=False)
    return ia, ib


def _pair_rows(ea, eb, sizes, repeats, seed, alpha, caches) -> list[dict]:
    """One pair's rows of ks_by_size; caches holds the draws and p-values already computed."""
    rows = []
    for n in _sizes(sizes, min(len(ea), len(eb))):
        full = n == len(ea) == len(eb)
        reps = 1 if full else repeats
        if full:
            ia, ib = np.arange(n)[None], np.arange(n)[None]
        else:
            key = (len(ea), len(eb), n)          # pairs of equally large runs share their draws
            if key not in caches["draws"]:
                caches["draws"][key] = _draws(*key, reps, seed)
            ia, ib = caches["draws"][key]
        h = ks_statistics(ea[ia], eb[ib])
        p = np.array([_ks_p(n, int(v), caches["p"]) for v in h])
        rows.append({"n": n, "repeats": reps, "d_median": float(np.median(h / n)),
                     "p_median": float(np.median(p)), "power": float(np.mean(p < alpha)), "alpha": alpha})
    return rows


def ks_by_size(frame: pd.DataFrame, pairs=None, sizes=None, repeats: int = 200, seed: int = 0,
               alpha: float = 0.05) -> pd.DataFrame:
    """Per pair of runs (default: every (a, b) with a given before b) and sample size n (default:
    default_sizes of the smaller run): the median KS D and p over the subsamples of the module
    docstring, and the power, the share of subsamples with p < alpha; columns KS_COLUMNS."""
    if repeats < 1:
        raise BadInput(f"repeats must be at least 1, got {repeats}")
    if not 0 < alpha < 1:
        raise BadInput(f"alpha must be in (0, 1), got {alpha}")
    models = scored(frame)
    names = run_names(frame)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]] if pairs is None else pairs
    unknown = sorted({r for pair in pairs for r in pair} - set(names))
    if unknown:
        raise BadInput(f"unknown run {', '.join(unknown)} (the runs are: {', '.join(names)})")
    errors = {r: models.loc[models["run"] == r, "err"].to_numpy(dtype=float) for r in names}
    rows, caches = [], {"draws": {}, "p": {}}
    for a, b in pairs:
        rows += [{"a": a, "b": b, **row} for row in _pair_rows(errors[a], errors[b], sizes, repeats, seed,
                                                               alpha, caches)]
    return pd.DataFrame(rows, columns=KS_COLUMNS)


def width_by_size(frame: pd.DataFrame, sizes=None, stats=None, samples: int = 1000, seed: int = 0,
                  level: float = 0.95) -> pd.DataFrame:
    """Per run, statistic and n: the bootstrap interval (best_ranges with this samples, level and seed)
    of the best value on the first n models of the permutation rng.permutation(run's models) with
    rng = np.random.default_rng(seed) per run, and full_width, the width on all of them (the row
    n = all models has width = full_width); columns WIDTH_COLUMNS."""
    check_settings(samples, level=level)
    tables = []
    for run, x, e in run_statistics(frame, stats):
        perm = np.random.default_rng(seed).permutation(len(e))
        x, e = x.iloc[perm], e[perm]
        full = best_ranges(x, e, samples, level=level, seed=seed)
        for n in _sizes(sizes, len(e)):
            table = full if n == len(e) else best_ranges(x.iloc[:n], e[:n], samples, level=level, seed=seed)
            table = table.assign(full_width=(full["hi"] - full["lo"]).to_numpy())
            table = table[table["n"] > 0].assign(run=run, n=n, width=lambda t: t["hi"] - t["lo"])
            tables.append(table)
    if not tables:
        return pd.DataFrame(columns=WIDTH_COLUMNS)
    return pd.concat(tables, ignore_index=True)[WIDTH_COLUMNS]


def pair_rows(table: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """The rows of one pair (in either order), by n."""
    return table[((table["a"] == a) & (table["b"] == b)) | ((table["a"] == b) & (table["b"] == a))].sort_values("n")


def separating_n(part: pd.DataFrame, power: float = 0.8) -> int | None:
    """The smallest n from which a pair's power stays at least `power` at every larger n (part: its
    rows by n), or None when it does not at the largest n."""
    weak = np.flatnonzero(part["power"].to_numpy() < power)
    if len(weak) and weak[-1] == len(part) - 1:
        return None
    return int(part["n"].iat[weak[-1] + 1 if len(weak) else 0])


def separation_sentence(table: pd.DataFrame, a: str, b: str, power: float = 0.8) -> str | None:
    """From which n on the pair separates in at least `power` of the subsamples, or its power at the
    largest n; None when the table has no row for the pair (in either order)."""
    part = pair_rows(table, a, b)
    if part.empty:
        return None
    n = separating_n(part, power)
    if n is not None:
        return (f"{a} and {b} separate (KS p < {part['alpha'].iat[0]:.2g} in at least {100 * power:g}% of "
                f"subsamples) from n = {n} models per run")
    return (f"{a} and {b} do not separate reliably at any n up to {part['n'].iat[-1]} "
            f"(power {part['power'].iat[-1]:.2f} at n = {part['n'].iat[-1]})")
