"""`dsd train --backend ray`: long-lived actors per slot, no disk shared with the driver, the real device.

One local Ray instance serves the module: 2 CPUs, and one GPU that is only declared (there is none
here), seen by Ray as GPU 5 of its node. Only the GPU tests ask for it; every run trains on the CPU.
Models 6 and 7 of any run carry injected faults (dsd.training.faults) in every Ray worker, so the other
tests train ids 0..5 only.
"""
from __future__ import annotations

import io
import os
import socket
from pathlib import Path

import pytest

from dsd import runfolder as store
from dsd.errors import BadInput
from dsd.training import ray_backend
from dsd.training.jobs import Feed, plan, run_settings
from dsd.training.progress import Progress
from dsd.training.ray_backend import RAY_RESOURCE_UNITS, Trainer, device_label, gpu_fraction, run_ray
from dsd.training.sweep import train_runs

ray = pytest.importorskip("ray")

FAULTS = "6:cuda,7:crash"  # model 6: a fatal CUDA error (its actor must retire); model 7: its actor dies
TINY = {"dataset": "synthetic", "epochs": 1, "batch_size": 32, "train_images": 64, "eval_images": 32}


@pytest.fixture(scope="module")
def ray_instance():
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CUDA_VISIBLE_DEVICES", "5")  # Ray's processes inherit it: the declared GPU is the node's GPU 5
        ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"DSD_FAULTS": FAULTS}})
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
def spy(monkeypatch):
    """Records the driver's view of its actors: every actor started, and the pid of the actor that
    trained each model (from the actor's reply: os.getpid() there, after training)."""
    seen = {"starts": 0, "trained_by": {}}
    start, write_reply = ray_backend.Slot.start, ray_backend.write_reply

    def counting_start(slot):
        seen["starts"] += 1
        start(slot)

    def recording_write(job, reply):
        seen["trained_by"][job.model_id] = reply["worker"]["pid"]
        return write_reply(job, reply)

    monkeypatch.setattr(ray_backend.Slot, "start", counting_start)
    monkeypatch.setattr(ray_backend, "write_reply", recording_write)
    return seen


def train(runs, **options):
    return train_runs(runs, backend="ray", device="cpu", progress=Progress(0, stream=io.StringIO()),
                      **{**TINY, **options})


def results(run: Path) -> dict[int, dict]:
    return {r["model_id"]: r for r in store.read_results(run).to_pylist()}


def hidden_from_others(folder: Path) -> Path:
    """A path to folder that only this process can follow: /proc/self/fd/N/NAME, where fd N is this
    process's open handle on folder's parent. Any other process resolves it through its own fd N
    (absent, or another file), so whatever it tries there, stat, open, pyarrow or torch, fails."""
    fd = os.open(folder.parent, os.O_RDONLY | os.O_DIRECTORY)
    return Path(f"/proc/self/fd/{fd}") / folder.name


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="hides the run folder through /proc/self/fd")
def test_ray_tasks_need_no_shared_disk(ray_instance, tiny_run):
    """The actors cannot reach the run folder: the driver knows it only by a /proc/self/fd path that
    means the folder in this process alone (hidden_from_others; a Ray task checks that it is hidden).
    So every row, weights file and claim must be the driver's work: an actor that wrote a row, a
    checkpoint or weights into the run folder would fail and its models would be recorded as failed."""
    folder = tiny_run(3)
    stale = store.checkpoint_path(folder, 0)  # a checkpoint of an earlier local run: gone once model 0 is done
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"old")
    run = hidden_from_others(folder)
    try:
        assert run.is_dir() and not ray.get(ray.remote(os.path.exists).remote(str(run)))
        summary = train([run], save_weights=True)
        assert sorted(t["model_id"] for t in summary["trained"]) == [0, 1, 2]
        rows = results(run)
        assert all(r["status"] == "done" and len(r["error_curve"]) == 1 for r in rows.values()), rows
        assert sorted(p.name for p in (folder / store.WEIGHTS_DIR).iterdir()) == ["0.pt", "1.pt", "2.pt"]
        assert not stale.exists() and not list((folder / store.CLAIMS_DIR).iterdir())
        assert train([run])["trained"] == []  # resumes to nothing
    finally:
        os.close(int(run.parent.name))


def test_ray_actor_per_slot(ray_instance, tiny_run, spy):
    """One actor per slot (2 CPUs: 2 actors), each training model after model in its one process: the
    6 models are trained by 2 pids (each model's is os.getpid() in its actor, after training). How many
    each trains depends on which starts first, so only the total is checked."""
    run = tiny_run(6)
    train([run])
    assert all(r["status"] == "done" for r in results(run).values())
    pids = spy["trained_by"]
    assert sorted(pids) == list(range(6)) and spy["starts"] == 2
    assert len(set(pids.values())) == 2, pids


def test_ray_retired_or_dead_actor_costs_one_model_and_is_replaced(ray_instance, tiny_run, spy):
    """A fatal CUDA error (model 6) and an actor killed mid-model (model 7; as when its node is lost):
    each costs its model, recorded as failed by the driver, and its actor, replaced by a fresh one
    (four actors started for two slots); the retired actor trains nothing more."""
    run = tiny_run(8)
    train([run], ids=[6, 7, 0, 1, 2, 3])  # the faulty models first, so that fresh actors train the rest
    rows = results(run)
    assert rows[6]["status"] == "failed" and "CUDA error" in rows[6]["message"]
    assert rows[7]["status"] == "failed" and "Ray actor" in rows[7]["message"] and "died" in rows[7]["message"]
    assert all(rows[i]["status"] == "done" for i in range(4)), rows
    assert spy["starts"] == 4
    retired = spy["trained_by"][6]
    assert retired not in [spy["trained_by"][i] for i in range(4)]
    assert not list((run / store.CLAIMS_DIR).iterdir())


def test_ray_node_without_the_data_stops_the_sweep(ray_instance, tiny_run):
    """Each actor finds the data on its own node (on a cluster the driver does not look): one that
    cannot stops the sweep with BadInput naming its host, and the model keeps no row and no claim."""
    run = tiny_run(1)
    jobs = plan(run, run_settings(run, dataset="cifar10", epochs=1))  # not located: as on a cluster
    feed = Feed(jobs)
    try:
        with pytest.raises(BadInput, match=f"^{socket.gethostname()}: cifar10 has 3x32x32 images"):
            run_ray(feed, Progress(1, stream=io.StringIO()), device="cpu")
    finally:
        feed.close()
    assert not results(run) and not list((run / store.CLAIMS_DIR).iterdir())


def test_ray_gpu_fractions_add_up(ray_instance):
    """K actors of gpu_fraction(K) fit on one GPU for K = 1..8, whether Ray truncates a fraction to its
    units of 1e-4 or rounds it to the nearest (as some versions do: 1/6 becomes 0.1667 and six exceed
    one GPU), and no K+1-th fits (so K per GPU is the slot count). Ray's own accounting is checked with
    placement groups of K such bundles on the declared GPU (no process started)."""
    from ray.util.placement_group import placement_group, remove_placement_group

    assert RAY_RESOURCE_UNITS == ray._raylet.RESOURCE_UNIT_SCALING
    for k in range(1, 9):
        fraction = gpu_fraction(k)
        units = fraction * RAY_RESOURCE_UNITS
        assert k * int(units) <= RAY_RESOURCE_UNITS and k * int(units + 0.5) <= RAY_RESOURCE_UNITS, k
        assert (k + 1) * fraction > 1, k
        group = placement_group([{"GPU": fraction}] * k)
        try:
            assert ray.wait([group.ready()], timeout=30)[0], k
        finally:
            remove_placement_group(group)


def test_ray_rows_name_the_real_device(ray_instance, monkeypatch):
    """Rows name the GPU of the node Ray gave the actor (cuda:5 here), not torch's cuda:0 inside it.
    The name is checked with torch's CUDA calls patched (there is no GPU), and in a real actor holding
    a share of the declared GPU 5 (whose name then has no card in it)."""
    import torch

    monkeypatch.setattr(ray, "get_gpu_ids", lambda: ["5"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "NVIDIA H200")
    assert device_label("cuda") == "cuda:5 (NVIDIA H200)"
    assert device_label("cpu") == f"cpu ({torch.get_num_threads()} threads)"

    actor = ray.remote(Trainer).options(num_gpus=gpu_fraction(4), num_cpus=0).remote()
    try:
        assert ray.get(actor.where.remote())["device"].startswith("cuda:5 ")
    finally:
        ray.kill(actor)
