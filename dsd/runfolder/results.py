"""A run's results: one file per model while trainers write, one compacted file once gathered.

    RUN/results/ID.parquet   one row, written atomically by the process that trained model ID
    RUN/results.parquet      many rows (RESULT_SCHEMA, by model id), written by `compact` and imports

A model's result is its own file when there is one, else its row in the compacted file: a model trained
again (`dsd train --retry-failed`) after compaction writes its own file, which then stands. Compaction
keeps every guarantee of the per-model files:
- it writes the compacted file (temp file + rename) before it deletes any file it folded in, so a kill
  at any moment leaves each result in one place or both, and both hold the same row;
- it deletes a model's file only when no trainer can write it again: a "done" row is never retrained,
  and a failed or diverged model's file goes only while compaction holds the model's claim;
- one compaction at a time per run (the claim named "compact"), so two never drop each other's rows;
- readers look at the per-model files first and the compacted file after: a file that vanished in
  between was folded into a compacted file written before it vanished.
"""
from __future__ import annotations

import functools
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dsd.errors import BadInput
from dsd.runfolder.arrow import rows_to_table
from dsd.runfolder.claims import claim, live_claims, release
from dsd.runfolder.files import (
    RESULT_SCHEMA, RESULTS_DIR, STATUSES, _parquet, _require_columns, require_run, with_added_columns,
    write_parquet,
)

COMPACTED_FILE = "results.parquet"
COMPACT_LOCK = "compact"       # the claim a compaction holds
RETRAINABLE = ("failed", "diverged")  # what `dsd train --retry-failed` trains again


def result_path(run: Path, model_id: int) -> Path:
    return Path(run) / RESULTS_DIR / f"{int(model_id)}.parquet"


def compacted_path(run: Path) -> Path:
    return Path(run) / COMPACTED_FILE


def write_result(run: Path, row: dict) -> Path:
    """Write one result row atomically to results/ID.parquet."""
    table = rows_to_table([row], RESULT_SCHEMA)
    path = result_path(run, row["model_id"])
    write_parquet(table, path)
    return path


def _model_files(run: Path) -> dict[int, Path]:
    """{model id: its result file}; only names result_path makes (7.parquet, not 007.parquet)."""
    folder = Path(run) / RESULTS_DIR
    paths = folder.glob("*.parquet") if folder.is_dir() else ()
    return {int(p.stem): p for p in paths if p.stem.isdigit() and p.stem == str(int(p.stem))}


def _own_row(path: Path) -> pa.Table | None:
    """A model's own result file as a one-row table with every column; None when it is gone (folded
    into the compacted file meanwhile); BadInput naming it when it is corrupt or malformed."""
    try:
        table = _parquet(path, pq.read_table)
    except BadInput:
        if not path.exists():
            return None
        raise
    if table.num_rows != 1:
        raise BadInput(f"{path}: a result file holds one row, this one {table.num_rows}")
    return _with_added_columns(table, path)


def _read_files(paths: list[Path], columns: list[str] | None = None) -> pa.Table:
    """The rows of these per-model files (see _own_row). One dataset read is about twice as fast as a
    loop; when its rows do not look like one valid row per file, the loop finds the file to blame."""
    import pyarrow.dataset as ds

    schema = RESULT_SCHEMA if columns is None else pa.schema([RESULT_SCHEMA.field(c) for c in columns])
    if not paths:
        return schema.empty_table()
    try:
        table = ds.dataset([str(p) for p in paths], format="parquet", schema=RESULT_SCHEMA).to_table()
        if _one_valid_row_each(table, paths):
            return table.select(schema.names)
    except (OSError, pa.ArrowException):
        pass
    tables = [t for t in map(_own_row, paths) if t is not None]
    return pa.concat_tables(tables).select(schema.names) if tables else schema.empty_table()


def _one_valid_row_each(table: pa.Table, paths: list[Path]) -> bool:
    """Whether a dataset read gave each file's own model id once, with a known status."""
    ids = table["model_id"].to_pylist()
    return ids == [int(p.stem) for p in paths] and set(table["status"].to_pylist()) <= set(STATUSES)


def _with_added_columns(table: pa.Table, path: Path) -> pa.Table:
    _require_columns(path, table.column_names, RESULT_SCHEMA)
    return with_added_columns(table, RESULT_SCHEMA).select(RESULT_SCHEMA.names).cast(RESULT_SCHEMA)


def read_compacted(run: Path, columns: list[str] | None = None) -> pa.Table:
    """The compacted results (an empty table when the run has none)."""
    path = compacted_path(run)
    try:
        table = _parquet(path, lambda p: pq.read_table(p, columns=columns))
    except BadInput:
        if not path.exists():
            return (RESULT_SCHEMA.empty_table() if columns is None
                    else pa.schema([RESULT_SCHEMA.field(c) for c in columns]).empty_table())
        raise
    return table if columns is not None else _with_added_columns(table, path)


def _merge(compacted: pa.Table, files: pa.Table) -> pa.Table:
    """The compacted rows of models without a file of their own, then the files' rows, by model id."""
    import pyarrow.compute as pc  # here, not at the top: 30 ms of every command's start-up

    keep = pc.invert(pc.is_in(compacted["model_id"], value_set=files["model_id"]))
    return pa.concat_tables([compacted.filter(keep), files]).sort_by("model_id")


def read_results(run: Path, columns: list[str] | None = None) -> pa.Table:
    """Every result row of a run, one per model, by model id (empty with RESULT_SCHEMA when none);
    only `columns` (model_id among them) when given, which is faster for many models."""
    files = _read_files(sorted(_model_files(require_run(run)).values()), columns)  # files first: see the docstring
    return _merge(read_compacted(run, columns), files)


def result_of(run: Path, model_id: int) -> dict | None:
    """One model's result row, or None when it has none yet."""
    own = _own_row(result_path(run, model_id))
    if own is not None:
        return own.to_pylist()[0]
    import pyarrow.compute as pc

    compacted = read_compacted(run)
    rows = compacted.filter(pc.equal(compacted["model_id"], int(model_id)))
    return rows.to_pylist()[0] if rows.num_rows else None


def result_stamp(run: Path, model_id: int) -> tuple[str, str] | None:
    """(status, time written) of one model's result, or None when it has none: whether it needs
    training, and whether someone wrote it since a plan saw it. A corrupt file of its own is BadInput.
    The compacted file's stamps are read once per version of it (the feed asks model after model)."""
    path = result_path(run, model_id)
    try:
        own = _own_row(path)
    except BadInput as e:
        raise BadInput(f"{e}; delete it to train model {model_id} again") from None
    if own is not None:
        return own["status"][0].as_py(), own["time"][0].as_py()
    try:
        signature = _signature(compacted_path(run))
    except FileNotFoundError:
        return None
    return _compacted_stamps(str(compacted_path(run)), signature).get(int(model_id))


@functools.lru_cache(maxsize=8)
def _compacted_stamps(path: str, signature) -> dict[int, tuple[str, str]]:
    table = pq.read_table(path, columns=["model_id", "status", "time"])
    return dict(zip(table["model_id"].to_pylist(), zip(table["status"].to_pylist(), table["time"].to_pylist())))


def result_stamps(run: Path) -> dict[int, tuple[str, str]]:
    """{model id: (status, time)} of every model with a result (result_stamp of each, in one pass)."""
    stamps = {}
    for model_id in sorted(_model_files(run)):  # in id order: a corrupt file is named the same every time
        stamp = result_stamp(run, model_id)
        if stamp is not None:
            stamps[model_id] = stamp
    compacted = read_compacted(run, ["model_id", "status", "time"])
    for model_id, status, time in zip(*(compacted[c].to_pylist() for c in ("model_id", "status", "time"))):
        stamps.setdefault(model_id, (status, time))
    return stamps


def write_results(run: Path, rows: list[dict] | pa.Table) -> Path:
    """Add many result rows at once to the compacted file (imports; faster than a file each). Models
    that already have a result are refused: nothing trained is rewritten."""
    table = rows if isinstance(rows, pa.Table) else rows_to_table(rows, RESULT_SCHEMA)
    table = table.select(RESULT_SCHEMA.names).cast(RESULT_SCHEMA)
    if not claim(run, COMPACT_LOCK):
        raise BadInput(f"{run}: its results are being compacted; try again in a moment")
    try:
        old = read_results(run)
        taken = sorted(set(old["model_id"].to_pylist()) & set(table["model_id"].to_pylist()))
        if taken or len(set(table["model_id"].to_pylist())) != table.num_rows:
            raise BadInput(f"{run}: models {taken[:5] or 'in the new rows'} already have results; nothing written")
        merged = pa.concat_tables([read_compacted(run), table]).sort_by("model_id")
        write_parquet(merged, compacted_path(run))
    finally:
        release(run, COMPACT_LOCK)
    return compacted_path(run)


def _signature(path: Path):
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size


def _delete_if_unchanged(path: Path, signature) -> bool:
    try:
        if _signature(path) != signature:
            return False
        path.unlink()
        return True
    except FileNotFoundError:
        return False


def compact(run: Path) -> dict:
    """Fold the per-model result files into RUN/results.parquet (see the module docstring); safe while
    trainers write. Returns {"folded": files folded in, "kept": files left (models being trained), "rows":
    rows in the compacted file, "busy": True when another compaction held the run}."""
    run = require_run(run)
    if not claim(run, COMPACT_LOCK):
        return {"folded": 0, "kept": len(_model_files(run)), "rows": None, "busy": True}
    try:
        for orphan in Path(run).glob(f".{COMPACTED_FILE}.*.tmp"):  # left by a compaction killed mid-write
            orphan.unlink(missing_ok=True)
        training = live_claims(run)
        paths = _model_files(run)
        signatures = {}
        for model_id, path in paths.items():
            try:
                signatures[model_id] = _signature(path)
            except FileNotFoundError:
                pass
        files = _read_checked([paths[i] for i in sorted(signatures)])
        if not files.num_rows:
            return {"folded": 0, "kept": 0, "rows": read_compacted(run, ["model_id"]).num_rows, "busy": False}
        merged = _merge(read_compacted(run), files)
        write_parquet(merged, compacted_path(run))
        folded = 0
        for model_id, status in zip(files["model_id"].to_pylist(), files["status"].to_pylist()):
            folded += _fold(run, model_id, status, signatures[model_id], training)
        return {"folded": folded, "kept": len(paths) - folded, "rows": merged.num_rows, "busy": False}
    finally:
        release(run, COMPACT_LOCK)


def _read_checked(paths: list[Path]) -> pa.Table:
    """The files' rows, each file checked on its own (one valid row, every column) before it is folded
    and deleted; a file gone meanwhile is left out."""
    tables = [t for t in map(_own_row, paths) if t is not None]
    return pa.concat_tables(tables) if tables else RESULT_SCHEMA.empty_table()


def _fold(run: Path, model_id: int, status: str, signature, training: set[int]) -> bool:
    """Delete a model's file, now in the compacted file, when no trainer can write it again."""
    if model_id in training:
        return False
    if status not in RETRAINABLE:
        return _delete_if_unchanged(result_path(run, model_id), signature)
    if not claim(run, model_id):
        return False
    try:
        return _delete_if_unchanged(result_path(run, model_id), signature)
    finally:
        release(run, model_id)
