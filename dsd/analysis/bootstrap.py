"""Design trends by the empirical bootstrap of docs/method.md section 5 (RegNet footnote 4).

The question is "which value of a statistic do the best models have?". One best model says little;
the bootstrap asks it many times: draw 25% of the (statistic, error) pairs with replacement, keep the
statistic of the draw's minimum-error model, repeat 10^4 times. The 95% interval of the kept values
is the likely range of the best value, their median the most likely best value.

Which model wins a draw depends only on the errors, so one (samples, m) index draw per run serves
every statistic that all its models have; statistics missing on some models (w0 on AnyNet rows)
get their own draw over the models that have them.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from dsd.errors import BadInput
from dsd.runfolder import sampled_settings
from dsd.analysis.load import TIMING_COLUMNS, run_names, scored

STAGE_STATS = {"d": "depths", "w": "widths", "b": "bottleneck_ratios", "g": "group_widths"}
ALIASES = {"depth": "d"}


def stage_matrix(column: pd.Series) -> np.ndarray:
    """A list column as an (n, max stages) float matrix, NaN past a model's last stage."""
    lengths = column.map(len).to_numpy()
    out = np.full((len(column), int(lengths.max(initial=0))), np.nan)
    if out.size:
        out[np.arange(out.shape[1]) < lengths[:, None]] = np.concatenate(column.to_numpy()).astype(float)
    return out


def model_statistics(frame: pd.DataFrame) -> pd.DataFrame:
    """Per model: d1.. w1.. b1.. g1.. (per stage), the stage ratios w2/w1.. d2/d1.., d (total depth),
    w_sum (sum of stage widths),
    w0, wa, wm (RegNet rows), flops, params, acts, infer_ms, train_ms for timed runs (`dsd time`), and
    lr, wd where the space draws them per model.
    Columns that no model has are left out."""
    columns = {}
    for prefix, source in STAGE_STATS.items():
        matrix = stage_matrix(frame[source])
        for i in range(matrix.shape[1]):
            columns[f"{prefix}{i + 1}"] = matrix[:, i]
    for prefix in ("w", "d"):  # the paper's Fig. 7: how a stage grows over the one before
        matrix = stage_matrix(frame[STAGE_STATS[prefix]])
        for i in range(1, matrix.shape[1]):
            columns[f"{prefix}{i + 1}/{prefix}{i}"] = matrix[:, i] / matrix[:, i - 1]
    columns["d"] = frame["depth"].to_numpy(dtype=float)
    columns["w_sum"] = stage_matrix(frame["widths"]).sum(axis=1) if len(frame) else np.zeros(0)
    for name in ("w0", "wa", "wm", "flops", "params", "acts", *(c for c in TIMING_COLUMNS if c in frame)):
        columns[name] = frame[name].to_numpy(dtype=float)
    for name in sampled_settings(frame):  # lr, wd drawn per model: the values each model trained with
        columns[name] = frame[name].to_numpy(dtype=float)
    stats = pd.DataFrame(columns, index=frame.index)
    return stats.loc[:, stats.notna().any()]


LOG_SCALE_MIN_RATIO = 8.0  # a positive statistic spanning this factor or more is read on a log scale


def log_scaled(name: str, values) -> bool:
    """Whether a statistic is read on a log scale (in figures, and when a best range is called narrow):
    positive and spanning a factor of 8 or more (widths, flops, ...); depths stay linear, since their
    steps of one block matter."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return not name.startswith("d") and len(v) > 0 and v.min() > 0 and v.max() / v.min() >= LOG_SCALE_MIN_RATIO


def pick_stats(stats: pd.DataFrame, wanted: list[str] | None) -> list[str]:
    """The requested statistics (BadInput naming unknown ones), or with None every one that varies.

    An empty list is refused: `--stats ''` is more likely a lost shell variable than a wish for all."""
    if wanted is None:  # the stage ratios only when asked for: they would double the figure
        varying = [c for c in stats.columns if stats[c].nunique() > 1 and "/" not in c]
        if not varying:
            raise BadInput("no statistic varies across the trained models (too few trained yet?)")
        return varying
    if not wanted:
        raise BadInput("--stats: no statistic named")
    wanted = [ALIASES.get(s, s) for s in wanted]
    unknown = [s for s in wanted if s not in stats.columns]
    if unknown:
        raise BadInput(f"--stats: unknown or absent statistic {', '.join(unknown)} "
                       f"(this data has: {', '.join(stats.columns)})")
    return list(dict.fromkeys(wanted))


def best_indices(errors: np.ndarray, samples: int, subsample: float, rng: np.random.Generator) -> np.ndarray:
    """Per bootstrap draw, the index of the minimum-error model among round(subsample * n) drawn
    with replacement."""
    m = max(1, int(round(subsample * len(errors))))
    idx = rng.integers(0, len(errors), size=(samples, m))
    return idx[np.arange(samples), np.argmin(errors[idx], axis=1)]


def check_settings(samples: int, subsample: float = 0.25, level: float = 0.95) -> None:
    if samples < 1:
        raise BadInput(f"--samples must be at least 1, got {samples}")
    if not 0 < subsample <= 1:
        raise BadInput(f"--subsample must be in (0, 1], got {subsample}")
    if not 0 < level < 1:
        raise BadInput(f"--level must be in (0, 1), got {level}")


def best_ranges(x: pd.DataFrame, errors: np.ndarray, samples: int = 10_000, subsample: float = 0.25,
                level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Bootstrap median and interval of the best value of every column of x (rows: models)."""
    check_settings(samples, subsample, level)
    q = [(1 - level) / 2, 0.5, (1 + level) / 2]
    draws, rows = {}, []
    for name in x.columns:
        values = x[name].to_numpy(dtype=float)
        have = ~np.isnan(values)
        key = have.tobytes()
        if key not in draws:
            draws[key] = np.flatnonzero(have)[best_indices(errors[have], samples, subsample,
                                                            np.random.default_rng(seed))] if have.any() else None
        best = draws[key]
        lo, median, hi = np.quantile(values[best], q) if best is not None else (np.nan,) * 3
        top = np.flatnonzero(have)[np.argmin(errors[have])] if have.any() else None
        rows.append({"stat": name, "n": int(have.sum()), "lo": float(lo), "median": float(median),
                     "hi": float(hi), "best_model": float(values[top]) if top is not None else np.nan})
    return pd.DataFrame(rows)


def run_statistics(frame: pd.DataFrame, stats: list[str] | None):
    """Per run, in order: (name, the requested statistics of its scored models, their errors)."""
    models = scored(frame)
    all_stats = model_statistics(models)
    names = pick_stats(all_stats, stats)
    for run in run_names(frame):
        mask = (models["run"] == run).to_numpy()
        yield run, all_stats.loc[mask, names], models["err"].to_numpy()[mask]


def trends(frame: pd.DataFrame, stats: list[str] | None = None, samples: int = 10_000,
           subsample: float = 0.25, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Per run and statistic: n, the bootstrap interval (lo, hi) and median of the best value, and the
    value of the run's single best model. Diverged models take part at chance error."""
    check_settings(samples, subsample, level)
    tables = []
    for run, x, errors in run_statistics(frame, stats):
        table = best_ranges(x, errors, samples, subsample, level, seed)
        table.insert(0, "run", run)
        tables.append(table[table["n"] > 0])
    return pd.concat(tables, ignore_index=True)
