"""Jobs: the models of runs that still need training, handed out under claims, and trained one by one.

Nothing lost, nothing done twice, across processes and hosts that share a run folder:
- Every model is claimed (dsd.runfolder.claims) before it starts and released after its result is
  written; the claims this process holds are refreshed by a heartbeat thread.
- The row is written with dsd.runfolder.write_result (temp file + rename), so a kill at any moment loses
  at most the models in flight, never a finished one: by the worker that trained it (local backend,
  `run_job`), or by the driver from the row a Ray actor sends back (`train_job`: no shared disk needed).
"""
from __future__ import annotations

import functools
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa
import torch

from dsd import runfolder
from dsd.design.spec import ModelSpec, spec_from_row
from dsd.errors import BadInput
from dsd.runfolder import HEARTBEAT_S, claim, refresh, release
from dsd.training.data import load, locate
from dsd.training.devices import is_fatal_gpu_error, is_gpu
from dsd.training.loop import result_row, train_model
from dsd.training.settings import TrainSettings, settings_for


@dataclass(frozen=True)
class Job:
    """One model of one run, with the settings to train it by (picklable: it travels to workers), and
    the stamp (status, time) of its result when planned: None, or a failed one to train again."""

    run: str
    model_id: int
    spec: ModelSpec
    settings: TrainSettings
    planned: tuple | None = None

    @property
    def label(self) -> str:
        return f"{Path(self.run).name}/{self.model_id}"


def needs_training(stamp: tuple | None, retry_failed: bool = False) -> bool:
    """No result yet (stamp None), or (with retry_failed) a failed or diverged one."""
    return stamp is None or (retry_failed and stamp[0] in runfolder.RETRAINABLE)


def plan(run, settings: TrainSettings, ids: list[int] | None = None, retry_failed: bool = False) -> list[Job]:
    """The jobs of a run that still need training, in model order (optionally only the given ids). A
    corrupt result is bad input: training over it would hide that a finished result was lost."""
    models = runfolder.read_models(run)
    known = models["model_id"].to_pylist()
    if ids:
        unknown = sorted(set(ids) - set(known))
        if unknown:
            raise BadInput(f"{run}: no model with id {', '.join(map(str, unknown))} (ids are {min(known)}..{max(known)})")
    stamps = runfolder.result_stamps(run)
    wanted = [i for i in (ids or known) if needs_training(stamps.get(i), retry_failed)]
    position = {model_id: k for k, model_id in enumerate(known)}
    rows = models.take(pa.array([position[i] for i in wanted], type=pa.int64())).to_pylist()
    return [Job(str(run), r["model_id"], spec_from_row(r), model_settings(settings, r), stamps.get(r["model_id"]))
            for r in rows]


def model_settings(settings: TrainSettings, row: dict) -> TrainSettings:
    """The run's settings with the model's own sampled lr and wd, when its space draws them."""
    own = {k: row[f"sampled_{k}"] for k in ("lr", "wd") if row.get(f"sampled_{k}") is not None}
    return replace(settings, **own) if own else settings


def run_settings(run, **overrides) -> TrainSettings:
    """Training settings of a run: its regime's protocol with the overrides, checked (no data touched)."""
    return settings_for(runfolder.read_regime(run), **overrides)


def with_data_located(jobs: list[Job]) -> list[Job]:
    """The jobs with their data sets found (or downloaded), each distinct request once; in the parent,
    so that a missing data set is one BadInput before any worker starts."""
    located = {}
    for job in jobs:
        if job.settings.data not in located:
            located[job.settings.data] = locate(job.settings.data)
    return [replace(job, settings=replace(job.settings, data=located[job.settings.data])) for job in jobs]


class Feed:
    """Hands out jobs one at a time, each claimed first; keeps the claims it holds alive."""

    def __init__(self, jobs: list[Job], limit: int | None = None):
        self.pending = deque(jobs)
        self.limit = limit
        self.held: dict[tuple, Job] = {}
        self.given = self.skipped = 0
        self._lock, self._stop = threading.Lock(), threading.Event()
        threading.Thread(target=self._beat, daemon=True).start()

    @property
    def expected(self) -> int:
        """How many models this process will train if nobody else takes any."""
        left = len(self.pending)
        return self.given + (left if self.limit is None else min(left, self.limit - self.given))

    def next(self) -> Job | None:
        while self.pending and (self.limit is None or self.given < self.limit):
            job = self.pending.popleft()
            if not claim(job.run, job.model_id):
                self.skipped += 1
                continue
            try:  # unchanged since the plan: else another process trained it (again) meanwhile
                needed = runfolder.result_stamp(job.run, job.model_id) == job.planned
            except BadInput:  # its result file broke since the plan checked it: leave it unclaimed
                release(job.run, job.model_id)
                raise
            if not needed:  # finished meanwhile
                release(job.run, job.model_id)
                continue
            runfolder.remove_orphans(job.run, job.model_id)
            with self._lock:
                self.held[(job.run, job.model_id)] = job
            self.given += 1
            return job
        return None

    def finish(self, job: Job) -> None:
        with self._lock:  # under the lock, so that a heartbeat cannot re-create the released claim
            self.held.pop((job.run, job.model_id), None)
            release(job.run, job.model_id)

    def close(self) -> None:
        self._stop.set()
        for job in list(self.held.values()):
            self.finish(job)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with self._lock:
                for run, model_id in list(self.held):
                    refresh(run, model_id)



# ---- training a job (in a worker process, a Ray actor or task, or in-process) -----------------------

@functools.lru_cache(maxsize=2)
def device_data(req, device: str):
    """The data set of a request, loaded once per process and moved to the device."""
    return load(req).to(device)


def summary_of(job: Job, row: dict) -> dict:
    keys = ("model_id", "status", "error", "best_error", "wall_s", "message")
    return {"run": job.run, **{k: row.get(k) for k in keys}}


def record_failure(job: Job, device: str, message: str) -> dict:
    """Write a failed row for a job whose trainer could not report (worker died, task lost).

    A result the trainer did write before it died stands: results are never rewritten."""
    runfolder.remove_orphans(job.run, job.model_id)
    written = runfolder.result_of(job.run, job.model_id)
    if written is not None:
        return summary_of(job, written)
    row = result_row(job.model_id, job.settings, device, message=message)
    runfolder.write_result(job.run, row)
    return summary_of(job, row)


def train_job(job: Job, device: str, on_epoch=None, *, checkpoint: Path | None = None,
              weights: Path | None = None) -> tuple[dict, bool]:
    """Train one job in this process; return its result row and whether this process must retire.

    Nothing is written but the checkpoint and the weights, at the paths given (none by default), so that
    a trainer that cannot reach the run folder (a Ray actor) can run it. An exception (out of memory
    included) becomes a failed row with its message. After a fatal CUDA error this process's CUDA
    context is lost: it must retire, and the next model train in a fresh one.
    """
    start = time.perf_counter()
    failure = None
    try:
        row = train_model(job.spec, device_data(job.settings.data, device), job.settings, model_id=job.model_id,
                          device=device, on_epoch=on_epoch, weights_path=weights, checkpoint_path=checkpoint)
    except Exception as e:  # noqa: BLE001  (the sweep goes on; the row says what happened)
        failure = (f"{type(e).__name__}: {e}", is_fatal_gpu_error(e))
    if failure is not None:  # out of the except block: the failed model's tensors are freed with it
        if is_gpu(device) and not failure[1]:
            torch.cuda.empty_cache()
        row = result_row(job.model_id, job.settings, device, message=failure[0], wall_s=time.perf_counter() - start)
    return row, bool(failure and failure[1])


def run_job(job: Job, device: str, on_epoch=None) -> dict:
    """Train one claimed job in this process and write its result row; return a short summary.

    The model's checkpoint goes just before its row is written (a kill in between costs its epochs, and
    leaves no checkpoint beside a finished result), unless it failed: `--retry-failed` then resumes from
    it. The summary's `retire_worker` (see train_job) tells whoever runs this process to let it exit.
    """
    checkpoint = runfolder.checkpoint_path(job.run, job.model_id)
    weights = runfolder.weights_path(job.run, job.model_id) if job.settings.save_weights else None
    row, retire = train_job(job, device, on_epoch, checkpoint=checkpoint if job.settings.checkpoints else None,
                            weights=weights)
    if row["status"] != "failed":
        checkpoint.unlink(missing_ok=True)
    runfolder.write_result(job.run, row)
    return {**summary_of(job, row), "retire_worker": retire}
