"""Run folders -> one pandas DataFrame: the single input of every analysis.

Each row is one sampled model (models.parquet) joined with its result row (dsd.runfolder.read_results), if
any. Models without a result keep status "untrained", so partial runs load. The column `run` names
the run, and `err` is the error the statistics use: the error of a done model, chance-level error
for a diverged one (a diverged model is a bad model, not a missing one), NaN for failed and
untrained models.

A run timed by `dsd time` also gets its RUN/timings.parquet: infer_ms and train_ms (milliseconds per
batch of timing_batch images, on timing_device: per batch, as the paper's zoo reports "ms for 64
images"), statistics like flops. A run never timed gets no such columns.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dsd import runfolder
from dsd.errors import BadInput
from dsd.runfolder.status import chance_error

UNTRAINED = "untrained"
STATUS_ORDER = ("done", "diverged", "failed", UNTRAINED)
TIMING_COLUMNS = ("infer_ms", "train_ms")
LIST_COLUMNS = ("depths", "widths", "bottleneck_ratios", "group_widths", "strides", "error_curve",
                "loss_curve")


def run_name(run: Path) -> str:
    """A run's label in tables and figures: its folder's name (runs/xa_cifar -> xa_cifar)."""
    return Path(run).resolve().name


def load_run(run: Path) -> pd.DataFrame:
    """One run folder as a DataFrame (see the module docstring); BadInput when it has no models."""
    run = Path(run)
    meta = runfolder.read_meta(run)
    models = runfolder.read_models(run).to_pandas()
    models["activation"] = models["activation"].fillna("relu")  # files written before the column: relu
    if models.empty:
        raise BadInput(f"{run}: the run has no models (sample some with `dsd sample`)")
    results = runfolder.read_results(run).to_pandas().drop_duplicates("model_id", keep="last")
    if models["model_id"].duplicated().any():
        raise BadInput(f"{run / runfolder.MODELS_FILE}: duplicate model ids")
    frame = models.merge(results, on="model_id", how="left")
    timed = timings(run)
    if not timed.empty:
        frame = frame.merge(timed, on="model_id", how="left")
    frame["status"] = frame["status"].fillna(UNTRAINED)
    diverged = (frame["status"] == "diverged").to_numpy()
    done = (frame["status"] == "done").to_numpy()
    err = np.where(done, frame["error"].to_numpy(dtype=float), np.nan)
    frame["err"] = np.where(diverged, chance_error(frame["num_classes"].to_numpy()), err)
    frame.insert(0, "run", run_name(run))
    frame.attrs = {"runs": {run_name(run): {"path": str(run), "meta": meta}}}
    return frame


def timings(run: Path) -> pd.DataFrame:
    """A run's timings as the frame's columns (see the module docstring); empty when never timed."""
    t = runfolder.read_timings(run).to_pandas()
    return pd.DataFrame({"model_id": t["model_id"], "infer_ms": 1e3 * t["infer_s"], "train_ms": 1e3 * t["train_s"],
                         "timing_batch": t["batch"], "timing_device": t["device"]})


def load_runs(runs) -> pd.DataFrame:
    """Several run folders stacked; run names made unique (a second "xa" becomes "xa#2")."""
    frames, attrs = [], {}
    for run in runs:
        frame = load_run(run)
        name = frame["run"].iat[0]
        unique, k = name, 2
        while unique in attrs:
            unique, k = f"{name}#{k}", k + 1
        frame["run"] = unique
        attrs[unique] = frame.attrs["runs"][name]
        frames.append(frame)
    if not frames:
        raise BadInput("no run folders given")
    frame = pd.concat(frames, ignore_index=True)
    frame.attrs = {"runs": attrs}
    return frame


def run_names(frame: pd.DataFrame) -> list[str]:
    """The runs in the order they were given."""
    return list(frame.attrs.get("runs") or dict.fromkeys(frame["run"]))


def scored(frame: pd.DataFrame) -> pd.DataFrame:
    """The models with an error to analyse (done, and diverged at chance); BadInput for a run without any."""
    for name in run_names(frame):
        part = frame[frame["run"] == name]
        if not part["err"].notna().any():
            counts = status_counts(part)
            raise BadInput(f"run {name} ({run_path(frame, name)}): no trained models yet "
                           f"({counts['untrained']} untrained, {counts['failed']} failed); "
                           f"train some with `dsd train`")
    return frame[frame["err"].notna()]


def top_error(frame: pd.DataFrame) -> float:
    """The largest error of a done model: figures end there, so that diverged models (at chance)
    do not squash the scale; their share shows as the gap below 1 of an EDF."""
    done = frame["status"] == "done"
    return float(frame.loc[done, "err"].max() if done.any() else frame["err"].max())


def status_counts(part: pd.DataFrame) -> dict:
    counts = part["status"].value_counts()
    return {s: int(counts.get(s, 0)) for s in STATUS_ORDER}


def run_path(frame: pd.DataFrame, name: str) -> str:
    return frame.attrs.get("runs", {}).get(name, {}).get("path", name)


def run_meta(frame: pd.DataFrame, name: str) -> dict:
    return frame.attrs.get("runs", {}).get(name, {}).get("meta", {})


def export(frame: pd.DataFrame, out: Path) -> Path:
    """Write the joined frame as Parquet (list columns kept) or CSV (list columns as JSON arrays)."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise BadInput(f"--out {out}: export writes .parquet or .csv")
    frame = frame.copy()
    frame.attrs = {}
    if suffix == ".parquet":
        import pyarrow as pa

        runfolder.write_parquet(pa.Table.from_pandas(frame, preserve_index=False), out)
    else:
        for col in LIST_COLUMNS:
            if col in frame:
                frame[col] = frame[col].map(_json_list)
        runfolder.write_atomic(out, lambda tmp: frame.to_csv(tmp, index=False))
    return out


def _json_list(value) -> str | None:
    import json

    if value is None or (np.isscalar(value) and pd.isna(value)):
        return None
    return json.dumps(np.asarray(value).tolist())
