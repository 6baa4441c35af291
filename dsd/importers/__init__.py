"""Populations trained elsewhere, as ordinary run folders: every analysis then runs on them.

    import_nds(FILE.json)     the NDS data (facebookresearch/nds): ResNet, ResNeXt and Vanilla spaces
    import_pycls(SWEEP_DIR)   a pycls sweep (cfgs/*.yaml, logs/*/stdout.log, sweep.json)

Each reader (nds.py, pycls.py with pycls_logs.py) turns its source into format-free Jobs (jobs.py);
runs.py counts every model with dsd's own complexity (counts.py, batched, with the networks too large
for 64-bit counts refused), compares it with the source's numbers and writes the run folder, all or
nothing. docs/import.md describes the formats and the mapping onto dsd's networks.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from dsd.importers.nds import read_nds
from dsd.importers.pycls import read_pycls
from dsd.importers.runs import ImportedRun, Source, import_jobs

__all__ = ["ImportedRun", "Source", "import_nds", "import_pycls"]


def import_nds(path: Path, *, out: Path | None = None, force: bool = False, regime: str | None = None) -> ImportedRun:
    """Import an NDS file into a run folder (default runs/nds-NAME); regime: cifar | imagenet (default:
    imagenet when the file's name ends in _in, as the NDS ImageNet files do, else cifar)."""
    start = time.perf_counter()
    made = import_jobs(*read_nds(path, regime), out, force)
    return replace(made, seconds=time.perf_counter() - start)


def import_pycls(folder: Path, *, out: Path | None = None, force: bool = False) -> ImportedRun:
    """Import a pycls sweep folder into a run folder (default runs/pycls-NAME)."""
    start = time.perf_counter()
    made = import_jobs(*read_pycls(folder), out, force)
    return replace(made, seconds=time.perf_counter() - start)
