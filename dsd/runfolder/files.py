"""The run folder's files: their names, formats and atomic writes (layout in dsd.runfolder).

Everything here uses pyarrow directly so that `dsd sample` stays fast to start.
"""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from dsd.design.regimes import Regime, regime_from_dict
from dsd.design.spaces import Space
from dsd.errors import BadInput
from dsd.runfolder.arrow import rows_to_table

RUNS_ROOT = Path("runs")  # where runs go by default (runs/SHORT) and where commands look without RUN...
RUN_FILE = "run.yaml"
MODELS_FILE = "models.parquet"
RESULTS_DIR = "results"
CLAIMS_DIR = "claims"
CHECKPOINTS_DIR = "checkpoints"
WEIGHTS_DIR = "weights"
FITS_FILE = "fits.parquet"
TIMINGS_FILE = "timings.parquet"
IMPORT_FILE = "import.parquet"

MODEL_SCHEMA = pa.schema([
    ("model_id", pa.int64()), ("space", pa.string()), ("seed", pa.int64()), ("key", pa.string()),
    ("stem", pa.string()), ("stem_width", pa.int64()), ("block", pa.string()),
    ("depths", pa.list_(pa.int64())), ("widths", pa.list_(pa.int64())),
    ("bottleneck_ratios", pa.list_(pa.float64())), ("group_widths", pa.list_(pa.int64())),
    ("strides", pa.list_(pa.int64())), ("se_ratio", pa.float64()), ("depth", pa.int64()),
    ("w0", pa.float64()), ("wa", pa.float64()), ("wm", pa.float64()),
    ("resolution", pa.int64()), ("in_channels", pa.int64()), ("num_classes", pa.int64()),
    ("flops", pa.int64()), ("params", pa.int64()), ("acts", pa.int64()),
    # a copy of another run's model (dsd.runfolder.copies), null for a sampled one: the source run
    # folder's path relative to this run's folder (so it survives moving runs/ or changing directory;
    # source_folder resolves it) and the model's id there
    ("source_run", pa.string()), ("source_model_id", pa.int64()),
    # relu | silu (network: activation in the space file); null in files written before it: relu
    ("activation", pa.string()),
    # lr / wd drawn per model by a space's `training:` (dsd train uses them); null: the run's settings
    ("sampled_lr", pa.float64()), ("sampled_wd", pa.float64()),
])

RESULT_SCHEMA = pa.schema([
    ("model_id", pa.int64()), ("status", pa.string()), ("error", pa.float64()),
    ("best_error", pa.float64()), ("train_loss", pa.float64()), ("epochs", pa.int64()),
    ("dataset", pa.string()), ("train_images", pa.int64()), ("eval_images", pa.int64()),
    ("batch_size", pa.int64()), ("lr", pa.float64()), ("wd", pa.float64()), ("warmup_epochs", pa.float64()),
    ("zero_init_residual", pa.bool_()), ("train_seed", pa.int64()),
    ("wall_s", pa.float64()), ("images_per_s", pa.float64()), ("device", pa.string()),
    ("error_curve", pa.list_(pa.float64())), ("loss_curve", pa.list_(pa.float64())),
    ("message", pa.string()), ("versions", pa.string()), ("host", pa.string()), ("time", pa.string()),
    ("deterministic", pa.bool_()),
])

FITS_SCHEMA = pa.schema([
    ("scope", pa.string()), ("model_id", pa.int64()), ("rank", pa.int64()), ("depth", pa.int64()),
    ("error", pa.float64()), ("w0", pa.float64()), ("wa", pa.float64()), ("wm", pa.float64()),
    ("e_fit", pa.float64()), ("linear_w0", pa.float64()), ("linear_wa", pa.float64()),
])

# one row per timed model (`dsd time`, dsd.training.timing): median seconds per batch of `batch` images
TIMING_SCHEMA = pa.schema([
    ("model_id", pa.int64()), ("device", pa.string()), ("batch", pa.int64()), ("repeats", pa.int64()),
    ("warmup", pa.int64()), ("infer_s", pa.float64()), ("train_s", pa.float64()), ("torch", pa.string()),
    ("python", pa.string()), ("host", pa.string()), ("time", pa.string()),
])

# one row per imported model (`dsd import`, dsd.importers): the source's job and its own counts
IMPORT_SCHEMA = pa.schema([("model_id", pa.int64()), ("job", pa.string()), ("file_flops", pa.float64()),
                           ("file_params", pa.float64()), ("file_acts", pa.float64())])

# columns added after the first release: files written before read them as null
RESULT_COLUMNS_ADDED = ("warmup_epochs", "zero_init_residual", "deterministic")
MODEL_COLUMNS_ADDED = ("source_run", "source_model_id", "activation", "sampled_lr", "sampled_wd")

STATUSES = ("done", "failed", "diverged")


def is_run(path: Path) -> bool:
    return (Path(path) / RUN_FILE).is_file() and (Path(path) / MODELS_FILE).is_file()


def find_runs(runs=None) -> list[Path]:
    """The given run folders (each checked), or every run folder under RUNS_ROOT when none is given."""
    if runs:
        return [require_run(r) for r in runs]
    found = sorted(p for p in RUNS_ROOT.glob("*") if is_run(p)) if RUNS_ROOT.is_dir() else []
    if not found:
        raise BadInput(f"no run folders given and none found under {RUNS_ROOT}/ (make one with `dsd sample`)")
    return found


def require_run(path: Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise BadInput(f"{path}: no such run folder")
    if not is_run(path):
        raise BadInput(f"{path}: not a run folder (no {RUN_FILE} and {MODELS_FILE}; make one with `dsd sample`)")
    return path


def read_meta(run: Path) -> dict:
    run = require_run(run)
    try:
        meta = yaml.safe_load((run / RUN_FILE).read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise BadInput(f"{run / RUN_FILE}: not valid YAML ({where}{getattr(e, 'problem', None) or e})") from None
    if not isinstance(meta, dict):
        raise BadInput(f"{run / RUN_FILE}: not a run description")
    return meta


def _parquet(path: Path, read):
    """read(path) (a table or a file's metadata), with a one-line BadInput when it is missing or corrupt."""
    try:
        return read(path)
    except (OSError, pa.ArrowException) as e:
        raise BadInput(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None


def _require_columns(path: Path, names: list[str], schema: pa.Schema) -> None:
    added = RESULT_COLUMNS_ADDED + MODEL_COLUMNS_ADDED
    missing = [n for n in schema.names if n not in names and n not in added]
    if missing:
        raise BadInput(f"{path}: missing columns {', '.join(missing)}")


def read_table(path: Path, schema: pa.Schema | None = None) -> pa.Table:
    """A Parquet file, with a one-line BadInput when it is missing, corrupt or lacks schema's columns."""
    table = _parquet(path, pq.read_table)
    if schema is not None:
        _require_columns(path, table.column_names, schema)
    return table


def read_models(run: Path) -> pa.Table:
    """models.parquet, with the columns added since it was written (MODEL_COLUMNS_ADDED) as nulls, so
    that every reader sees the same columns."""
    return with_added_columns(read_table(require_run(run) / MODELS_FILE, MODEL_SCHEMA), MODEL_SCHEMA)


def with_added_columns(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The table with schema's columns it lacks (those added since it was written) appended as nulls."""
    for field in schema:
        if field.name not in table.column_names:
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table


def source_folder(run: Path, source_run: str) -> Path:
    """The source run folder of a copied model: its source_run (relative to the copy's run folder, or
    absolute) joined to the copy's folder and normalized (runs/xa-reseed + ../xa -> runs/xa)."""
    return Path(os.path.normpath(Path(run) / source_run))


def checkpoint_path(run: Path, model_id: int) -> Path:
    """The training state of an unfinished model after its last epoch (torch.save format)."""
    return Path(run) / CHECKPOINTS_DIR / f"{int(model_id)}.pt"


def weights_path(run: Path, model_id: int) -> Path:
    """A finished model's final weights (a state dict), kept with `dsd train --save-weights`."""
    return Path(run) / WEIGHTS_DIR / f"{int(model_id)}.pt"


def remove_orphans(run: Path, model_id: int) -> None:
    """Temp files of a model's result, weights or checkpoint, left by a writer killed mid-write.

    Only the holder of the model's claim may call this, so that no live writer owns them."""
    for path in (Path(run) / RESULTS_DIR / f"{int(model_id)}.parquet", weights_path(run, model_id),
                 checkpoint_path(run, model_id)):
        for orphan in path.parent.glob(f".{path.name}.*.tmp"):
            orphan.unlink(missing_ok=True)


def _umask() -> int:
    """The process umask: from /proc on Linux, else by setting and restoring it (briefly 0)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()  # read once, at import


SETTING_COLUMNS = ("dataset", "epochs", "batch_size", "lr", "wd", "warmup_epochs", "zero_init_residual",
                   "train_images", "eval_images")


def setting_value(v):
    """A setting as compared: a missing value reads as None from Parquet, NaN from a DataFrame."""
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def trained_settings(results: list[dict]) -> dict[str, list]:
    """The training settings of the finished models among results: {column: distinct values}."""
    done = [r for r in results if r.get("status") == "done"]
    return {c: sorted({setting_value(r.get(c)) for r in done}, key=str) for c in SETTING_COLUMNS}


def mixed_settings(results: list[dict], sampled=()) -> dict[str, list]:
    """The training settings on which a run's finished models differ: {column: distinct values}.

    Models trained under other settings (another data set, more epochs, ...) are not comparable, and
    the statistics would pool them; callers warn. `sampled`: the settings the run's space draws per
    model (lr, wd): they differ by design."""
    return {c: v for c, v in trained_settings(results).items() if len(v) > 1 and c not in sampled}


def sampled_settings(models) -> list[str]:
    """The training settings a run's models carry their own values of (a pyarrow table or DataFrame)."""
    names = models.column_names if hasattr(models, "column_names") else list(models.columns)
    return [k for k in ("lr", "wd") if f"sampled_{k}" in names and
            (models[f"sampled_{k}"].null_count < len(models) if hasattr(models, "column_names")
             else models[f"sampled_{k}"].notna().any())]


def write_atomic(path: Path, write) -> None:
    """Call write(tmp_path), then rename onto path: readers never see a partial file.

    The file gets the usual permissions (0666 less the umask), not mkstemp's private 0600, so that
    other users and hosts sharing the run folder can read it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~UMASK)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_parquet(table: pa.Table, path: Path) -> None:
    write_atomic(path, lambda tmp: pq.write_table(table, tmp))


def describe_run(space: Space, regime: Regime, seed: int, n: int) -> dict:
    """What run.yaml records: everything that determines the models, plus n and the version."""
    from dsd.version import __version__

    return {"name": space.short, "space": space.name, "space_file": space.source,
            "regime": regime.as_dict(), "seed": seed, "n": n, "dsd_version": __version__}


def read_regime(run: Path) -> Regime:
    """The regime a run was sampled under (its input and training protocol)."""
    meta = read_meta(run)
    if not isinstance(meta.get("regime"), dict):
        raise BadInput(f"{run}/{RUN_FILE}: no regime (sample the run with `dsd sample`)")
    return regime_from_dict(meta["regime"])


def _comparable(meta: dict) -> dict:
    """run.yaml content that determines the models (everything but n and the version), YAML-normalized;
    the regime is read and written back, so that a field added since (with its default) is no difference."""
    meta = yaml.safe_load(yaml.safe_dump(meta))
    if isinstance(meta.get("regime"), dict):
        try:
            meta["regime"] = yaml.safe_load(yaml.safe_dump(regime_from_dict(meta["regime"]).as_dict()))
        except BadInput:
            pass  # not a regime dsd can read: compared as written
    return {k: v for k, v in meta.items() if k not in ("n", "dsd_version")}


def _differences(old, new, prefix: str = "") -> list[str]:
    """Dotted keys on which two run descriptions differ (regime.flops rather than regime)."""
    if old == new:
        return []
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [prefix]
    found = []
    for k in sorted(set(old) | set(new), key=str):
        key = f"{prefix}.{k}" if prefix else str(k)
        found += _differences(old.get(k), new.get(k), key) if (k in old) == (k in new) else [key]
    return found


def meta_differences(old: dict, new: dict) -> list[str]:
    """Dotted keys on which two run descriptions differ in what determines the models (not n, not the
    version): empty when they describe the same run."""
    return _differences(_comparable(old), _comparable(new))


def check_run_folder(folder: Path, meta: dict, force: bool) -> str:
    """Decide what sampling into folder means: 'new', 'same' (nothing to do) or 'extend' (more models).

    Refuses, with BadInput and nothing touched, a folder that is not a run, a run made with other
    arguments, or a run with more models than asked for, unless force: then it answers 'replace'
    (write_run deletes the old run and its results). Same arguments keep their results, force or not.
    """
    folder = Path(folder)
    if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
        return "new"
    if not is_run(folder):
        raise BadInput(f"{folder} exists and is not a run folder; choose another --out")
    old = read_meta(folder)
    old_c, new_c = _comparable(old), _comparable(meta)
    if force and (old_c != new_c or meta["n"] < old.get("n", 0)):
        return "replace"
    if old_c != new_c:
        diff = _differences(old_c, new_c)
        raise BadInput(f"{folder} was sampled with other arguments (differs in: {', '.join(diff)}); "
                       f"use --force to replace it and its results, or another --out")
    if meta["n"] == old.get("n"):
        return "same"
    if meta["n"] < old.get("n", 0):
        raise BadInput(f"{folder} already has {old['n']} models; sampling {meta['n']} would drop some "
                       f"(use --force to replace the run)")
    return "extend"


def read_timings(run: Path) -> pa.Table:
    """RUN/timings.parquet (an empty table with TIMING_SCHEMA when the run was never timed)."""
    path = require_run(run) / TIMINGS_FILE
    if not path.exists():
        return TIMING_SCHEMA.empty_table()
    return read_table(path, TIMING_SCHEMA).select(TIMING_SCHEMA.names)


def write_timings(run: Path, rows: list[dict]) -> Path:
    """Merge timing rows into RUN/timings.parquet atomically: a model timed again replaces its old row,
    the others are kept; rows in model order."""
    import pyarrow.compute as pc

    new = rows_to_table(rows, TIMING_SCHEMA)
    old = read_timings(run)
    kept = old.filter(pc.invert(pc.is_in(old["model_id"], value_set=new["model_id"])))
    table = pa.concat_tables([kept, new]).sort_by("model_id")
    path = Path(run) / TIMINGS_FILE
    write_parquet(table, path)
    return path


def write_fits(run: Path, fits) -> Path:
    """RUN/fits.parquet from a DataFrame with FITS_SCHEMA's columns, replaced as a whole by each
    `dsd fit-linear`."""
    path = Path(run) / FITS_FILE
    write_parquet(pa.Table.from_pandas(fits, schema=FITS_SCHEMA, preserve_index=False), path)
    return path


def write_run(folder: Path, meta: dict, rows: list[dict], replace: bool = False) -> None:
    """Write models.parquet, then run.yaml, each atomically; `replace` first deletes the old run. A place
    the checks before could not foresee (e.g. under /proc) is BadInput naming the folder."""
    import shutil

    folder = Path(folder)
    table = rows_to_table(rows, MODEL_SCHEMA)
    text = yaml.safe_dump(meta, sort_keys=False)
    try:
        if replace and is_run(folder):
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_parquet(table, folder / MODELS_FILE)
        write_atomic(folder / RUN_FILE, lambda tmp: Path(tmp).write_text(text))
    except OSError as e:
        raise BadInput(f"--out {folder}: cannot write there ({e.strerror or e})") from None
