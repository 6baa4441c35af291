"""`dsd slurm`: the script it writes, the input it refuses, and a sweep through a real single-node SLURM.

The cluster is started here, as root, in a temporary folder: its own munged (own key and socket) and
its own slurmctld and slurmd on free ports, pointed to by SLURM_CONF; a munged or SLURM already running
on the machine is left alone. Without root, without Debian's slurm-wlm and munge, or when the cluster
is not up within a minute, the cluster test skips and says why.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from dsd import runfolder
from helpers import dsd

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "squeue", "scontrol", "scancel")
START_S = 60.0
# tiny and quick on the CPU: the options every task trains with
TRAIN = ["--dataset", "synthetic", "--epochs", "1", "--batch-size", "32", "--train-images", "64",
         "--eval-images", "64", "--cpu-workers", "1"]


def run_main(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """`dsd ARGS` in this process (torch is imported once for every case): exit code, stdout, stderr."""
    from dsd.cli import main

    monkeypatch.setattr(sys, "argv", ["dsd", *map(str, args)])
    with pytest.raises(SystemExit) as exit_:
        main()
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


def test_dry_run_writes_and_prints_the_script_and_submits_nothing(tiny_run, tmp_path, monkeypatch):
    run = tiny_run(3)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    (tmp_path / "sbatch").write_text(f"#!/bin/sh\ntouch {tmp_path / 'submitted'}\necho 1\n")
    (tmp_path / "sbatch").chmod(0o755)
    (tmp_path / "data").mkdir()  # --data-dir must exist here: every task reads the data from it
    proc = dsd("slurm", run, "--jobs", "4", "--gpus-per-job", "2", "--models-per-gpu", "3", "--time", "1:30:00",
               "--partition", "gpu", "--dry-run", "--", "--epochs", "2", "--no-amp", "--ids", "0-2",
               "--data-dir", "data", cwd=tmp_path, check=True)
    script = (run / "slurm" / "dsd-train.sbatch").read_text()
    assert proc.stdout == script and "nothing submitted" in proc.stderr
    assert not (tmp_path / "submitted").exists()
    for line in ["#!/bin/bash", "#SBATCH --array=0-3", "#SBATCH --gres=gpu:2", "#SBATCH --cpus-per-task=6",
                 "#SBATCH --time=1:30:00", "#SBATCH --partition=gpu", "#SBATCH --requeue",
                 "#SBATCH --open-mode=append", f"#SBATCH --output={run.resolve()}/slurm/%A_%a.out",
                 "set -euo pipefail"]:
        assert line in script.splitlines(), line
    command = script.splitlines()[-1].split()
    assert command[:5] == [sys.executable, "-m", "dsd", "train", str(run.resolve())]
    assert " ".join(command[5:]) == (f"--device cuda --models-per-gpu 3 --epochs 2 --no-amp --ids 0-2 --data-dir "
                                     f"{tmp_path / 'data'}")  # in the user's order, the data folder absolute


def test_the_script_asks_for_no_gpu_on_cpus_and_the_json_names_it(tiny_run, tmp_path):
    run = tiny_run(2)
    proc = dsd("slurm", run, "--jobs", "1", "--dry-run", "--json", "--", "--cpu-workers", "2", cwd=tmp_path,
               check=True)
    summary = json.loads(proc.stdout)
    assert summary["script"] == str(run.resolve() / "slurm" / "dsd-train.sbatch") and summary["job_id"] is None
    assert summary["models"] == 2
    script = Path(summary["script"]).read_text()
    assert "--gres" not in script and "#SBATCH --cpus-per-task=2" in script and "#SBATCH --time" not in script
    assert script.splitlines()[-1].endswith("--device cpu --models-per-gpu 1 --cpu-workers 2")


def test_train_flags_read_back_as_the_options_given():
    """What the script passes to `dsd train` parses back, by dsd train itself, to the options given."""
    from dsd.cli import cluster
    from dsd.training.slurm import train_flags

    options = {"epochs": 2, "lr": 0.05, "dataset": "synthetic", "ids": [0, 3, 7, 8, 9], "amp": False,
               "compile": True, "zero_init_residual": False, "retry_failed": True, "seed": 3, "limit": 4,
               "warmup_epochs": 0.5, "checkpoints": False, "download": False, "save_weights": False}
    _, parsed = cluster.parse_train_args(train_flags(options))
    assert parsed == {k: v for k, v in options.items() if k != "save_weights"}  # at its default: no flag


@pytest.mark.parametrize("args, message", [
    (["--jobs", "0"], "--jobs must be at least 1"),
    (["--jobs", "2", "--gpus-per-job", "-1"], "--gpus-per-job must be at least 0"),
    (["--jobs", "2", "--models-per-gpu", "0"], "--models-per-gpu must be at least 1"),
    (["--jobs", "2", "--cpus-per-job", "0"], "--cpus-per-job must be at least 1"),
    (["--jobs", "2", "--time", "1h"], "--time 1h"),
    (["--jobs", "2", "--time", "1:00:00:00"], "--time 1:00:00:00"),
    (["--jobs", "2", "--partition", "a b"], "--partition 'a b'"),
    (["--jobs", "2", "--", "--epochs", "0"], "--epochs must be positive"),
    (["--jobs", "2", "--", "--dataset", "nope"], "unknown dataset 'nope'"),
    (["--jobs", "2", "--", "--ids", "0,99"], "no model with id 99"),
    (["--jobs", "2", "--", "--device", "cuda"], "--device cuda: dsd slurm sets it"),
    (["--jobs", "2", "--", "--backend", "slurm"], "--backend slurm"),
    (["--jobs", "2", "--", "--backend", "ray"], "--backend ray: every SLURM task trains with the local backend"),
    (["--jobs", "2", "--", "--dataset", "imagefolder:/nonexistent/dsd-images"],
     "--dataset imagefolder:/nonexistent/dsd-images: expected PATH/train and PATH/val"),
    (["--jobs", "2", "--", "--data-dir", "/nonexistent/dsd-data"],
     "--data-dir /nonexistent/dsd-data: no such folder here"),
    (["--jobs", "2", "--", "--no-such-option"], "No such option: --no-such-option"),
    (["--jobs", "2", "--", "--json"], "--json is dsd slurm's own option"),
    (["--jobs", "2"], "SLURM's sbatch was not found"),
])
def test_bad_input_is_one_line_and_writes_nothing(tiny_run, tmp_path, monkeypatch, capsys, args, message):
    run = tiny_run(2)
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))  # no sbatch: only a valid call goes that far
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    code, out, err = run_main(monkeypatch, capsys, "slurm", run, *args)
    assert code == 2 and out == "" and err.startswith("error:") and len(err.strip().splitlines()) == 1, err
    assert message in err, err
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


def fake_sbatch(folder: Path, monkeypatch, body: str) -> None:
    """An sbatch on PATH (and only it) that runs body."""
    folder.mkdir(exist_ok=True)
    (folder / "sbatch").write_text(f"#!/bin/sh\n{body}\n")
    (folder / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", str(folder))


def test_a_script_sbatch_refuses_is_not_left_behind(tiny_run, tmp_path, monkeypatch, capsys):
    run = tiny_run(2)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    fake_sbatch(tmp_path / "bin", monkeypatch, "echo 'sbatch: error: invalid partition specified: gpu' >&2; exit 1")
    code, out, err = run_main(monkeypatch, capsys, "slurm", run, "--jobs", "2")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "sbatch refused" in err and "invalid partition specified" in err and "the script was removed" in err
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before  # no RUN/slurm, no script

    assert run_main(monkeypatch, capsys, "slurm", run, "--jobs", "2", "--dry-run")[0] == 0
    earlier = (run / "slurm" / "dsd-train.sbatch").read_text()
    code, _, err = run_main(monkeypatch, capsys, "slurm", run, "--jobs", "3")
    assert code == 2 and "is the earlier script again" in err, err
    assert (run / "slurm" / "dsd-train.sbatch").read_text() == earlier


def test_a_file_where_the_slurm_folder_goes_is_refused_before_anything_is_written(tiny_run, tmp_path,
                                                                                   monkeypatch, capsys):
    run = tiny_run(2)
    (run / "slurm").write_text("not a folder")
    fake_sbatch(tmp_path / "bin", monkeypatch, f"touch {tmp_path / 'submitted'}; echo 1")
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    code, out, err = run_main(monkeypatch, capsys, "slurm", run, "--jobs", "2")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert f"{run.resolve() / 'slurm'} exists and is not a folder" in err
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before and not (tmp_path / "submitted").exists()


def test_an_image_folder_given_by_path_is_checked_here_and_written_absolute(tiny_run, tmp_path, monkeypatch):
    run = tiny_run(2)
    for split in ("train", "val"):
        for c in range(10):  # the Fashion-MNIST regime's models have 10 outputs
            (tmp_path / "images" / split / f"class{c}").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    import dsd

    summary = dsd.slurm_sweep([run], 1, dry_run=True, dataset="imagefolder:images")
    assert f"--dataset imagefolder:{tmp_path / 'images'}" in Path(summary["script"]).read_text()
    for c in range(3, 10):
        (tmp_path / "images" / "train" / f"class{c}").rmdir()
    with pytest.raises(dsd.BadInput, match="has 3 class folders but the run's models have 10 outputs"):
        dsd.slurm_sweep([run], 1, dry_run=True, dataset="imagefolder:images")


def test_the_sweep_options_are_sweeps_own():
    from dsd.training import slurm, sweep

    assert slurm.SWEEP_OPTIONS is sweep.SWEEP_OPTIONS


def test_the_api_checks_as_the_cli_does(tiny_run):
    import dsd

    run = tiny_run(2)
    with pytest.raises(dsd.BadInput, match="'epoch': dsd train has no such option"):
        dsd.slurm_sweep([run], 2, dry_run=True, epoch=1)
    summary = dsd.slurm_sweep([run], 2, dry_run=True, epochs=1, dataset="synthetic", ids=[1])
    assert summary["models"] == 1 and summary["job_id"] is None
    assert "--epochs 1 --dataset synthetic --ids 1" in Path(summary["script"]).read_text()


def test_runs_must_be_run_folders(tmp_path, monkeypatch, capsys):
    code, _, err = run_main(monkeypatch, capsys, "slurm", tmp_path, "--jobs", "1", "--dry-run")
    assert code == 2 and "not a run folder" in err
    assert not (tmp_path / "slurm").exists()


# ---- a real single-node SLURM -----------------------------------------------------------------------

def why_no_cluster() -> str | None:
    """Why a SLURM cluster cannot be started here, or None."""
    if os.geteuid() != 0:
        return "starting a SLURM cluster needs root (slurmd runs the jobs as their users)"
    missing = [d for d in DAEMONS if shutil.which(d, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin") is None]
    if missing:
        return f"SLURM or munge is not installed ({', '.join(missing)} not found; apt-get install slurm-wlm munge)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_conf(folder: Path, node: str) -> str:
    """A one-node cluster on localhost: no cgroups, no accounting, root runs everything."""
    return "\n".join([
        "ClusterName=dsdtest", f"SlurmctldHost={node}(127.0.0.1)", f"SlurmctldPort={free_port()}",
        f"SlurmdPort={free_port()}", "AuthType=auth/munge", "CredType=cred/munge",
        f"AuthInfo=socket={folder / 'munge.socket'}", "SlurmUser=root", "SlurmdUser=root",
        f"StateSaveLocation={folder / 'state'}", f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}", f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'slurmctld.log'}", f"SlurmdLogFile={folder / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU", "ReturnToService=2", "MpiDefault=none", "MinJobAge=3600",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none", "MailProg=/bin/true",
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory=100 State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""])


class Cluster:
    """slurmctld, slurmd and their munged, each a child process of the test, in one folder."""

    def __init__(self, folder: Path):
        self.folder, self.node = folder, socket.gethostname().split(".")[0]
        self.env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf"),
                    "PATH": f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"}
        self.daemons: list[subprocess.Popen] = []
        self.up = False

    def start(self) -> str | None:
        """Start the daemons; None once the node is idle, else why it is not."""
        for sub in ("state", "spool"):
            (self.folder / sub).mkdir()
        key = self.folder / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        (self.folder / "slurm.conf").write_text(slurm_conf(self.folder, self.node))
        self.spawn("munged", "-F", "--force", f"--socket={self.folder / 'munge.socket'}", f"--key-file={key}",
                   f"--pid-file={self.folder / 'munged.pid'}", f"--seed-file={self.folder / 'munged.seed'}",
                   f"--log-file={self.folder / 'munged.log'}")
        if not self.wait(lambda: (self.folder / "munge.socket").exists(), 10):
            return f"munged did not start: {self.tail('munged.out')}"
        self.spawn("slurmctld", "-D", "-i")
        self.spawn("slurmd", "-D", "-N", self.node)
        self.up = self.wait(lambda: self.slurm("sinfo", "-h", "-n", self.node, "-o", "%T").stdout.strip() == "idle",
                            START_S)
        if self.up:
            return None
        return (f"the single-node SLURM did not come up within {START_S:.0f} s (slurmctld: "
                f"{self.tail('slurmctld.out')}; slurmd: {self.tail('slurmd.out')})")

    def spawn(self, name: str, *args: str) -> None:
        out = open(self.folder / f"{name}.out", "w")
        self.daemons.append(subprocess.Popen([name, *args], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL))

    def slurm(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=30)

    def wait(self, ready, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if ready():
                return True
            if any(d.poll() is not None for d in self.daemons):
                return False
            time.sleep(0.5)
        return False

    def tail(self, name: str) -> str:
        lines = (self.folder / name).read_text().strip().splitlines() if (self.folder / name).exists() else []
        errors = [line for line in lines if "error" in line.lower() or "fatal" in line.lower()]
        return (errors or lines or ["no output"])[-1]

    def stop(self) -> None:
        """Cancel what is left of the test's jobs, then end the daemons (slurmd before its controller)."""
        if self.up:
            self.slurm("scancel", "--user", "root")
            self.wait(lambda: not self.slurm("squeue", "-h").stdout.strip(), 30)
        for daemon in reversed(self.daemons):
            daemon.terminate()
            try:
                daemon.wait(15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def slurm_cluster():
    """A started single-node cluster (its environment: SLURM_CONF), or the test skips with the reason."""
    reason = why_no_cluster()
    if reason:
        pytest.skip(reason)
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="dsd-slurm-")))  # short: socket paths are limited
    try:
        reason = cluster.start()
        if reason:
            pytest.skip(reason)
        yield cluster
    finally:
        cluster.stop()


def array_states(cluster: Cluster, job: str) -> list[str]:
    """'JobState=... ExitCode=...' of each task of an array job (pending tasks may share one record)."""
    shown = cluster.slurm("scontrol", "-o", "show", "job", job).stdout.splitlines()
    return sorted(" ".join(re.findall(r"(?:JobState|ExitCode)=\S+", line)) for line in shown)


def wait_for_array(cluster: Cluster, job: str, tasks: int, timeout: float = 600) -> list[str]:
    """Wait until every task of the array has ended; their states."""
    ended = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")
    done = lambda: len(states := array_states(cluster, job)) == tasks and all(  # noqa: E731
        s.split()[0].split("=")[1] in ended for s in states)
    assert cluster.wait(done, timeout), array_states(cluster, job)
    return array_states(cluster, job)


def submit(cluster: Cluster, run: Path, cwd: Path, *args: str) -> str:
    """`dsd slurm RUN ARGS` on the cluster; the job id it reports."""
    proc = subprocess.run([sys.executable, "-m", "dsd", "slurm", str(run), *args], env=cluster.env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return re.search(r"submitted job (\d+)", proc.stderr).group(1)


def test_a_sweep_submitted_through_sbatch_trains_every_model_once(slurm_cluster, tiny_run, tmp_path):
    n, tasks = 6, 3
    run = tiny_run(n)
    job = submit(slurm_cluster, run, tmp_path, "--jobs", str(tasks), "--time", "10", "--", *TRAIN)
    assert wait_for_array(slurm_cluster, job, tasks) == ["JobState=COMPLETED ExitCode=0:0"] * tasks
    outputs = {p.name: p.read_text() for p in (run / "slurm").glob(f"{job}_*.out")}
    assert sorted(outputs) == [f"{job}_{i}.out" for i in range(tasks)]
    counts = [sum(int(k) for k in re.findall(r"^trained (\d+) models", text, re.M)) for text in outputs.values()]
    rows = runfolder.read_results(run).to_pylist()
    assert sorted(r["model_id"] for r in rows) == list(range(n))  # every model, one row each
    assert {r["status"] for r in rows} == {"done"}
    assert sum(counts) == n, outputs  # trained once: no task trained a model another one did
    assert sum(1 for c in counts if c > 0) >= 2, outputs  # the claims split the models among the tasks
    assert not list((run / "claims").glob("[0-9]*"))  # every claim released


def skip_requeue_delay(cluster: Cluster, task: str) -> bool:
    """Once a requeued task is pending again (after its first run ended), let it start now rather than
    after SLURM's delay of about two minutes."""
    shown = cluster.slurm("scontrol", "-o", "show", "job", task).stdout
    return "JobState=PENDING" in shown and cluster.slurm("scontrol", "update", f"JobId={task}",
                                                         "StartTime=now").returncode == 0


def test_a_requeued_task_resumes_its_model_from_the_checkpoint(slurm_cluster, tiny_run, tmp_path):
    run = tiny_run(2)
    job = submit(slurm_cluster, run, tmp_path, "--jobs", "1", "--",
                 *TRAIN, "--epochs", "3", "--train-images", "256")
    assert slurm_cluster.wait(lambda: list(run.glob("checkpoints/*.pt")), 300)  # an epoch done, then preempted:
    assert slurm_cluster.slurm("scontrol", "requeue", f"{job}_0").returncode == 0
    assert slurm_cluster.wait(lambda: skip_requeue_delay(slurm_cluster, f"{job}_0"), 60)
    assert wait_for_array(slurm_cluster, job, 1) == ["JobState=COMPLETED ExitCode=0:0"]
    output = (run / "slurm" / f"{job}_0.out").read_text()
    assert "DUE TO JOB REQUEUE" in output and output.count("dsd slurm: task 0") == 2, output  # appended
    rows = runfolder.read_results(run).to_pylist()
    assert sorted(r["model_id"] for r in rows) == [0, 1] and {r["status"] for r in rows} == {"done"}
    assert any("resumed from the checkpoint of epoch" in (r["message"] or "") for r in rows), rows
