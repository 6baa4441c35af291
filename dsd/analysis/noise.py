"""The noise floor: how much a model's error moves when only its training seed changes, beside how much
it moves from model to model.

A copy run (`dsd reseed`, dsd.runfolder.copies) holds models of a source run copied R times; trained
again, the copies of one model differ by their training seed only. Their errors, grouped by source
model, give the seed noise as a pooled within-group standard deviation,

    seed_sd = sqrt( sum_i sum_j (e_ij - mean_i)^2 / sum_i (k_i - 1) ),

with a chi-square interval on df = sum_i (k_i - 1) (errors taken as normal around each model's mean).
When the source run is loaded too and its models were trained with the copies' settings, each
original's error is one more seed of its group. Groups with a single error carry no seed information
and are left out. model_sd, the spread from model to model, is the SD of the source run's scored
errors when it is loaded, else of the group means (which still hold seed_sd^2 / k of seed noise).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from dsd import runfolder
from dsd.analysis.load import run_meta, run_names, run_path
from dsd.analysis.series import split_side

COLUMNS = ["run", "source", "models", "repeats", "originals", "df", "seed_sd", "seed_sd_lo", "seed_sd_hi",
           "model_sd", "model_sd_from", "ratio"]


def noise_floor(frame: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """One row per copy run in the frame (see the module docstring; COLUMNS): run, source (its name when
    loaded, else its path), models (source models with 2+ errors), repeats (copies per model), originals
    (source errors joined as one more seed), df, seed_sd with its `level` interval, model_sd,
    model_sd_from ("source run" or "copy means") and ratio = seed_sd / model_sd. No copy runs: no rows."""
    names = [n for n in run_names(frame) if is_reseed_run(frame, n)]
    return pd.DataFrame([_noise_row(frame, name, level) for name in names], columns=COLUMNS)


def _noise_row(frame: pd.DataFrame, name: str, level: float) -> dict:
    copies = frame[(frame["run"] == name) & frame["source_model_id"].notna()]
    source_name, source_label = find_source(frame, name)
    scored = copies[copies["err"].notna()]
    groups = {int(i): list(g) for i, g in scored.groupby("source_model_id")["err"]}
    originals = 0
    if source_name is not None:
        for model_id, err in joinable_originals(frame[frame["run"] == source_name], scored).items():
            if model_id in groups:
                groups[model_id].append(err)
                originals += 1
    kept = [np.asarray(g, dtype=float) for g in groups.values() if len(g) >= 2]
    sd, lo, hi, df = pooled_sd(kept, level)
    if source_name is not None:
        spread, spread_from = frame.loc[frame["run"] == source_name, "err"].dropna().to_numpy(), "source run"
    else:
        spread, spread_from = np.array([g.mean() for g in kept]), "copy means"
    model_sd = float(np.std(spread, ddof=1)) if len(spread) >= 2 else float("nan")
    return {"run": name, "source": source_label, "models": len(kept),
            "repeats": int(copies["source_model_id"].value_counts().max()), "originals": originals, "df": df,
            "seed_sd": sd, "seed_sd_lo": lo, "seed_sd_hi": hi, "model_sd": model_sd,
            "model_sd_from": spread_from, "ratio": sd / model_sd if model_sd > 0 else float("nan")}


def pooled_sd(groups: list[np.ndarray], level: float = 0.95) -> tuple[float, float, float, int]:
    """(pooled within-group SD, its chi-square interval at `level`, df) of groups of 2+ values; NaNs
    and df 0 without any."""
    df = sum(len(g) - 1 for g in groups)
    if df == 0:
        return float("nan"), float("nan"), float("nan"), 0
    ss = float(sum(((g - g.mean()) ** 2).sum() for g in groups))
    tail = (1 - level) / 2
    lo, hi = np.sqrt(ss / stats.chi2.ppf([1 - tail, tail], df))
    return float(np.sqrt(ss / df)), float(lo), float(hi), df


def is_reseed_run(frame: pd.DataFrame, name: str) -> bool:
    """Whether a run measures the noise: copies made by `dsd reseed` (a `dsd promote` run holds copies
    too, but trained with another schedule: its spread is not the noise of the source's protocol)."""
    copies = run_meta(frame, name).get("copies")
    return isinstance(copies, dict) and copies.get("made_by") == "dsd reseed"


def find_source(frame: pd.DataFrame, name: str) -> tuple[str | None, str]:
    """A copy run's source: (its name in the frame, or None when it is not loaded; a label: the name,
    else its path). Under --split, the source's half on the same side as the copies' half."""
    rel = frame.loc[(frame["run"] == name) & frame["source_run"].notna(), "source_run"].iat[0]
    path = runfolder.source_folder(run_path(frame, name), rel)
    split = frame.attrs.get("split")
    for other in run_names(frame):
        same_side = not split or split_side(other, split) == split_side(name, split)
        if other != name and same_side and Path(run_path(frame, other)).resolve() == path.resolve():
            return other, other
    return None, str(path)


def joinable_originals(source: pd.DataFrame, copies: pd.DataFrame) -> dict[int, float]:
    """{model_id: err} of the source models trained with the copies' settings (SETTING_COLUMNS; the
    seed is not one): none when the copies were trained under mixed settings."""
    def settings(row) -> tuple:
        return tuple(runfolder.setting_value(row.get(c)) for c in runfolder.SETTING_COLUMNS)

    trained = {settings(row) for _, row in copies.iterrows()}
    if len(trained) != 1:
        return {}
    (wanted,) = trained
    scored = source[source["err"].notna()]
    return {int(row["model_id"]): float(row["err"]) for _, row in scored.iterrows() if settings(row) == wanted}


def within_noise(diff: float, noise) -> bool:
    """Whether a difference of median errors is within the noise: smaller in size than seed_sd (a
    number, or a noise_floor row).

    One seed SD is what retraining a single model with another seed moves its error by; a median
    over n models moves less (about 1.25 seed_sd / sqrt(n)), so the threshold is conservative: a
    difference within it may be seeds alone and should not be read as a real one. Unknown noise
    (NaN) is never "within"."""
    seed_sd = float(noise["seed_sd"] if isinstance(noise, (Mapping, pd.Series)) else noise)
    return bool(abs(diff) < seed_sd)
