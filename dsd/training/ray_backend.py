"""`dsd train --backend ray`: long-lived Ray actors, one per slot, fed model after model by this process.

This process (the driver) claims each model, hands it to an idle actor, and writes the result row the
actor returns (dsd.runfolder.write_result), so that no actor touches the run folder: a Ray cluster needs
no disk shared with the driver. Only started actors are given models, one each, so at most one model per
slot is claimed at a time and other `dsd train` processes can share the run.

An actor holds its slot, 1/K of a GPU (--models-per-gpu K) or one CPU, for the whole sweep and trains in
one process: torch's import, CUDA's start-up, the data set on the device (dsd.training.jobs.device_data)
and cudnn's tuning are paid once per slot, not once per model. After a fatal CUDA error its row is
written and the actor is killed; an actor that dies (a crash, its node lost) costs its model, recorded as
failed. Either way a fresh actor takes the slot.

Data: each actor finds its data set on its own node (dsd.training.data.locate: --data-dir, that node's
$DSD_DATA_DIR, Debian's package, its download cache); a node without it stops the sweep with BadInput.
Checkpoints are off under Ray: an actor cannot write RUN/checkpoints, and a node-local one would be found
only if the model came back to that node, so an interrupted model starts afresh. --save-weights: the
actor returns the weights with the row, and the driver writes RUN/weights/ID.pt.
"""
from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import replace
from pathlib import Path

from dsd import runfolder
from dsd.errors import BadInput
from dsd.training.data import locate
from dsd.training.devices import device_name, gpu_index, is_gpu, setup_process
from dsd.training.jobs import Feed, Job, record_failure, summary_of, train_job

RAY_RESOURCE_UNITS = 10_000  # Ray counts a resource in units of 1/10000 (ray._raylet.RESOURCE_UNIT_SCALING)


def gpu_fraction(models_per_gpu: int) -> float:
    """1/K of a GPU, rounded down to Ray's unit: Ray turns a request into whole units, rounding to the
    nearest in some versions (1/6 -> 0.1667, and six of them exceed one GPU), so only a fraction that is
    already a whole number of units, no more than 1/K, lets K actors share every GPU."""
    return max(1, RAY_RESOURCE_UNITS // models_per_gpu) / RAY_RESOURCE_UNITS


def device_label(device: str) -> str:
    """The device a row names, as its node numbers it: Ray shows an actor its own GPU alone, which torch
    calls cuda:0, and ray.get_gpu_ids() says which of the node's GPUs it is (CUDA_VISIBLE_DEVICES mapped)."""
    import ray

    name = device_name(device)
    ids = ray.get_gpu_ids() if is_gpu(device) else []
    return f"cuda:{ids[0]} {name.partition(' ')[2]}" if ids else name


class Trainer:
    """A Ray actor: set up once for the device Ray gave it, then train job after job in this process."""

    def __init__(self):
        import ray

        self.device = "cuda" if ray.get_gpu_ids() else "cpu"
        threads = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)) or 1
        setup_process(self.device, threads)
        self.located = {}

    def where(self) -> dict:
        """Host, pid and device of this actor (its first reply, once Ray has started it)."""
        return {"host": socket.gethostname(), "pid": os.getpid(), "device": device_label(self.device)}

    def train(self, job: Job) -> dict:
        """Train a job with data found on this node; return its row, whether this actor must retire, the
        weights (with --save-weights) and where it ran. Nothing is written outside a temp folder here."""
        try:
            if job.settings.data not in self.located:
                self.located[job.settings.data] = locate(job.settings.data)
        except BadInput as e:
            return {"bad_input": str(e), "worker": self.where()}
        job = replace(job, settings=replace(job.settings, data=self.located[job.settings.data]))
        with tempfile.TemporaryDirectory(prefix="dsd-weights-") as tmp:
            weights = Path(tmp) / "weights.pt" if job.settings.save_weights else None
            row, retire = train_job(job, self.device, weights=weights)
            blob = weights.read_bytes() if weights is not None and weights.is_file() else None
        worker = self.where()
        return {"row": {**row, "device": worker["device"]}, "retire_worker": retire, "weights": blob,
                "worker": worker}


def write_reply(job: Job, reply: dict) -> dict:
    """Write what an actor returned as run_job would have (the weights, then the row; no checkpoint left
    beside a finished result, e.g. one of an earlier local run); return the summary."""
    row = reply["row"]
    if reply["weights"] is not None:
        runfolder.write_atomic(runfolder.weights_path(job.run, job.model_id),
                               lambda tmp: Path(tmp).write_bytes(reply["weights"]))
    if row["status"] != "failed":
        runfolder.checkpoint_path(job.run, job.model_id).unlink(missing_ok=True)
    runfolder.write_result(job.run, row)
    return {**summary_of(job, row), "retire_worker": reply["retire_worker"]}


class Slot:
    """One actor and the job it trains. `call` is the reply awaited: the actor's start (where), then a
    job's (train); None while it is idle."""

    def __init__(self, actor_class, device: str):
        self.actor_class, self.device = actor_class, device
        self.start()

    def start(self) -> None:
        """A fresh actor in this slot; it gets a job once Ray has started it (until then it holds no claim)."""
        self.actor = self.actor_class.remote()
        self.call, self.job, self.worker = self.actor.where.remote(), None, None

    def renew(self) -> None:
        import ray

        ray.kill(self.actor)
        self.start()

    def started(self) -> None:
        """The actor's start: a failure there (dsd or torch missing on a node) is the cluster's, not a model's."""
        import ray

        try:
            self.worker = ray.get(self.call)
        except ray.exceptions.RayError as e:
            raise RuntimeError(f"a Ray actor could not start: {e}") from None
        self.call = None

    def give(self, job: Job | None) -> None:
        self.job = job
        self.call = self.actor.train.remote(job) if job is not None else None

    def finish(self) -> dict:
        """The summary of the job trained, its row written; a fresh actor replaces one that retired or died."""
        import ray

        job, call = self.job, self.call
        self.job = self.call = None
        try:
            reply = ray.get(call)
        except ray.exceptions.RayError as e:  # the actor died (a crash, its node lost): one model, not the sweep
            what = "died" if isinstance(e, ray.exceptions.RayActorError) else "failed"
            who = f"on {self.worker['host']} (pid {self.worker['pid']}, {self.worker['device']})"
            self.renew()
            return record_failure(job, self.device, f"the Ray actor {who} {what}: {str(e).splitlines()[0]}")
        if "bad_input" in reply:
            raise BadInput(f"{reply['worker']['host']}: {reply['bad_input']}")
        self.worker = reply["worker"]
        summary = write_reply(job, reply)
        if reply["retire_worker"]:  # a fatal CUDA error: this actor's CUDA context is lost
            self.renew()
        return summary

    def stop(self) -> None:
        import ray

        ray.kill(self.actor)


def visible_gpus(device: str, address: str | None) -> str | None:
    """CUDA_VISIBLE_DEVICES for a local Ray instance asked for cuda:N (it then sees, and places every
    actor on, that GPU alone); None to leave it as it is (and on a cluster, whose GPU indices are each
    node's own: SweepOptions.check refuses cuda:N there)."""
    index = gpu_index(device)
    if index is None or address:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return visible.split(",")[index].strip() if visible else str(index)


def start_ray(ray, address: str | None, visible: str | None) -> None:
    """ray.init, with CUDA_VISIBLE_DEVICES set while Ray starts (its processes inherit it) when given."""
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    finally:
        if visible is not None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            if before is not None:
                os.environ["CUDA_VISIBLE_DEVICES"] = before


def slots_of(ray, device: str, models_per_gpu: int) -> tuple[object, str, int]:
    """The actor class with one slot's resources, the slot's device, and how many slots the cluster holds:
    1/K of a GPU and one CPU each where it has GPUs (unless --device cpu), else one CPU each."""
    resources = ray.cluster_resources()
    gpus = resources.get("GPU", 0) if device != "cpu" else 0
    if is_gpu(device) and not gpus:
        raise BadInput(f"--device {device}: the Ray cluster has no GPU")
    options = {"num_cpus": 1, "num_gpus": gpu_fraction(models_per_gpu) if gpus else 0, "max_restarts": 0,
               "max_task_retries": 0}  # a dead actor is the driver's to record and replace
    count = int(gpus * models_per_gpu) if gpus else int(resources.get("CPU", 1))
    return ray.remote(Trainer).options(**options), "cuda" if gpus else "cpu", max(1, count)


def feed_slots(feed: Feed, progress, slots: list[Slot]) -> None:
    """Give every started actor a claimed job, and the next as each reply is written, until the feed is
    empty and no actor is busy."""
    import ray

    more = True
    while more or any(s.job for s in slots):
        calls = {s.call: s for s in slots if s.call is not None}
        ready, _ = ray.wait(list(calls), num_returns=1, timeout=1.0)
        for ref in ready:
            slot = calls[ref]
            if slot.job is None:
                slot.started()
            else:
                job = slot.job
                summary = slot.finish()
                feed.finish(job)
                progress.finished(job, summary)
            if slot.call is None and more:
                job = feed.next()
                more = job is not None
                slot.give(job)
                progress.started(job)
        progress.total = feed.expected
        progress.tick()


def run_ray(feed: Feed, progress, *, device: str, models_per_gpu: int = 1, address: str | None = None) -> None:
    """Train the feed's jobs on Ray actors, on a local instance (address None) or a cluster ("auto", host:port).

    device: cpu (CPU actors only), cuda or cuda:N (GPU actors, the cluster must have GPUs), auto (GPU
    actors where the cluster has GPUs). The options are checked before Ray starts."""
    try:
        import ray
    except ImportError:
        raise BadInput("--backend ray needs Ray: pip install 'dsd[ray]'") from None
    visible = visible_gpus(device, address)
    if not feed.expected:
        return
    started = not ray.is_initialized()
    if started:
        start_ray(ray, address, visible)
    slots = []
    try:
        actor_class, kind, count = slots_of(ray, device, models_per_gpu)
        slots = [Slot(actor_class, kind) for _ in range(min(count, feed.expected))]
        feed_slots(feed, progress, slots)
    finally:
        for slot in slots:
            slot.stop()
        if started:
            ray.shutdown()
