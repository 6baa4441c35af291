"""Jobs -> an ordinary run folder, all or nothing: every job is parsed and counted, and every table made
(a value that does not fit its column is BadInput naming the job), before anything is written; a folder
already holding the same import is left as it is.

    RUN/run.yaml          name, space, a regime analysis accepts, n, and `import:` (format, source file,
                          its sha256, counts, and the summary of dsd's complexity against the source's)
    RUN/models.parquet    one row per job, with dsd's own flops / params / acts
    RUN/results.parquet   one row per finished job (dsd.runfolder.write_results)
    RUN/import.parquet    per model: the source's job label and its own flops / params / acts
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa

from dsd import runfolder
from dsd.runfolder import CLAIMS_DIR, IMPORT_FILE, IMPORT_SCHEMA, MODEL_SCHEMA, RESULT_SCHEMA
from dsd.design.regimes import Protocol, Regime
from dsd.design.spec import spec_to_row
from dsd.errors import BadInput
from dsd.runfolder.arrow import rows_to_table, to_array
from dsd.importers.counts import checked, compare
from dsd.importers.jobs import Job

SETTINGS = ("lr", "wd", "epochs", "batch_size", "warmup_epochs", "zero_init_residual")


@dataclass(frozen=True)
class Source:
    """What was read: its format (nds | pycls), file or folder name, the sha256 of the bytes read (same
    digest: same import) and the run folder it goes to without --out."""

    format: str
    name: str
    digest: str
    default_out: Path


@dataclass(frozen=True)
class ImportedRun:
    """What an import did: the run folder, its models and results, the complexity comparison
    (dsd.importers.counts.compare), and whether the folder already held this import."""

    run: Path
    source: Source
    n: int
    results: int
    unfinished: int
    comparison: dict
    unchanged: bool = False
    completed: int = 0  # results added to a folder whose earlier import of this source was cut short
    seconds: float = 0.0  # reading, checking and writing


def default_out(prefix: str, name: str) -> Path:
    """runs/PREFIX-NAME, NAME lower-cased with anything but letters, digits, '.', '_' and '-' as '-'."""
    return runfolder.RUNS_ROOT / f"{prefix}-{re.sub(r'[^a-z0-9._-]+', '-', name.lower()).strip('-')}"


def import_jobs(source: Source, base: Regime, jobs: list[Job], out: Path | None, force: bool) -> ImportedRun:
    """Write the jobs as a run folder (see the module docstring); a folder holding another run or another
    import is refused unless force, which replaces it and its results."""
    if not jobs:
        raise BadInput(f"{source.name}: no jobs to import")
    folder = Path(out) if out is not None else source.default_out
    counts, too_large = checked([j.spec for j in jobs])
    if too_large:
        i, why = next(iter(too_large.items()))
        raise BadInput(f"{source.name}: {jobs[i].label}: its network is too large for dsd's 64-bit flops, params "
                       f"and acts ({why})")
    comparison = compare(counts, [j.counts for j in jobs], [j.label for j in jobs])
    results = _result_rows(jobs, base.dataset)
    meta = _meta(folder, source, _regime(base, jobs), jobs, len(results), comparison)
    action = _plan(folder, meta, source, force)
    # Every table is made before anything is written: a value that does not fit its column stops here.
    rows = _model_rows(jobs, counts)
    _table(source, rows, MODEL_SCHEMA, jobs, "models.parquet")
    imported = _table(source, _import_rows(jobs), IMPORT_SCHEMA, jobs, IMPORT_FILE)
    finished = [j for j in jobs if j.outcome is not None]
    result_table = _table(source, [{n: r.get(n) for n in RESULT_SCHEMA.names} for r in results], RESULT_SCHEMA,
                          finished, "results.parquet")
    made = ImportedRun(folder, source, len(jobs), len(results), len(jobs) - len(results), comparison)
    if action == "same":
        added = _complete(folder, imported, result_table)
        return replace(made, unchanged=not added, completed=added)
    runfolder.write_run(folder, meta, rows, replace=action == "replace")
    runfolder.write_parquet(imported, folder / IMPORT_FILE)
    _write_results(folder, result_table)
    return made


def _table(source: Source, rows: list[dict], schema: pa.Schema, jobs: list[Job], file: str) -> pa.Table:
    """The rows (one per job) as a table of the schema; BadInput naming the file, the job and the column
    of the first value that does not fit (a whole number past 64 bits, say)."""
    try:
        return rows_to_table(rows, schema)
    except (pa.ArrowException, OverflowError) as e:
        problem = e
    for row, job in zip(rows, jobs):
        for field in schema:
            try:
                to_array([row.get(field.name)], field.type)
            except (pa.ArrowException, OverflowError) as e:
                raise BadInput(f"{source.name}: {job.label}: its {field.name} {str(row.get(field.name))[:40]} "
                               f"does not fit {file}'s {field.type} column ({e})") from None
    raise BadInput(f"{source.name}: cannot be written as {file} ({problem})")


def _write_results(folder: Path, table: pa.Table) -> None:
    """Add the result rows; write_results takes the run's "compact" claim, so a claims folder it had to make
    for that (nothing trains an import as it is written) goes again once empty."""
    if not table.num_rows:
        return
    claims = folder / CLAIMS_DIR
    made_here = not claims.exists()
    runfolder.write_results(folder, table)
    if made_here:
        try:
            claims.rmdir()
        except OSError:
            pass  # something claimed a model meanwhile: its folder stays


def _most_common(jobs: list[Job], key: str, default):
    values = [j.settings.get(key) for j in jobs if j.settings.get(key) is not None]
    return Counter(values).most_common(1)[0][0] if values else default


def _regime(base: Regime, jobs: list[Job]) -> Regime:
    """The base regime with the jobs' usual training settings as its protocol, no sampling band, and no
    stem or strides of its own (every model keeps the ones it was trained with)."""
    protocol = Protocol(**{k: _most_common(jobs, k, getattr(base.train, k)) for k in SETTINGS})
    unbounded = (0, math.inf)
    return replace(base, stem=None, strides=None, flops=unbounded, params=unbounded, acts=unbounded, train=protocol)


def _meta(folder: Path, source: Source, regime: Regime, jobs: list[Job], results: int, comparison: dict) -> dict:
    from dsd.version import __version__

    groups = Counter(j.group for j in jobs)
    summary = {"format": source.format, "source": source.name, "sha256": source.digest, "jobs": len(jobs),
               "results": results, "unfinished": len(jobs) - results,
               **({"groups": dict(groups)} if len(groups) > 1 else {}), "complexity": comparison,
               "file": IMPORT_FILE}
    return {"name": folder.name, "space": f"{source.format}:{source.name}", "regime": regime.as_dict(),
            "seed": 0, "n": len(jobs), "import": summary, "dsd_version": __version__}


def _plan(folder: Path, meta: dict, source: Source, force: bool) -> str:
    """'new', 'same' (this import is there already) or 'replace' (force); BadInput otherwise.

    runfolder.check_run_folder decides, as for a sampled run: it compares run.yaml but for n, and n is the
    import's job count, which the import block holds too. So 'extend' (the same run with more models)
    only answers a run.yaml edited by hand, and is taken as another run; the refusal is reworded, for an
    import is not sampled with arguments."""
    try:
        action = runfolder.check_run_folder(folder, meta, force)
    except BadInput:
        if not runfolder.is_run(folder):
            raise
        action = "extend"
    if action != "extend":
        return action
    if force:
        return "replace"
    diff = runfolder.meta_differences(runfolder.read_meta(folder), meta) or ["n"]
    raise BadInput(f"{folder} holds another run than this import of {source.name} (differs in: "
                   f"{', '.join(diff[:4])}); use --force to replace it and its results, or another --out")


def _complete(folder: Path, imported: pa.Table, results: pa.Table) -> int:
    """Finish an import that was cut short: write the result rows and per-model file still missing."""
    if not (folder / IMPORT_FILE).exists():
        runfolder.write_parquet(imported, folder / IMPORT_FILE)
    have = set(runfolder.read_results(folder)["model_id"].to_pylist())
    missing = results.filter(pa.array([i not in have for i in results["model_id"].to_pylist()], pa.bool_()))
    _write_results(folder, missing)
    return missing.num_rows


def _model_rows(jobs: list[Job], counts: dict) -> list[dict]:
    """models.parquet rows; lr and wd become the models' own (sampled_lr / sampled_wd) where the jobs
    differ in them, so that analysis reads them as design choices, not as mixed settings."""
    own = [k for k in ("lr", "wd") if len({j.settings.get(k) for j in jobs}) > 1]
    rows = []
    for i, job in enumerate(jobs):
        row = spec_to_row(job.spec, i, job.group, 0, {k: int(counts[k][i]) for k in counts})
        rows.append({**row, **{f"sampled_{k}": job.settings.get(k) for k in own}})
    return rows


def _result_rows(jobs: list[Job], dataset: str) -> list[dict]:
    return [{"model_id": i, "dataset": dataset, **{k: j.settings.get(k) for k in (*SETTINGS, "train_seed")},
             **j.outcome} for i, j in enumerate(jobs) if j.outcome is not None]


def _import_rows(jobs: list[Job]) -> list[dict]:
    return [{"model_id": i, "job": j.label, **{f"file_{k}": j.counts.get(k) for k in ("flops", "params", "acts")}}
            for i, j in enumerate(jobs)]
