"""`dsd train --backend ray`: every model a Ray task, with the claims, results and resume of the local backend.

This process (the driver) claims each model before submitting it and keeps only as many tasks in flight
as the cluster can run at once, so other `dsd train` processes or drivers can share the run. A task
trains where Ray puts it (1/K of a GPU when the cluster has GPUs, so K small models share one; else one
CPU) and writes its result row into the run folder, which must be on a file system every node sees, as
must the data set (or each node finds its own copy: --data-dir, $DSD_DATA_DIR, Debian's package).
"""
from __future__ import annotations

import os

from dsd.errors import BadInput
from dsd.training.devices import gpu_index, is_gpu, setup_process
from dsd.training.jobs import Feed, record_failure, run_job


def ray_task(job, device: str) -> dict:
    """Body of one Ray task: as many CPU threads as Ray gave it, then train and write the result."""
    import ray

    threads = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)) or 1
    setup_process(device, threads)
    summary = run_job(job, device)
    if summary["retire_worker"]:  # a fatal CUDA error: end this Ray worker (its row is written) so that
        os._exit(1)               # Ray starts a fresh one; the driver then reads the row from the run folder
    return summary


def visible_gpus(device: str, address: str | None) -> str | None:
    """CUDA_VISIBLE_DEVICES for a local Ray instance asked for cuda:N (it then sees, and places every
    task on, that GPU alone); None to leave it as it is (and on a cluster, whose GPU indices are each
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


def run_ray(feed: Feed, progress, *, device: str, models_per_gpu: int = 1, address: str | None = None) -> None:
    """Train the feed's jobs as Ray tasks on a local instance (address None) or a cluster ("auto", host:port).

    device: cpu (CPU tasks only), cuda or cuda:N (GPU tasks, the cluster must have GPUs), auto (GPU tasks
    where the cluster has GPUs). The options are checked before Ray starts."""
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
    flight = {}
    try:
        resources = ray.cluster_resources()
        gpus = resources.get("GPU", 0) if device != "cpu" else 0
        if is_gpu(device) and not gpus:
            raise BadInput(f"--device {device}: the Ray cluster has no GPU")
        if gpus:
            task = ray.remote(ray_task).options(num_gpus=1 / models_per_gpu, num_cpus=1, max_retries=0)
            capacity, where = int(gpus * models_per_gpu), "cuda"
        else:
            task = ray.remote(ray_task).options(num_gpus=0, num_cpus=1, max_retries=0)
            capacity, where = max(1, int(resources.get("CPU", 1))), "cpu"

        def submit():
            job = feed.next()
            if job is not None:
                flight[task.remote(job, where)] = job
                progress.started(job)

        for _ in range(capacity):
            submit()
        while flight:
            ready, _ = ray.wait(list(flight), num_returns=1, timeout=1.0)
            for ref in ready:
                job = flight.pop(ref)
                try:
                    summary = ray.get(ref)
                except Exception as e:  # noqa: BLE001  (worker crash, node lost: one model, not the sweep)
                    summary = record_failure(job, where, f"the Ray task failed: {type(e).__name__}: {e}")
                feed.finish(job)
                progress.finished(job, summary)
                submit()
            progress.total = feed.expected
            progress.tick()
    finally:
        for ref in flight:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()
