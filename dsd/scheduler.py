"""Running a sweep: jobs handed out under claims, one worker process per slot, progress.

Nothing lost, nothing done twice, across processes and hosts that share a run folder:
- Every model is claimed (dsd.claims) before it starts and released after its result is written; the
  claims this process holds are refreshed by a heartbeat thread.
- The process that trains a model writes its row with dsd.store.write_result (temp file + rename),
  so a kill at any moment loses at most the models in flight, never a finished one.
- Workers are spawned processes (one per GPU slot, or per CPU slot): a crash or an out-of-memory kill
  costs one model, which is recorded as failed. They exit by themselves when their parent dies, even
  by SIGKILL, and remove their temp files on the way out.
"""
from __future__ import annotations

import functools
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from multiprocessing.connection import wait
from pathlib import Path

import torch

from dsd import store
from dsd.claims import HEARTBEAT_S, claim, refresh, release
from dsd.data import load, locate
from dsd.errors import BadInput
from dsd.regimes import regime_from_dict
from dsd.spec import ModelSpec, spec_from_row
from dsd.train import TrainSettings, resolve_device, result_row, settings_for, setup_process, train_model

WEIGHTS_DIR = "weights"
CHECKPOINTS_DIR = "checkpoints"


# ---- jobs -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """One model of one run, with the settings to train it by (picklable: it travels to workers)."""

    run: str
    model_id: int
    spec: ModelSpec
    settings: TrainSettings

    @property
    def label(self) -> str:
        return f"{Path(self.run).name}/{self.model_id}"


def needs_training(run, model_id: int, retry_failed: bool = False) -> bool:
    """No result yet, or (with retry_failed) a failed or diverged one. A corrupt result is bad input:
    training over it would hide that a finished result was lost."""
    path = store.result_path(run, model_id)
    if not path.exists():
        return True
    try:
        store.check_result(path)
    except BadInput as e:
        raise BadInput(f"{e}; delete it to train model {model_id} again") from None
    return retry_failed and store.read_table(path).column("status")[0].as_py() in ("failed", "diverged")


def plan(run, settings: TrainSettings, ids: list[int] | None = None, retry_failed: bool = False) -> list[Job]:
    """The jobs of a run that still need training, in model order (optionally only the given ids)."""
    rows = {r["model_id"]: r for r in store.read_models(run).to_pylist()}
    if ids:
        unknown = sorted(set(ids) - rows.keys())
        if unknown:
            raise BadInput(f"{run}: no model with id {', '.join(map(str, unknown))} (ids are 0..{len(rows) - 1})")
    chosen = [rows[i] for i in ids] if ids else list(rows.values())
    return [Job(str(run), r["model_id"], spec_from_row(r), settings) for r in chosen
            if needs_training(run, r["model_id"], retry_failed)]


def run_settings(run, **overrides) -> TrainSettings:
    """Training settings of a run: its regime's protocol, the overrides, and the data located."""
    meta = store.read_meta(run)
    if not isinstance(meta.get("regime"), dict):
        raise BadInput(f"{run}/{store.RUN_FILE}: no regime (sample the run with `dsd sample`)")
    settings = settings_for(regime_from_dict(meta["regime"]), **overrides)
    n = settings.data.train_images
    if n is not None and n < settings.batch_size:
        raise BadInput(f"--train-images {n} is less than one batch of {settings.batch_size}")
    return replace(settings, data=locate(settings.data))


class Feed:
    """Hands out jobs one at a time, each claimed first; keeps the claims it holds alive."""

    def __init__(self, jobs: list[Job], limit: int | None = None, retry_failed: bool = False):
        self.pending = deque(jobs)
        self.limit, self.retry_failed = limit, retry_failed
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
            try:
                needed = needs_training(job.run, job.model_id, self.retry_failed)
            except BadInput:  # its result file broke since the plan checked it: leave it unclaimed
                release(job.run, job.model_id)
                raise
            if not needed:  # finished meanwhile
                release(job.run, job.model_id)
                continue
            remove_orphans(job)
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


# ---- training a job (in a worker process, a Ray task, or in-process) ----------------------------------

@functools.lru_cache(maxsize=2)
def device_data(req, device: str):
    """The data set of a request, loaded once per process and moved to the device."""
    return load(req).to(device)


def summary_of(job: Job, row: dict) -> dict:
    keys = ("model_id", "status", "error", "best_error", "wall_s", "message")
    return {"run": job.run, **{k: row.get(k) for k in keys}}


def checkpoint_path(job: Job) -> Path:
    return Path(job.run) / CHECKPOINTS_DIR / f"{job.model_id}.pt"


def remove_orphans(job: Job) -> None:
    """Temp files of this job's result, weights or checkpoint, left by a writer killed mid-write.

    Only the holder of the job's claim calls this, so no live writer can own them.
    """
    name = str(job.model_id)
    for folder, file in ((store.RESULTS_DIR, f"{name}.parquet"), (WEIGHTS_DIR, f"{name}.pt"),
                         (CHECKPOINTS_DIR, f"{name}.pt")):
        for orphan in (Path(job.run) / folder).glob(f".{file}.*.tmp"):
            orphan.unlink(missing_ok=True)


def record_failure(job: Job, device: str, message: str) -> dict:
    """Write a failed row for a job whose trainer could not report (worker died, task lost).

    A result the trainer did write before it died stands: results are never rewritten."""
    remove_orphans(job)
    if store.result_path(job.run, job.model_id).exists():
        return summary_of(job, store.read_table(store.result_path(job.run, job.model_id)).to_pylist()[0])
    row = result_row(job.model_id, job.settings, device, message=message)
    store.write_result(job.run, row)
    return summary_of(job, row)


def run_job(job: Job, device: str, on_epoch=None) -> dict:
    """Train one claimed job in this process and write its result row; return a short summary.

    An exception (out of memory included) becomes a failed row with its message. The model's checkpoint
    goes just before its row is written (a kill in between costs its epochs, and leaves no checkpoint
    beside a finished result), unless it failed: `--retry-failed` then resumes from it.
    """
    start = time.perf_counter()
    checkpoint = checkpoint_path(job)
    try:
        weights = Path(job.run) / WEIGHTS_DIR / f"{job.model_id}.pt" if job.settings.save_weights else None
        row = train_model(job.spec, device_data(job.settings.data, device), job.settings, model_id=job.model_id,
                          device=device, on_epoch=on_epoch, weights_path=weights,
                          checkpoint_path=checkpoint if job.settings.checkpoints else None)
    except Exception as e:  # noqa: BLE001  (the sweep goes on; the row says what happened)
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        row = result_row(job.model_id, job.settings, device, message=f"{type(e).__name__}: {e}",
                         wall_s=time.perf_counter() - start)
    if row["status"] != "failed":
        checkpoint.unlink(missing_ok=True)
    store.write_result(job.run, row)
    return summary_of(job, row)


# ---- local workers ----------------------------------------------------------------------------------

def exit_with_parent(poll_s: float = 0.5) -> None:
    """Make this process leave when its parent dies (even by SIGKILL), unwinding so temp files go.

    SIGTERM raises SystemExit in the main thread; a watcher thread sends it when the parent pid changes,
    and hard-exits if unwinding takes longer than a few seconds.
    """
    parent = os.getppid()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    def watch():
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        os._exit(143)

    threading.Thread(target=watch, daemon=True).start()


def worker_main(conn, device: str, threads: int) -> None:
    """A slot: receive jobs, train them, report epochs and results, until told to stop."""
    exit_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    setup_process(device, threads)

    def report(*message):
        try:
            conn.send(message)
        except OSError:  # the parent is gone: leave now, before writing anything more
            sys.exit(143)

    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        report("done", run_job(job, device, lambda epoch, error, loss: report("epoch", job.label, epoch, error)))


class Slot:
    """One worker process bound to a device, and the job it is training."""

    def __init__(self, ctx, device: str, threads: int):
        self.ctx, self.device, self.threads = ctx, device, threads
        self.job: Job | None = None
        self.start()

    def start(self) -> None:
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=worker_main, args=(child, self.device, self.threads),
                                     name=f"dsd-{self.device}")
        self.proc.start()
        child.close()

    def give(self, job: Job | None) -> None:
        self.job = job
        if job is not None:
            self.conn.send(job)

    def messages(self) -> list[tuple]:
        """What the worker sent; ("died", exit code) when it is gone before finishing its job."""
        out = []
        try:
            while self.conn.poll():
                out.append(self.conn.recv())
        except (EOFError, OSError):
            pass
        if not self.proc.is_alive() and not any(m[0] == "done" for m in out):
            self.proc.join()
            out.append(("died", self.proc.exitcode))
        return out

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


def slots_for(device: str, models_per_gpu: int = 1, cpu_workers: int = 1) -> list[tuple[str, int]]:
    """(device, CPU threads) per slot: K per GPU (every visible GPU unless one is named), N on the CPU."""
    cores = os.cpu_count() or 1
    if device == "cpu":
        return [("cpu", max(1, cores // cpu_workers))] * cpu_workers
    gpus = [device] if ":" in device else [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    threads = max(1, min(4, cores // (len(gpus) * models_per_gpu)))
    return [(g, threads) for g in gpus for _ in range(models_per_gpu)]


def run_local(feed: Feed, progress, slots: list[tuple[str, int]]) -> None:
    """Train the feed's jobs on spawned worker processes, one per slot."""
    ctx = mp.get_context("spawn")
    workers = [Slot(ctx, device, threads) for device, threads in slots[:feed.expected]]
    try:
        for w in workers:
            w.give(feed.next())
            progress.started(w.job)
        while any(w.job for w in workers):
            busy = [w for w in workers if w.job]
            wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=1.0)
            for w in busy:
                for kind, *info in w.messages():
                    if kind == "epoch":
                        progress.epoch(*info)
                        continue
                    if kind == "died":
                        info = [record_failure(w.job, w.device, f"the worker process died (exit code {info[0]})")]
                        w.start()
                    feed.finish(w.job)
                    progress.finished(w.job, info[0])
                    w.give(feed.next())
                    progress.started(w.job)
            progress.total = feed.expected
            progress.tick()
    finally:
        for w in workers:
            w.stop()


# ---- progress ---------------------------------------------------------------------------------------

def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """Models done of total, the models in flight with their epoch, the ETA and the best error so far.

    On a terminal a rich display on stderr; otherwise plain lines: one per finished model, and one every
    `every` seconds while none finishes, so logs of long sweeps show life without flooding.
    """

    def __init__(self, total: int, stream=None, every: float = 60.0):
        self.total, self.every = total, every
        self.stream = stream or sys.stderr
        self.results: list[dict] = []
        self.current: dict[str, tuple] = {}  # label -> (epoch, epochs, error)
        self.start = self.last_line = time.monotonic()
        self.bar = self._rich() if self.stream.isatty() else None

    def _rich(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

        bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  TextColumn("{task.fields[note]}"), console=Console(file=self.stream))
        self.tasks = {"": bar.add_task("models", total=self.total, note="")}
        bar.start()
        return bar

    @property
    def best(self) -> float | None:
        errors = [r["error"] for r in self.results if r["status"] == "done" and r["error"] is not None]
        return min(errors) if errors else None

    def eta(self) -> str:
        done = len(self.results)
        if not done:
            return "?"
        return _duration((time.monotonic() - self.start) / done * max(0, self.total - done))

    def started(self, job: Job | None) -> None:
        if job is None:
            return
        self.current[job.label] = (0, job.settings.epochs, None)
        if self.bar:
            self.tasks[job.label] = self.bar.add_task(f"  {job.label}", total=job.settings.epochs, note="")

    def epoch(self, label: str, epoch: int, error: float) -> None:
        self.current[label] = (epoch, self.current.get(label, (0, 0))[1], error)
        if self.bar:
            self.bar.update(self.tasks[label], completed=epoch, note=f"error {error:.2f}%")

    def finished(self, job: Job, summary: dict) -> None:
        self.results.append(summary)
        self.current.pop(job.label, None)
        best = f"best {self.best:.2f}%" if self.best is not None else ""
        if self.bar:
            self.bar.remove_task(self.tasks.pop(job.label))
            self.bar.update(self.tasks[""], completed=len(self.results), total=self.total, note=best)
            return
        what = (f"error {summary['error']:.2f}% ({best})" if summary["status"] == "done"
                else summary["message"] or summary["status"])
        self._line(f"{job.label} {summary['status']}: {what} in {summary['wall_s'] or 0:.1f} s, eta {self.eta()}")

    def tick(self) -> None:
        if self.bar:
            self.bar.update(self.tasks[""], total=self.total)
        elif time.monotonic() - self.last_line >= self.every:
            running = ", ".join(f"{label} (epoch {e}/{n}{f', error {err:.1f}%' if err is not None else ''})"
                                for label, (e, n, err) in self.current.items())
            self._line(f"training {running or 'nothing'}; eta {self.eta()}")

    def _line(self, text: str) -> None:
        print(f"[{len(self.results)}/{self.total}] {text}", file=self.stream, flush=True)
        self.last_line = time.monotonic()

    def close(self) -> None:
        if self.bar:
            self.bar.stop()


# ---- a whole sweep ----------------------------------------------------------------------------------

def train_runs(runs: list[Path], *, ids: list[int] | None = None, limit: int | None = None,
               retry_failed: bool = False, backend: str = "local", device: str = "auto",
               models_per_gpu: int = 1, cpu_workers: int = 1, ray_address: str | None = None,
               progress=None, **overrides) -> dict:
    """Train every model of the runs that has no result yet (see `dsd train`); return a summary.

    overrides: TrainSettings fields and data options (dataset, epochs, batch_size, lr, wd, data_dir,
    download, train_images, eval_images, seed, amp, channels_last, compile, save_weights, ...).
    Everything is checked before anything is written, so bad input changes nothing on disk.
    """
    if backend not in ("local", "ray"):
        raise BadInput(f"--backend {backend}: expected local or ray")
    if ray_address and backend != "ray":
        raise BadInput(f"--ray-address {ray_address} needs --backend ray")
    for option, value, least in (("--models-per-gpu", models_per_gpu, 1), ("--cpu-workers", cpu_workers, 1),
                                 ("--limit", limit, 1), ("--loader-workers", overrides.get("loader_workers"), 0)):
        if value is not None and value < least:
            raise BadInput(f"{option} must be at least {least}, got {value}")
    if backend == "local":
        device = resolve_device(device)  # with Ray, the cluster's resources decide
    jobs = [job for run in runs for job in plan(run, run_settings(run, **overrides), ids, retry_failed)]
    feed = Feed(jobs, limit, retry_failed)
    progress = progress or Progress(feed.expected)
    start = time.perf_counter()
    try:
        if backend == "ray":
            from dsd.ray_backend import run_ray

            run_ray(feed, progress, device=device, models_per_gpu=models_per_gpu, address=ray_address)
        else:
            run_local(feed, progress, slots_for(device, models_per_gpu, cpu_workers))
    finally:
        feed.close()
        progress.close()
    counts = {s: sum(1 for t in progress.results if t["status"] == s) for s in store.STATUSES}
    return {"trained": progress.results, **counts, "claimed_elsewhere": feed.skipped,
            "wall_s": round(time.perf_counter() - start, 3)}
