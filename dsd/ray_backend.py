"""`dsd train --backend ray`: every model a Ray task, with the claims, results and resume of the local backend.

This process (the driver) claims each model before submitting it and keeps only as many tasks in flight
as the cluster can run at once, so other `dsd train` processes or drivers can share the run. A task
trains where Ray puts it (1/K of a GPU when the cluster has GPUs, so K small models share one; else one
CPU) and writes its result row into the run folder, which must be on a file system every node sees, as
must the data set (or each node finds its own copy: --data-dir, $DSD_DATA_DIR, Debian's package).
"""
from __future__ import annotations

from dsd.errors import BadInput
from dsd.scheduler import Feed, record_failure, run_job
from dsd.train import setup_process


def ray_task(job, device: str) -> dict:
    """Body of one Ray task: as many CPU threads as Ray gave it, then train and write the result."""
    import ray

    threads = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)) or 1
    setup_process(device, threads)
    return run_job(job, device)


def run_ray(feed: Feed, progress, *, device: str, models_per_gpu: int = 1, address: str | None = None) -> None:
    """Train the feed's jobs as Ray tasks on a local instance (address None) or a cluster ("auto", host:port)."""
    try:
        import ray
    except ImportError:
        raise BadInput("--backend ray needs Ray: pip install 'dsd[ray]'") from None
    if not feed.expected:
        return
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    flight = {}
    try:
        resources = ray.cluster_resources()
        gpus = resources.get("GPU", 0) if device != "cpu" else 0
        if device.startswith("cuda") and not gpus:
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
