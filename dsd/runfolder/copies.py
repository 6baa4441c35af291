"""Copy runs: chosen models of a run, each repeated, in a new run folder, to be trained again.

A copy is its original's models.parquet row with a new model_id and source_run / source_model_id
naming the original; its run.yaml is the source's with its own name and n and a `copies` entry
(source, models, repeats and the reason it was made). `dsd reseed` makes one to measure the noise
floor (dsd.analysis.noise); a run of the best models trained longer is another.

The training seed of a model is made from `dsd train --seed` and its model_id, so a copy numbered
like its original would train exactly as it did: copies are numbered from the source's largest id
+ 1 upward. Two copy runs of one source share their numbering; train them with different --seed
before pooling them. Nothing here deletes or replaces a run: an existing --out is refused unless it
holds the very same copies, which are then kept with their results.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsd.errors import BadInput
from dsd.runfolder.files import (
    is_run, meta_differences, read_meta, read_models, require_run, source_folder, trained_settings,
    write_run,
)
from dsd.runfolder.results import read_results


@dataclass(frozen=True)
class CopyRun:
    """A copy run: where it is, what it copies, and whether it was already there (nothing written)."""

    run: Path
    source: Path
    model_ids: tuple[int, ...]  # the source models copied, in order
    repeats: int
    copy_ids: tuple[int, ...]   # the copies' model ids, repeats of one model side by side
    unchanged: bool = False


def copy_models(source: Path, model_ids: list[int], repeats: int, out: Path, reason: dict | None = None) -> CopyRun:
    """A new run folder `out` holding `repeats` copies of each of the source's `model_ids`.

    reason: more keys for run.yaml's `copies` entry (what made the copies, with which arguments).
    BadInput, with nothing written, for a source that is not a run, unknown or repeated ids, repeats
    below 1, or an --out that exists and holds anything but these very copies."""
    source, out, model_ids = require_run(source), Path(out), [int(i) for i in model_ids]
    _check_count("--repeats", repeats)
    meta = copy_meta(source, out, len(model_ids), repeats, reason or {})
    rows = _copy_rows(source, read_models(source).to_pylist(), model_ids, repeats, meta["copies"]["source"])
    found = existing_copies(out, meta)
    if found is not None:
        if (found.model_ids, found.copy_ids) != (tuple(model_ids), tuple(r["model_id"] for r in rows)):
            raise BadInput(f"{out} already holds copies of other models of {source} (or numbered otherwise: was "
                           f"{source} extended since?); choose another --out")
        return found
    _check_new_folder(out, source, meta)
    write_run(out, meta, rows)
    return CopyRun(out, source, tuple(model_ids), repeats, tuple(r["model_id"] for r in rows))


def copy_meta(source: Path, out: Path, models: int, repeats: int, reason: dict) -> dict:
    """run.yaml of a copy run: the source's, named after out, with n and the `copies` entry."""
    rel = os.path.relpath(Path(source).resolve(), Path(out).resolve())
    entry = {"source": rel, "models": models, "repeats": repeats}
    clash = sorted(set(entry) & set(reason))
    if clash:
        raise ValueError(f"copy_meta: reason may not set {', '.join(clash)}")
    return {**read_meta(source), "name": Path(out).resolve().name, "n": models * repeats,
            "copies": {**entry, **reason}}


def existing_copies(out: Path, meta: dict) -> CopyRun | None:
    """The copy run already at out when its run.yaml is `meta` (but for the version), else None."""
    out = Path(out)
    if not is_run(out):
        return None
    old = read_meta(out)
    if meta_differences(old, meta) or old.get("n") != meta["n"]:
        return None
    rows = read_models(out).to_pylist()
    sources = list(dict.fromkeys(r["source_model_id"] for r in rows))
    return CopyRun(out, source_folder(out, meta["copies"]["source"]), tuple(sources),
                   meta["copies"]["repeats"], tuple(r["model_id"] for r in rows), unchanged=True)


def _copy_rows(source: Path, models: list[dict], model_ids: list[int], repeats: int, rel: str) -> list[dict]:
    """Each chosen row `repeats` times, numbered from the source's largest id + 1, with its provenance."""
    if not model_ids:
        raise BadInput("no models to copy")
    repeated = sorted({i for i in model_ids if model_ids.count(i) > 1})
    if repeated:
        raise BadInput(f"model ids given twice: {', '.join(map(str, repeated))}")
    by_id = {r["model_id"]: r for r in models}
    unknown = [i for i in model_ids if i not in by_id]
    if unknown:
        raise BadInput(f"{source}: no model with id {', '.join(map(str, unknown))}")
    first = max(by_id) + 1
    return [{**by_id[i], "model_id": first + k * repeats + j, "source_run": rel, "source_model_id": i}
            for k, i in enumerate(model_ids) for j in range(repeats)]


def _check_new_folder(out: Path, source: Path, meta: dict) -> None:
    """BadInput unless out is missing or an empty folder, outside the source, where we can write."""
    if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
        raise BadInput(f"--out {out}: inside the source run {source}; choose another --out")
    if is_run(out):
        diff = meta_differences(read_meta(out), meta) or ["n"]
        raise BadInput(f"{out} holds another run (differs in: {', '.join(diff)}); choose another --out "
                       f"(nothing is replaced)")
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise BadInput(f"{out} exists and is not a run folder; choose another --out")
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise BadInput(f"--out {out}: cannot write into {existing}")


def _check_count(option: str, value: int) -> None:
    if value < 1:
        raise BadInput(f"{option} must be >= 1, got {value}")


def done_models(run: Path) -> list[int]:
    """The ids of a run's models whose result is "done", in id order."""
    ids = set(read_models(run).column("model_id").to_pylist())
    results = read_results(run).to_pylist()
    return sorted({r["model_id"] for r in results if r["status"] == "done"} & ids)


def beside(source: Path, suffix: str) -> Path:
    """The default folder of a copy run: beside the source, named SOURCE-SUFFIX (runs/xa -> runs/xa-reseed)."""
    source = Path(source)
    base = source if source.name not in ("", ".", "..") else source.resolve()
    return base.with_name(f"{base.name}-{suffix}")


def best_models(run: Path, top: int) -> list[int]:
    """The ids of a run's `top` done models by final error (ties: lower id first), best first; diverged
    and failed models rank below every done one, so they are never promoted."""
    ids = set(read_models(run).column("model_id").to_pylist())
    done = sorted((r["error"], r["model_id"]) for r in read_results(run).to_pylist()
                  if r["status"] == "done" and r["model_id"] in ids)
    if len(done) < top:
        raise BadInput(f"{run} has {len(done)} trained model{'s' * (len(done) != 1)}; --top {top} asks for more")
    return [model_id for _, model_id in done[:top]]


def promote(source: Path, top: int, repeats: int = 1, out: Path | None = None) -> CopyRun:
    """Copies of the source's `top` best trained models, `repeats` each (default folder SOURCE-topK), to
    be trained with the long schedule (`dsd train NEW_RUN --epochs 100`). Like reseed, a promote run
    made with the same arguments is kept as it is."""
    source = require_run(source)
    _check_count("--top", top)
    _check_count("--repeats", repeats)
    out = Path(out) if out is not None else beside(source, f"top{top}")
    reason = {"made_by": "dsd promote", "top": top}
    found = existing_copies(out, copy_meta(source, out, top, repeats, reason))
    return found if found is not None else copy_models(source, best_models(source, top), repeats, out, reason)


def reseed(source: Path, n: int, repeats: int, seed: int = 0, out: Path | None = None) -> CopyRun:
    """Copies of n done models of source, picked at random (seed), `repeats` each: trained with the
    source's settings, they differ from their originals by the training seed only (dsd.analysis.noise).

    A reseed run made with the same arguments is kept as it is, even when a fresh pick would now
    differ (more models trained since)."""
    source = require_run(source)
    if seed < 0:
        raise BadInput(f"--seed must be >= 0, got {seed}")
    _check_count("--n", n)
    _check_count("--repeats", repeats)
    out = Path(out) if out is not None else beside(source, "reseed")
    reason = {"made_by": "dsd reseed", "seed": seed}
    meta = copy_meta(source, out, n, repeats, reason)
    found = existing_copies(out, meta)
    if found is not None:
        return found
    done = done_models(source)
    if len(done) < n:
        raise BadInput(f"{source} has {len(done)} trained model{'s' * (len(done) != 1)}; --n {n} asks for more")
    _check_new_folder(out, source, meta)
    picked = sorted(int(i) for i in np.random.default_rng(seed).choice(done, size=n, replace=False))
    return copy_models(source, picked, repeats, out, reason)


def source_settings(copies: CopyRun) -> dict[str, list]:
    """The training settings of the copied models' results ({column: distinct values}): the copies must
    be trained the same way for their errors to differ by the seed only."""
    wanted = set(copies.model_ids)
    return trained_settings([r for r in read_results(copies.source).to_pylist() if r["model_id"] in wanted])
