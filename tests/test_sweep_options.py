"""Options of `dsd train` checked once and up front, the device honoured by both backends, and workers
that never outlive their parent, start-up included."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsd.errors import BadInput
from dsd.training.settings import SweepOptions
from helpers import dsd
from test_scheduler import FAST, alive, descendants, results, trained_ids


def is_worker(pid: int) -> bool:
    """A spawned training worker (not multiprocessing's resource tracker)."""
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def run_main(monkeypatch, capsys, *args) -> tuple[int, str]:
    from dsd.cli import main

    monkeypatch.setattr(sys, "argv", ["dsd", "train", *map(str, args)])
    with pytest.raises(SystemExit) as exit_:
        main()
    return exit_.value.code, capsys.readouterr().err


def test_ids_are_checked_before_any_data_set_is_looked_for(tiny_run, tmp_path, monkeypatch, capsys):
    from dsd.training import data

    run = tiny_run(2)
    monkeypatch.setattr(data, "DEBIAN_FASHION", tmp_path / "no-debian-package")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("DSD_DATA_DIR", str(tmp_path / "empty"))
    code, err = run_main(monkeypatch, capsys, run, "--no-download")
    assert code == 2 and "fashion-mnist not found" in err  # no data set on this "machine"
    code, err = run_main(monkeypatch, capsys, run, "--no-download", "--ids", "7")
    assert code == 2 and "no model with id 7" in err, err


def test_sweep_options_name_the_bad_one():
    for options, message in [({"backend": "slurm"}, "--backend slurm"), ({"device": "tpu"}, "--device tpu"),
                             ({"device": "cuda:x"}, "--device cuda:x"), ({"cpu_workers": 0}, "--cpu-workers"),
                             ({"ray_address": "auto"}, "needs --backend ray"),
                             ({"backend": "ray", "ray_address": "auto", "device": "cuda:1"}, "a GPU of this machine")]:
        with pytest.raises(BadInput, match=message):
            SweepOptions(**options).check()
    SweepOptions(backend="ray", ray_address="auto", device="cuda").check()


def test_a_local_ray_instance_sees_only_the_gpu_asked_for(monkeypatch):
    from dsd.training.ray_backend import visible_gpus

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpus("cuda:2", None) == "2"
    assert visible_gpus("cuda", None) is None and visible_gpus("cpu", None) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert visible_gpus("cuda:1", None) == "6"  # torch's cuda:1 is the second visible GPU
    assert visible_gpus("cuda:1", "auto") is None  # a cluster's GPUs are its own


def test_ray_backend_refuses_a_bad_device_and_trains_on_the_one_asked_for(tiny_run):
    pytest.importorskip("ray")
    import torch

    run = tiny_run(2)
    listing = sorted(p.name for p in run.rglob("*"))
    bad = [["--device", "foo"], ["--device", "cuda:3", "--ray-address", "auto"]]
    if not torch.cuda.is_available():
        bad.append(["--device", "cuda"])  # a local instance has only this machine's devices
    for args in bad:
        proc = dsd("train", run, *FAST, "--backend", "ray", *args)
        assert proc.returncode == 2 and f"--device {args[1]}" in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in run.rglob("*")) == listing  # nothing written
    assert trained_ids(dsd("train", run, *FAST, "--backend", "ray", "--device", "cpu", "--json", timeout=300)) == [0, 1]
    assert all(r["device"].startswith("cpu") for r in results(run).values())


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds worker processes through /proc")
def test_workers_killed_parent_during_start_up_leaves_none_alive(tiny_run):
    run = tiny_run(4)
    proc = subprocess.Popen([sys.executable, "-m", "dsd", "train", str(run), *FAST, "--cpu-workers", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, workers = time.time() + 60, set()
    while len(workers) < 2 and time.time() < deadline and proc.poll() is None:
        workers |= descendants(proc.pid)
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)  # while the workers are still importing and setting up
    proc.wait()
    assert workers, "dsd train should have started its workers"
    assert not list((run / "results").glob("*.parquet")), "the kill should land before any model finished"
    time.sleep(3)
    assert not [p for p in workers if alive(p)], "workers outlived their killed parent by 3 s"
    time.sleep(1)
    assert not [p.name for p in run.rglob("*.tmp")]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds worker processes through /proc")
def test_fatal_cuda_error_retires_worker(tiny_run):
    run = tiny_run(4)
    env = {**os.environ, "DSD_FAULTS": "1:cuda"}  # model 1 raises what torch raises after a fatal CUDA error
    proc = subprocess.Popen([sys.executable, "-m", "dsd", "train", str(run), *FAST, "--cpu-workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    workers = set()
    while proc.poll() is None:
        workers |= {p for p in descendants(proc.pid) if is_worker(p)}
        time.sleep(0.02)
    assert proc.returncode == 0, proc.stderr.read()
    rows = results(run)
    assert [rows[i]["status"] for i in range(4)] == ["done", "failed", "done", "done"]
    assert "illegal memory access" in rows[1]["message"]
    assert len(workers) == 2, "after a fatal CUDA error the slot's worker should be replaced by a fresh one"


def test_out_of_memory_is_not_a_fatal_gpu_error():
    from dsd.training.devices import is_fatal_gpu_error

    assert is_fatal_gpu_error(RuntimeError("CUDA error: device-side assert triggered"))
    assert not is_fatal_gpu_error(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not is_fatal_gpu_error(ValueError("shapes do not match"))
