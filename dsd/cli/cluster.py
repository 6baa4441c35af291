"""Cluster commands: `dsd slurm` (a sweep as a SLURM job array whose every task is `dsd train`)."""

from typing import List, Optional

import typer

from dsd.cli import training
from dsd.cli.common import JSON, app, emit_json, say
from dsd.errors import BadInput

# what the tasks train by: `dsd train`'s own arguments, parsed by `dsd train` itself
TRAIN_ARGS = typer.Argument(None, metavar="RUN... [TRAIN OPTIONS]", show_default=False,
                            help="Run folders and `dsd train` options, as `dsd train` takes them (after -- if you "
                                 "like); every task trains with them.")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def slurm(
    train_args: Optional[List[str]] = TRAIN_ARGS,
    jobs: int = typer.Option(..., help="Tasks in the job array; each trains models until none is left."),
    gpus_per_job: int = typer.Option(0, help="GPUs per task (--gres=gpu:G); 0 trains on CPUs."),
    models_per_gpu: int = typer.Option(1, help="Models each task trains at once on each of its GPUs."),
    cpus_per_job: Optional[int] = typer.Option(None, help="CPUs per task (default: one per model it trains at "
                                                          "once)."),
    partition: Optional[str] = typer.Option(None, help="SLURM partition (default: the cluster's)."),
    time_limit: Optional[str] = typer.Option(None, "--time", help="Time limit per task, e.g. 30, 1:00:00, "
                                                                  "2-00:00:00 (default: the partition's)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Write and print the script; submit nothing."),
    json_out: bool = JSON,
):
    """Train runs on a SLURM cluster: write an sbatch job-array script into the (first) run folder,
    RUN/slurm/dsd-train.sbatch, and submit it.

    Every task runs `dsd train` on the shared run folders: the claims split the models among the
    tasks, and a requeued or preempted task resumes its model from the last checkpoint. The run folders
    and the data must be on a file system every node sees. The train options are checked here, as
    `dsd train` checks them, before anything is written; their device (cuda with --gpus-per-job, else
    cpu) and --models-per-gpu are set by dsd slurm, and every task trains with the local backend (no
    --backend). Data given by path (imagefolder:PATH, --data-dir) is checked here too; a named data set
    without --data-dir is looked for by each task on its node. A script sbatch refuses is removed again.
    Each task's output: RUN/slurm/JOB_TASK.out.

    \b
    Examples:
      dsd slurm runs/xa --jobs 8 --gpus-per-job 1 --models-per-gpu 4 --time 4:00:00 -- --dataset cifar10
      dsd slurm runs/xa runs/regnetx --jobs 4 --partition cpu --cpus-per-job 8 -- --epochs 3
      dsd slurm runs/xa --jobs 2 --dry-run            # print the script, submit nothing
    """
    from dsd.api import slurm_sweep

    runs, options = parse_train_args(train_args or [])
    summary = slurm_sweep(runs, jobs, gpus_per_job=gpus_per_job, models_per_gpu=models_per_gpu,
                          cpus_per_job=cpus_per_job, partition=partition, time_limit=time_limit, dry_run=dry_run,
                          **options)
    if json_out:
        emit_json(summary)
    elif summary["script"] is None:
        say("nothing to train: every chosen model has a result (--retry-failed trains failed and diverged ones "
            "again); nothing written or submitted")
    elif dry_run:
        print(open(summary["script"]).read(), end="")
        say(f"wrote {summary['script']} (dry run, nothing submitted: `sbatch {summary['script']}` submits it)")
    else:
        say(f"wrote {summary['script']}")
        say(f"submitted job {summary['job_id']}: {jobs} tasks for {summary['models']} models to train; "
            f"their output goes to {summary['output']}")


def parse_train_args(args: list[str]) -> tuple[list | None, dict]:
    """`dsd train`'s arguments parsed by `dsd train` itself: the runs, and the options given (as
    train_runs takes them); an option left out keeps its default in the tasks too."""
    command = typer.main.get_command(app).commands["train"]
    ctx = command.make_context("dsd train", list(args))
    given = {k: v for k, v in ctx.params.items() if ctx.get_parameter_source(k).name == "COMMANDLINE"}
    if "json_out" in given:
        raise BadInput("--json is dsd slurm's own option: give it before --")
    runs = given.pop("runs", None) or None
    if "compile_model" in given:
        given["compile"] = given.pop("compile_model")
    if "ids" in given:
        given["ids"] = training.parse_ids(given["ids"])
    return runs, given
