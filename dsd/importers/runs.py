"""Jobs -> an ordinary run folder, all or nothing: every job is parsed and counted before anything is
written, and a folder already holding the same import is left as it is.

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
from dsd.runfolder import IMPORT_FILE, IMPORT_SCHEMA
from dsd.design.regimes import Protocol, Regime
from dsd.design.spec import spec_to_row
from dsd.errors import BadInput
from dsd.importers.counts import batched, compare
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
    counts = batched([j.spec for j in jobs])
    comparison = compare(counts, [j.counts for j in jobs], [j.label for j in jobs])
    results = _result_rows(jobs, base.dataset)
    meta = _meta(folder, source, _regime(base, jobs), jobs, len(results), comparison)
    action = _plan(folder, meta, source, force)
    made = ImportedRun(folder, source, len(jobs), len(results), len(jobs) - len(results), comparison)
    if action == "same":
        added = _complete(folder, jobs, results)
        return replace(made, unchanged=not added, completed=added)
    rows = _model_rows(jobs, counts)
    runfolder.write_run(folder, meta, rows, replace=action == "replace")
    runfolder.write_parquet(_import_table(jobs), folder / IMPORT_FILE)
    if results:
        runfolder.write_results(folder, results)
    return made


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
    """'new', 'same' (this import is there already) or 'replace' (force); BadInput otherwise."""
    if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
        return "new"
    if not runfolder.is_run(folder):
        raise BadInput(f"{folder} exists and is not a run folder; choose another --out")
    diff = runfolder.meta_differences(runfolder.read_meta(folder), meta)
    if not diff:
        return "same"
    if force:
        return "replace"
    raise BadInput(f"{folder} holds another run than this import of {source.name} (differs in: "
                   f"{', '.join(diff[:4])}); use --force to replace it and its results, or another --out")


def _complete(folder: Path, jobs: list[Job], results: list[dict]) -> int:
    """Finish an import that was cut short: write the result rows and per-model file still missing."""
    if not (folder / IMPORT_FILE).exists():
        runfolder.write_parquet(_import_table(jobs), folder / IMPORT_FILE)
    have = set(runfolder.read_results(folder)["model_id"].to_pylist())
    missing = [r for r in results if r["model_id"] not in have]
    if missing:
        runfolder.write_results(folder, missing)
    return len(missing)


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


def _import_table(jobs: list[Job]) -> pa.Table:
    return pa.table({"model_id": list(range(len(jobs))), "job": [j.label for j in jobs],
                     **{f"file_{k}": [j.counts.get(k) for j in jobs] for k in ("flops", "params", "acts")}},
                    schema=IMPORT_SCHEMA)
