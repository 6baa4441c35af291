"""SLURM: a sweep as an sbatch job array whose every task is one `dsd train` on the shared run folders.

The array needs no coordination of its own: the claims (dsd.runfolder.claims) split the models among
its tasks as they split them among any processes, and the checkpoints make a requeued or preempted
task resume the model it was training. Everything is checked as `dsd train` checks it (sweep options,
each run's settings, the ids), and the data the tasks will read where its path is given (imagefolder:PATH,
--data-dir), before the script is written; a script sbatch refuses is removed again. The tasks then only
train, each with the local backend on the node SLURM gives it.
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

from dsd.errors import BadInput
from dsd.training.data import SHAPES, locate
from dsd.training.settings import DATA_OPTIONS, FLAGS, PROTOCOL, DataRequest, SweepOptions, TrainSettings
from dsd.training.sweep import SWEEP_OPTIONS, prepare

SLURM_DIR = "slurm"              # RUN/slurm: the script and the tasks' output
SCRIPT_NAME = "dsd-train.sbatch"
# minutes, minutes:seconds, hours:minutes:seconds, days-hours, days-hours:minutes, days-hours:minutes:seconds
TIME_PATTERN = re.compile(r"\d+(:\d{1,2}){0,2}|\d+-\d{1,2}(:\d{1,2}){0,2}")
PARTITION_PATTERN = re.compile(r"[\w.-]+(,[\w.-]+)*")
TRAIN_OPTIONS = SWEEP_OPTIONS | DATA_OPTIONS | FLAGS | set(PROTOCOL) | {"dataset", "ids"}  # train_runs's
# dsd train's defaults: an option at its default needs no flag (and flags like --compile have no --no- form)
DEFAULTS = {f.name: f.default for cls in (DataRequest, TrainSettings, SweepOptions) for f in fields(cls)
            if f.default is not MISSING}


@dataclass(frozen=True)
class SlurmOptions:
    """The job array: how many tasks and what each asks SLURM for."""

    jobs: int                        # array tasks; each trains models until none is left unclaimed
    gpus_per_job: int = 0            # 0: the tasks train on CPUs
    models_per_gpu: int = 1
    cpus_per_job: int | None = None  # None: one per model a task trains at once
    partition: str | None = None
    time_limit: str | None = None    # SLURM's forms: 30, 1:00:00, 2-00:00:00, ...

    @property
    def device(self) -> str:
        return "cuda" if self.gpus_per_job > 0 else "cpu"

    def check(self) -> None:
        """BadInput naming the first option SLURM cannot be asked for."""
        for option, value, least in (("--jobs", self.jobs, 1), ("--gpus-per-job", self.gpus_per_job, 0),
                                     ("--models-per-gpu", self.models_per_gpu, 1),
                                     ("--cpus-per-job", self.cpus_per_job, 1)):
            if value is not None and value < least:
                raise BadInput(f"{option} must be at least {least}, got {value}")
        if self.time_limit is not None and not TIME_PATTERN.fullmatch(self.time_limit):
            raise BadInput(f"--time {self.time_limit}: expected minutes, H:MM:SS or D-HH:MM:SS (e.g. 30, 1:00:00, "
                           f"2-00:00:00)")
        if self.partition is not None and not PARTITION_PATTERN.fullmatch(self.partition):
            raise BadInput(f"--partition {self.partition!r}: expected a partition name (letters, digits, . _ -)")


def slurm_sweep(runs: list[Path], slurm: SlurmOptions, train_options: dict, *, dry_run: bool = False) -> dict:
    """Write RUN/slurm/dsd-train.sbatch (RUN: the first run) and submit it with sbatch, unless dry_run.

    train_options: dsd.training.sweep.train_runs's options (ids included) for every task; device and
    models_per_gpu follow from slurm. Everything is checked before the script is written; with no model
    left to train nothing is written (script None), and a script sbatch refuses is not left behind.
    """
    slurm.check()
    runs = [Path(r).resolve() for r in runs]
    if re.search(r"[\s\"'%\\]", str(runs[0])):  # #SBATCH lines are not shell: no quoting; % is a pattern
        raise BadInput(f"{runs[0]}: SLURM's --output cannot name a folder with spaces, quotes, % or \\ in its path")
    path = runs[0] / SLURM_DIR / SCRIPT_NAME
    check_script_path(path)
    options = task_options(slurm, train_options)
    models = check_train(runs, options)
    sbatch = None if dry_run else find_sbatch()
    summary = {"script": None, "job_id": None, "tasks": slurm.jobs, "models": models, "output": None}
    if models == 0:
        return summary
    undo = write_script(path, sbatch_script(runs, slurm, options))
    try:
        job = None if sbatch is None else submit(sbatch, path)
    except BadInput as e:
        raise BadInput(f"{e}; nothing was submitted, and {undo()}") from None
    return {**summary, "script": str(path), "job_id": job, "output": str(path.parent / "%A_%a.out")}


def check_script_path(path: Path) -> None:
    """BadInput, before anything is written, when RUN/slurm or the script's place is taken by something
    that is not a folder, or not a file."""
    if path.parent.exists() and not path.parent.is_dir():
        raise BadInput(f"{path.parent} exists and is not a folder: dsd slurm writes its script and the tasks' "
                       f"output there (move it away)")
    if path.exists() and not path.is_file():
        raise BadInput(f"{path} exists and is not a file: dsd slurm writes its script there (move it away)")


def write_script(path: Path, text: str):
    """Write the script (and RUN/slurm: sbatch makes no folder for --output); a function that puts back what
    was there before (an earlier script, or nothing) and says what it did."""
    made_folder = not path.parent.exists()
    before = path.read_bytes() if path.is_file() else None
    try:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    except OSError as e:
        raise BadInput(f"{path}: cannot write the script there ({e.strerror or e})") from None

    def undo() -> str:
        if before is not None:
            path.write_bytes(before)
            return f"{path} is the earlier script again"
        path.unlink(missing_ok=True)
        if made_folder:
            try:
                path.parent.rmdir()
            except OSError:
                pass  # something else landed there meanwhile: it stays
        return "the script was removed"

    return undo


def task_options(slurm: SlurmOptions, options: dict) -> dict:
    """The tasks' train options: the device and models per GPU from slurm (a train option that says
    otherwise is refused), relative paths made absolute (a task may start anywhere)."""
    unknown = sorted(set(options) - TRAIN_OPTIONS)
    if unknown:
        raise BadInput(f"{unknown[0]!r}: dsd train has no such option")
    if options.get("backend") not in (None, "local"):
        raise BadInput(f"--backend {options['backend']}: every SLURM task trains with the local backend (worker "
                       f"processes on the node SLURM gives it); give no --backend")
    for name, value in (("device", slurm.device), ("models_per_gpu", slurm.models_per_gpu)):
        if options.get(name) not in (None, value):
            flag = name.replace("_", "-")
            raise BadInput(f"--{flag} {options[name]}: dsd slurm sets it (--{flag} {value}, from --gpus-per-job "
                           f"and --models-per-gpu)")
    options = {**options, "device": slurm.device, "models_per_gpu": slurm.models_per_gpu}
    if options.get("data_dir"):
        options["data_dir"] = str(Path(options["data_dir"]).expanduser().resolve())
    kind, _, folder = (options.get("dataset") or "").partition(":")
    if kind == "imagefolder" and folder:
        options["dataset"] = f"imagefolder:{Path(folder).expanduser().resolve()}"
    return options


def check_train(runs: list[Path], options: dict) -> int:
    """dsd train's own checks (train_runs' first steps), without training; the models left to train."""
    _, settings, jobs = prepare(runs, options.get("ids"), {k: v for k, v in options.items() if k != "ids"})
    for data in dict.fromkeys(s.data for s in settings.values()):
        check_data(data)
    return len(jobs)


def check_data(data: DataRequest) -> None:
    """The data where the tasks will read it from a path given here, checked on this host (the path must
    be one that every node sees): imagefolder:PATH as `dsd train` checks it (its train and val folders,
    its classes), a --data-dir that must exist. A named data set without --data-dir is looked for by each
    task on its own node ($DSD_DATA_DIR, then dsd's cache, downloading it if allowed), not here."""
    if data.kind == "imagefolder":
        locate(data)  # only looks at the folder: an image folder is never downloaded
    elif data.kind in SHAPES and data.data_dir and not Path(data.data_dir).is_dir():
        raise BadInput(f"--data-dir {data.data_dir}: no such folder here; every task would look for {data.kind} "
                       f"there (put the data there first, on a file system that every node sees)")


def train_flags(options: dict) -> list[str]:
    """train_runs' options as `dsd train` flags: --name VALUE, a boolean --name or --no-name, ids 0,3,7-9;
    an option at dsd train's default is left out."""
    flags = []
    for name, value in options.items():
        if value is None or (name in DEFAULTS and DEFAULTS[name] == value):
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else f"--no-{flag[2:]}")
        else:
            flags += [flag, id_ranges(value) if isinstance(value, (list, tuple)) else str(value)]
    return flags


def id_ranges(ids) -> str:
    """[0, 3, 7, 8, 9] -> '0,3,7-9', as --ids takes them (a long range stays short)."""
    parts, ids = [], sorted(set(ids))
    for i in ids:
        if parts and i == parts[-1][1] + 1:
            parts[-1][1] = i
        else:
            parts.append([i, i])
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in parts)


def sbatch_script(runs: list[Path], slurm: SlurmOptions, options: dict) -> str:
    """The array script: SLURM's directives, then `dsd train` with this Python and absolute paths."""
    first = runs[0]
    name = re.sub(r"[^\w.-]+", "-", first.name)
    at_once = slurm.gpus_per_job * slurm.models_per_gpu or options.get("cpu_workers") or 1
    directives = [f"--job-name=dsd-{name}", f"--array=0-{slurm.jobs - 1}",
                  f"--output={first / SLURM_DIR / '%A_%a.out'}", "--open-mode=append", "--requeue",
                  f"--cpus-per-task={slurm.cpus_per_job or at_once}"]
    directives += [f"--gres=gpu:{slurm.gpus_per_job}"] * (slurm.gpus_per_job > 0)
    directives += [f"--partition={slurm.partition}"] * (slurm.partition is not None)
    directives += [f"--time={slurm.time_limit}"] * (slurm.time_limit is not None)
    rest = {k: v for k, v in options.items() if k not in ("device", "models_per_gpu")}
    command = [sys.executable, "-m", "dsd", "train", *map(str, runs), "--device", slurm.device,
               "--models-per-gpu", str(slurm.models_per_gpu), *train_flags(rest)]
    return "\n".join([
        "#!/bin/bash",
        *(f"#SBATCH {d}" for d in directives),
        "# Written by `dsd slurm`. Every task trains the models of the runs that no other task has claimed",
        "# (RUN/claims) and exits when none is left; a requeued task resumes from RUN/checkpoints.",
        "set -euo pipefail",
        'echo "dsd slurm: task ${SLURM_ARRAY_TASK_ID:-none} of job ${SLURM_ARRAY_JOB_ID:-none} on $(hostname)"',
        " ".join(map(shlex.quote, command)),
        ""])


def find_sbatch() -> str:
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise BadInput("SLURM's sbatch was not found on PATH (submit from a SLURM login node, or give --dry-run)")
    return sbatch


def submit(sbatch: str, script: Path) -> str:
    """Submit the script; the job id sbatch --parsable prints ("ID" or "ID;CLUSTER")."""
    try:
        proc = subprocess.run([sbatch, "--parsable", str(script)], capture_output=True, text=True)
    except OSError as e:
        raise BadInput(f"sbatch refused {script}: cannot run {sbatch} ({e.strerror or e})") from None
    found = re.match(r"\s*(\d+)", proc.stdout)
    if proc.returncode != 0 or found is None:
        said = (proc.stderr.strip() or proc.stdout.strip() or f"exit code {proc.returncode}").splitlines()[-1]
        raise BadInput(f"sbatch refused {script}: {said}")
    return found.group(1)
