"""`dsd train` / `dsd status` as a user runs them: resume, kill -9, two processes, faults, Ray, bad input."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsd import runfolder as store
from dsd.runfolder import claim, claim_path, live_claims, release
from helpers import dsd

# small and quick: 3 epochs of 16 steps per model on the synthetic set
FAST = ["--dataset", "synthetic", "--epochs", "3", "--batch-size", "32", "--train-images", "512",
        "--eval-images", "256"]


def result_bytes(run: Path) -> dict[str, bytes]:
    """The bytes of every result file: one per model, and the compacted file `dsd train` ends with."""
    files = sorted((run / store.RESULTS_DIR).glob("*")) + sorted(run.glob(store.COMPACTED_FILE))
    return {p.name: p.read_bytes() for p in files}


def results(run: Path) -> dict[int, dict]:
    return {r["model_id"]: r for r in store.read_results(run).to_pylist()}


def trained_ids(proc) -> list[int]:
    assert proc.returncode == 0, proc.stderr
    return sorted(t["model_id"] for t in json.loads(proc.stdout)["trained"])


def descendants(pid: int) -> set[int]:
    """Pids of every process below pid (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_train_writes_one_valid_row_per_model_and_resumes_to_nothing(tiny_run):
    run = tiny_run(3)
    proc = dsd("train", run, *FAST, "--json")
    assert trained_ids(proc) == [0, 1, 2]
    assert "[3/3]" in proc.stderr  # plain progress lines when stderr is not a terminal
    rows = results(run)
    assert sorted(rows) == [0, 1, 2] and all(r["status"] == "done" for r in rows.values())
    for r in rows.values():
        assert len(r["error_curve"]) == 3 and r["error"] == r["error_curve"][-1]
        assert r["dataset"] == "synthetic" and (r["train_images"], r["eval_images"]) == (512, 256)
        assert r["batch_size"] == 32 and r["lr"] == pytest.approx(0.1 * 32 / 128) and r["host"] and r["versions"]
    assert not list((run / store.CLAIMS_DIR).iterdir())
    before = result_bytes(run)
    again = dsd("train", run, *FAST, "--json")
    assert trained_ids(again) == [] and result_bytes(run) == before
    assert "nothing to train" in again.stderr
    status = json.loads(dsd("status", run, "--json", check=True).stdout)[0]
    assert (status["sampled"], status["done"], status["running"], status["pending"]) == (3, 3, 0, 0)
    assert status["best_error"] == min(r["error"] for r in rows.values())
    table = dsd("status", run, check=True)
    assert "best_error" in table.stderr and table.stdout == ""


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_a_short_fashion_mnist_run_matches_an_independent_evaluation_of_its_weights(tiny_run):
    import torch

    from dsd.training.data import DataRequest, load, locate
    from dsd.design.model import build_model
    from dsd.design.spec import spec_from_row

    run = tiny_run(2)
    # on the CPU: the re-evaluation below is fp32 on the CPU, which a GPU's bf16 evaluation need not match
    proc = dsd("train", run, "--epochs", "3", "--batch-size", "64", "--train-images", "2000",
               "--eval-images", "500", "--save-weights", "--device", "cpu", "--json")
    assert trained_ids(proc) == [0, 1]
    data = load(locate(DataRequest("fashion-mnist", 28, 1, 10, download=False, train_images=2000, eval_images=500)))
    x = (data.eval_x.float() - data.mean.view(1, -1, 1, 1)) / data.std.view(1, -1, 1, 1)
    for spec_row in store.read_models(run).to_pylist():
        row = results(run)[spec_row["model_id"]]
        assert row["status"] == "done" and row["dataset"] == "fashion-mnist" and row["error"] < 50
        model = build_model(spec_from_row(spec_row))
        model.load_state_dict(torch.load(run / "weights" / f"{spec_row['model_id']}.pt"))
        with torch.no_grad():
            wrong = (model.eval()(x).argmax(1) != data.eval_y).sum().item()
        assert row["error"] == pytest.approx(100 * wrong / 500)


def test_limit_and_ids_choose_the_models(tiny_run):
    run = tiny_run(4)
    assert trained_ids(dsd("train", run, *FAST, "--ids", "1,3", "--json")) == [1, 3]
    assert trained_ids(dsd("train", run, *FAST, "--limit", "1", "--json")) == [0]
    status = json.loads(dsd("status", run, "--json").stdout)[0]
    assert (status["done"], status["pending"]) == (3, 1) and status["mixed_settings"] == {}
    shorter = [a if a != "3" else "2" for a in FAST]
    assert trained_ids(dsd("train", run, *shorter, "--ids", "2", "--json")) == [2]
    assert json.loads(dsd("status", run, "--json").stdout)[0]["mixed_settings"] == {"epochs": [2, 3]}
    assert "trained under different settings (epochs: 2, 3)" in dsd("status", run).stderr
    assert "trained under different settings (epochs: 2, 3)" in dsd("edf", run).stderr


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds worker processes through /proc")
def test_kill_9_loses_nothing_and_leaves_no_workers_or_partial_files(tiny_run):
    run = tiny_run(6)
    slow = [a if a != "3" else "6" for a in FAST]  # 6 epochs: the kill lands while models train
    proc = subprocess.Popen([sys.executable, "-m", "dsd", "train", str(run), *slow],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list((run / store.RESULTS_DIR).glob("*.parquet")) and time.time() < deadline:
        time.sleep(0.02)
    workers = descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = result_bytes(run)
    finished_rows = results(run)
    assert 1 <= len(finished) < 6, "the kill should land in the middle of the run"
    assert workers, "dsd train should have started a worker process"
    deadline = time.time() + 10
    while any(alive(p) for p in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in workers), "workers outlived their killed parent"
    assert result_bytes(run) == finished, "a worker wrote after its parent was killed"
    assert list((run / store.CLAIMS_DIR).iterdir()), "the killed run left its claim behind"

    rerun = dsd("train", run, *slow, "--json")
    done_before = {int(name.split(".")[0]) for name in finished}
    assert trained_ids(rerun) == sorted(set(range(6)) - done_before)  # the dead claim was taken over
    after = results(run)
    assert sorted(after) == list(range(6)) and not list(run.rglob("*.tmp"))
    assert all(after[i] == row for i, row in finished_rows.items())  # compacted, unchanged
    assert all(r["status"] == "done" for r in after.values())
    assert not list((run / store.CLAIMS_DIR).iterdir())
    assert not list((run / "checkpoints").iterdir())  # every model finished, so none is kept


def test_sigterm_releases_the_claims_so_a_requeued_task_elsewhere_takes_them_at_once(tiny_run):
    run = tiny_run(2)
    slow = [a if a != "3" else "20" for a in FAST]
    proc = subprocess.Popen([sys.executable, "-m", "dsd", "train", str(run), *slow, "--device", "cpu"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list((run / "checkpoints").glob("*.pt")) and time.time() < deadline:
        time.sleep(0.05)
    assert list((run / store.CLAIMS_DIR).iterdir()), "the model should be claimed while it trains"
    proc.send_signal(signal.SIGTERM)  # as SLURM preempts a task
    assert proc.wait(timeout=30) != 0 and "interrupted" in proc.stderr.read()
    assert not list((run / store.CLAIMS_DIR).iterdir()), "a terminated dsd train left its claims"
    assert list((run / "checkpoints").glob("*.pt")), "the checkpoint stays for the task that resumes"


def test_two_processes_on_one_run_train_every_model_once(tiny_run):
    run = tiny_run(6)
    cmd = [sys.executable, "-m", "dsd", "train", str(run), *FAST, "--json"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    ids = [sorted(t["model_id"] for t in json.loads(out)["trained"]) for out, _ in outs]
    assert sorted(ids[0] + ids[1]) == list(range(6)), ids
    assert sorted(results(run)) == list(range(6))


def test_diverged_failed_and_crashed_models_do_not_stop_the_sweep(tiny_run):
    run = tiny_run(5)
    env = {**os.environ, "DSD_FAULTS": "1:nan,2:raise,3:crash"}
    proc = subprocess.run([sys.executable, "-m", "dsd", "train", str(run), *FAST, "--json"], env=env,
                          capture_output=True, text=True, timeout=300)
    summary = json.loads(proc.stdout)
    assert proc.returncode == 0 and (summary["done"], summary["diverged"], summary["failed"]) == (2, 1, 2)
    rows = results(run)
    assert [rows[i]["status"] for i in range(5)] == ["done", "diverged", "failed", "failed", "done"]
    assert "fault injected" in rows[2]["message"] and "RuntimeError" in rows[2]["message"]
    assert "worker process died" in rows[3]["message"]
    assert "NaN" in rows[1]["message"] or "nan" in rows[1]["message"]
    kept = {k: v for k, v in result_bytes(run).items() if k in ("0.parquet", "4.parquet")}

    retry = dsd("train", run, *FAST, "--retry-failed", "--json")  # without the faults this time
    assert trained_ids(retry) == [1, 2, 3]
    rows = results(run)
    assert all(rows[i]["status"] == "done" for i in range(5))
    assert all(result_bytes(run)[k] == v for k, v in kept.items())


def test_a_model_killed_mid_training_resumes_from_its_last_epoch(tiny_run):
    run, clean = tiny_run(3), tiny_run(3)  # the same models
    cpu = [*FAST, "--device", "cpu"]  # curves of two processes are bit-identical on the CPU (README: reproducibility)
    env = {**os.environ, "DSD_FAULTS": "1:crash@2"}  # model 1's worker dies after epoch 2 of 3
    subprocess.run([sys.executable, "-m", "dsd", "train", str(run), *cpu], env=env, capture_output=True, timeout=300)
    assert results(run)[1]["status"] == "failed" and (run / "checkpoints" / "1.pt").is_file()

    assert trained_ids(dsd("train", run, *cpu, "--retry-failed", "--json")) == [1]
    assert trained_ids(dsd("train", clean, *cpu, "--ids", "1", "--json")) == [1]
    resumed, whole = results(run)[1], results(clean)[1]
    assert resumed["status"] == "done" and resumed["message"] == "resumed from the checkpoint of epoch 2"
    assert resumed["error_curve"] == whole["error_curve"] and resumed["loss_curve"] == whole["loss_curve"]
    assert not list((run / "checkpoints").iterdir()) and not list((clean / "checkpoints").iterdir())


def test_claims_are_exclusive_and_dead_owners_are_taken_over(tmp_path):
    run = tmp_path
    assert claim(run, 0) and not claim(run, 0)  # held by a live process (this one)
    assert live_claims(run) == {0}
    release(run, 0)
    assert not claim_path(run, 0).exists() and live_claims(run) == set()

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    for owner, takeable in [({"host": host, "pid": dead.pid, "heartbeat": time.time()}, True),
                            ({"host": "elsewhere", "pid": 1, "heartbeat": time.time()}, False),
                            ({"host": "elsewhere", "pid": 1, "heartbeat": time.time() - 3600}, True),
                            ({"host": host, "pid": os.getpid(), "heartbeat": time.time()}, False)]:
        claim_path(run, 5).write_text(json.dumps(owner))
        assert claim(run, 5) is takeable, owner
        assert json.loads(claim_path(run, 5).read_text())["pid"] == (os.getpid() if takeable else owner["pid"])
        claim_path(run, 5).unlink()
    assert not [p for p in (run / store.CLAIMS_DIR).iterdir()]  # no takeover token or temp file left


def test_bad_input_exits_2_and_changes_nothing(tiny_run, tmp_path, monkeypatch, capsys):
    from dsd.cli import main

    run = tiny_run(2)
    cifar_run = tiny_run(1, regime="cifar", flops=":20M")
    listing = lambda r: sorted(str(p.relative_to(r)) for p in r.rglob("*"))  # noqa: E731
    before = {r: listing(r) for r in (run, cifar_run)}
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("DSD_DATA_DIR", str(tmp_path / "empty"))
    cases = [
        ([cifar_run, "--dataset", "cifar10", "--no-download"], "cifar-10-python.tar.gz"),
        ([run, "--dataset", "cifar10"], "1x28x28"),
        ([run, "--dataset", "mnist"], "unknown dataset"),
        ([run, "--ids", "7"], "no model with id 7"),
        ([run, "--ids", "x"], "--ids"),
        ([run, "--dataset", "synthetic", "--train-images", "10"], "less than one batch"),
        ([run, "--device", "tpu"], "--device"),
        ([run, "--device", "cuda:7"], "--device cuda:7"),
        ([run, "--dataset", "synthetic", "--eval-images", "0"], "--eval-images must be positive"),
        ([run, "--seed", "-1"], "--seed"),
        ([run, "--backend", "slurm"], "--backend"),
        ([run, "--ids", "5-2"], "--ids 5-2"),
        ([run, "--limit", "0"], "--limit must be at least 1"),
        ([run, "--loader-workers", "-1"], "--loader-workers must be at least 0"),
        ([run, "--cpu-workers", "0"], "--cpu-workers must be at least 1"),
        ([run, "--ray-address", "auto"], "needs --backend ray"),
        ([tmp_path / "nowhere"], "no such run folder"),
    ]
    for args, message in cases:
        monkeypatch.setattr(sys, "argv", ["dsd", "train", *map(str, args)])
        with pytest.raises(SystemExit) as exit_:
            main()
        err = capsys.readouterr().err
        assert exit_.value.code == 2, (args, err)
        assert message in err and len(err.strip().splitlines()) == 1, (args, err)
    assert {r: listing(r) for r in (run, cifar_run)} == before


def test_a_corrupt_result_file_is_bad_input_not_a_finished_model(tiny_run):
    run = tiny_run(2)
    (run / store.RESULTS_DIR).mkdir()
    for name, content in (("1.parquet", b"garbage"), ("0.parquet", b"")):
        (run / store.RESULTS_DIR / name).write_bytes(content)
    proc = dsd("train", run, *FAST)
    assert proc.returncode == 2 and "0.parquet" in proc.stderr and "delete it" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert result_bytes(run) == {"0.parquet": b"", "1.parquet": b"garbage"}
    assert not (run / store.CLAIMS_DIR).exists() or not list((run / store.CLAIMS_DIR).iterdir())


def test_a_malformed_run_yaml_is_named_with_its_line(tiny_run):
    run = tiny_run(1)
    (run / store.RUN_FILE).write_text("space: RegNetX\nregime: {name: fashion\nseed: 0\n")
    for command in ("status", "train"):
        proc = dsd(command, run)
        assert proc.returncode == 2 and "run.yaml: not valid YAML (line 3" in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_written_files_are_readable_by_others_as_the_umask_allows(tiny_run):
    run = tiny_run(1)
    proc = subprocess.run([sys.executable, "-m", "dsd", "train", str(run), *FAST], capture_output=True, text=True,
                          timeout=300, preexec_fn=lambda: os.umask(0o027))
    assert proc.returncode == 0, proc.stderr
    # not mkstemp's 0600; the result was gathered into the compacted file when the sweep ended
    assert ((run / store.COMPACTED_FILE).stat().st_mode & 0o777) == 0o640


def test_slots_spread_round_robin(monkeypatch):
    import torch

    from dsd.training.devices import slots_for

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    first = slots_for("cuda", models_per_gpu=4)[:16]  # 16 models at K = 4 on 8 GPUs: the slots a sweep uses
    assert sorted({device for device, _ in first}) == [f"cuda:{i}" for i in range(8)]
    assert all(sum(d == f"cuda:{i}" for d, _ in first) == 2 for i in range(8))


def test_slots_give_k_models_to_every_gpu_or_split_the_cpu_cores(monkeypatch):
    import torch

    from dsd.training.devices import slots_for

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # the machine's cores; the process may use 16 of them
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert slots_for("cuda", models_per_gpu=3) == [("cuda:0", 2), ("cuda:1", 2)] * 3
    assert slots_for("cuda:1", models_per_gpu=2) == [("cuda:1", 4)] * 2  # at most 4 threads per slot
    assert slots_for("cpu", cpu_workers=4) == [("cpu", 4)] * 4
    assert slots_for("cpu") == [("cpu", 16)]


@pytest.mark.cuda
def test_several_models_per_gpu(tiny_run):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    run = tiny_run(4)
    proc = dsd("train", run, *FAST, "--device", "cuda", "--models-per-gpu", "2", "--json")
    assert trained_ids(proc) == [0, 1, 2, 3]
    rows = results(run)
    assert all(r["status"] == "done" and r["device"].startswith("cuda:") for r in rows.values())
    assert all(r["error"] < 85 for r in rows.values())


def test_a_result_written_before_the_worker_died_is_not_replaced_by_failed(tiny_run):
    from dsd import runfolder as store
    from dsd.training.jobs import plan, record_failure, run_settings

    run = tiny_run(2)
    job = plan(run, run_settings(run, dataset="synthetic"))[0]
    store.write_result(run, {"model_id": job.model_id, "status": "done", "error": 12.5})
    before = store.result_path(run, job.model_id).read_bytes()
    summary = record_failure(job, "cpu", "the worker process died")
    assert summary["status"] == "done" and store.result_path(run, job.model_id).read_bytes() == before
    other = plan(run, run_settings(run, dataset="synthetic"))[0]
    assert record_failure(other, "cpu", "the worker process died")["status"] == "failed"


def test_mixed_settings_compare_values_and_read_missing_as_one():
    nan = float("nan")
    rows = [{"status": "done", "epochs": 3.0, "train_images": nan, "lr": 0.1},
            {"status": "done", "epochs": 3, "train_images": None, "lr": 0.1},
            {"status": "failed", "epochs": 1, "lr": 0.5}]
    assert store.mixed_settings(rows) == {}  # a failed model trained nothing to compare
    rows.append({"status": "done", "epochs": 2, "train_images": 500, "lr": 0.1})
    assert store.mixed_settings(rows) == {"epochs": [2, 3.0], "train_images": [500, None]}
