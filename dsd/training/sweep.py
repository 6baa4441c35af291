"""`train_runs`: a whole sweep, in the order that keeps bad input from touching anything.

1. every option checked (settings, sweep options, the device), 2. the run folders read and the models
to train planned (ids checked), 3. the data sets found, 4. the models trained on the chosen backend,
5. their result files compacted (dsd.runfolder.results).
"""
from __future__ import annotations

import time
from dataclasses import fields
from pathlib import Path

from dsd import runfolder
from dsd.errors import BadInput
from dsd.training.devices import local_device, slots_for
from dsd.training.jobs import Feed, plan, run_settings, with_data_located
from dsd.training.progress import Progress
from dsd.training.settings import SweepOptions

SWEEP_OPTIONS = {f.name for f in fields(SweepOptions)}


def train_runs(runs: list[Path], *, ids: list[int] | None = None, progress=None, **options) -> dict:
    """Train every model of the runs that has no result yet (see `dsd train`); return a summary.

    options: SweepOptions fields (backend, device, models_per_gpu, cpu_workers, ray_address, limit,
    retry_failed) and settings_for's overrides (dataset, epochs, batch_size, lr, wd, data_dir, download,
    train_images, eval_images, loader_workers, seed, amp, channels_last, compile, deterministic, save_weights,
    checkpoints). Everything is checked before anything is written, so bad input changes nothing on disk.
    """
    sweep, _, jobs = prepare(runs, ids, options)
    # On this machine (local workers, or a Ray instance started here) the device must be here too.
    device = local_device(sweep.device) if sweep.backend == "local" or not sweep.ray_address else sweep.device
    # On a Ray cluster each node finds its own copy of the data (dsd.training.ray_backend), not this one's.
    on_cluster = sweep.backend == "ray" and sweep.ray_address
    feed = Feed(jobs if on_cluster else with_data_located(jobs), sweep.limit)
    progress = progress or Progress(feed.expected)
    start = time.perf_counter()
    try:
        if sweep.backend == "ray":
            from dsd.training.ray_backend import run_ray

            run_ray(feed, progress, device=device, models_per_gpu=sweep.models_per_gpu, address=sweep.ray_address)
        else:
            from dsd.training.local_backend import run_local

            run_local(feed, progress, slots_for(device, sweep.models_per_gpu, sweep.cpu_workers))
    finally:
        feed.close()
        progress.close()
    counts = {s: sum(1 for t in progress.results if t["status"] == s) for s in runfolder.STATUSES}
    compacted = {str(run): compact_quietly(run) for run in runs}  # one results file per run for readers
    return {"trained": progress.results, **counts, "claimed_elsewhere": feed.skipped,
            "wall_s": round(time.perf_counter() - start, 3), "compacted": compacted}


def prepare(runs: list[Path], ids: list[int] | None, options: dict) -> tuple:
    """The first steps of a sweep (train_runs, and dsd slurm before it submits one): the sweep options
    and each run's settings checked, the runs read and their models planned; (sweep, settings, jobs)."""
    sweep = SweepOptions(**{k: v for k, v in options.items() if k in SWEEP_OPTIONS})
    sweep.check()
    overrides = {k: v for k, v in options.items() if k not in SWEEP_OPTIONS}
    settings = {run: run_settings(run, **overrides) for run in runs}
    return sweep, settings, [job for run in runs for job in plan(run, settings[run], ids, sweep.retry_failed)]


def compact_quietly(run: Path) -> dict:
    """Compact a run's results after training; a problem there (a result file another process broke)
    is reported in the summary, not raised: the sweep itself succeeded, and its rows are written."""
    try:
        return runfolder.compact(run)
    except BadInput as e:
        return {"error": str(e)}
