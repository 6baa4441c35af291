"""Models trained several times: promoted models (`dsd promote`), copy runs (`dsd reseed`) and zoo runs
(`dsd zoo --out`), one row per model with the mean and spread of its error over the repeats, its
complexity and measured time (`dsd time`, when timed), and for a published zoo model the paper's
100-epoch ImageNet error beside it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from dsd.analysis.load import TIMING_COLUMNS, run_meta, run_names
from dsd.design.zoo import zoo

COLUMNS = ["run", "model", "repeats", "err_mean", "err_sd", "err_min", "err_max", "flops", "params", "acts",
           "published_error"]


def _model_key(part: pd.DataFrame, zoo_run: bool) -> pd.Series:
    """What makes rows repeats of one model: the zoo name, else the copied model's id, else the model's own."""
    if zoo_run:
        return part["space"]
    if "source_model_id" in part and part["source_model_id"].notna().any():
        return part["source_model_id"].map(lambda i: f"id {int(i)}" if pd.notna(i) else None)
    return part["model_id"].map(lambda i: f"id {int(i)}")


def model_comparison(frame: pd.DataFrame) -> pd.DataFrame:
    """Per model of the zoo and copy runs in frame (COLUMNS); other runs are left out. Errors are over
    the repeats with an error (diverged at chance, as everywhere); err_sd is NaN for a single one."""
    published = {m.name: m.published_error for m in zoo()}
    tables = []
    for name in run_names(frame):
        part = frame[frame["run"] == name]
        zoo_run = run_meta(frame, name).get("space") == "zoo"
        if not zoo_run and not ("source_model_id" in part and part["source_model_id"].notna().any()):
            continue
        grouped = part.assign(model=_model_key(part, zoo_run)).groupby("model", sort=False)
        table = grouped["err"].agg(repeats="count", err_mean="mean", err_sd="std", err_min="min",
                                   err_max="max").reset_index()
        measured = [c for c in TIMING_COLUMNS if c in part]  # `dsd time`: the median over the repeats
        sizes = pd.concat([grouped[["flops", "params", "acts"]].first(), grouped[measured].median()],
                          axis=1).reset_index(drop=True)
        table = pd.concat([table, sizes], axis=1)
        table.insert(0, "run", name)
        table["published_error"] = table["model"].map(published).astype(float) if zoo_run else np.nan
        tables.append(table)
    if not tables:
        return pd.DataFrame(columns=COLUMNS)
    table = pd.concat(tables, ignore_index=True)
    return table[COLUMNS + [c for c in TIMING_COLUMNS if c in table]]
