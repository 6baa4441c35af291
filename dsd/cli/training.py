"""Training commands: `dsd train` (resumable sweep over every untrained model), `dsd status`, `dsd compact`
(one results file per run) and `dsd time` (each model's measured runtime)."""

from pathlib import Path
from typing import List, Optional

import typer

from dsd.cli.common import JSON, RUNS_ARG, app, emit_json, say, say_table, warn_mixed_settings
from dsd.errors import BadInput
from dsd.training.settings import DataRequest, SweepOptions, TrainSettings, default
from dsd.training.timing import TimingOptions

# each default shown here is read from the one place that sets it (dsd.training.settings, .timing)
SETTING, DATA, SWEEP = (lambda name: default(TrainSettings, name), lambda name: default(DataRequest, name),
                        lambda name: default(SweepOptions, name))
TIMING = lambda name: default(TimingOptions, name)  # noqa: E731  (as SETTING, DATA, SWEEP above)


def parse_ids(text: Optional[str]) -> Optional[list[int]]:
    """'0,3,7-9' -> [0, 3, 7, 8, 9]."""
    if not text:
        return None
    ids = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            ids += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
            if hi and int(hi) < int(lo):
                raise ValueError
    except ValueError:
        raise BadInput(f"--ids {text}: expected model ids like 0,3,7-9 (ranges low-high)") from None
    return ids


@app.command()
def train(
    runs: Optional[List[Path]] = RUNS_ARG,
    dataset: Optional[str] = typer.Option(
        None, help="fashion-mnist | cifar10 | imagefolder:PATH | synthetic (default: the run's regime's)."),
    data_dir: Optional[str] = typer.Option(None, help="Where the data set is (default: $DSD_DATA_DIR, then the "
                                                      "usual places; downloaded into ~/.cache/dsd when online)."),
    download: bool = typer.Option(DATA("download"), help="Download fashion-mnist / cifar10 with torchvision when not found."),
    epochs: Optional[int] = typer.Option(None, help="Epochs per model (default: the regime's protocol, see "
                                                     "`dsd spaces`)."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size (default: the regime's protocol)."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate of the cosine schedule (default: the "
                                                  "regime's, scaled linearly when only --batch-size is given)."),
    wd: Optional[float] = typer.Option(None, help="Weight decay (default: the regime's protocol)."),
    warmup_epochs: Optional[float] = typer.Option(
        None, help="Linear learning-rate warm-up over the first W epochs (may be fractional), from 0.1x of the "
                   "cosine schedule's lr up to it (default: the regime's protocol)."),
    zero_init_residual: Optional[bool] = typer.Option(
        None, "--zero-init-residual/--no-zero-init-residual",
        help="Start the last BN gamma of each residual branch (X, Y, R blocks) at 0 (default: the regime's protocol)."),
    train_images: Optional[int] = typer.Option(None, help="Train on a fixed subset of this many images "
                                                          "(the same for every model; default: the regime's protocol)."),
    eval_images: Optional[int] = typer.Option(None, help="Evaluate on a fixed subset of this many images."),
    seed: int = typer.Option(SETTING("seed"), min=0, help="Training seed; model i trains with a seed made from (seed, i)."),
    device: str = typer.Option(SWEEP("device"), help="auto | cpu | cuda | cuda:N (auto: every GPU, else the CPU, with a "
                                                 "warning when a GPU is there that this torch build cannot "
                                                 "use, naming the driver it needs; the README names the "
                                                 "wheel for an older driver)."),
    models_per_gpu: int = typer.Option(SWEEP("models_per_gpu"), help="Models trained at once on each GPU (one process each)."),
    cpu_workers: int = typer.Option(SWEEP("cpu_workers"), help="Models trained at once on the CPU (the cores are split)."),
    amp: bool = typer.Option(SETTING("amp"), help="bf16 autocast on a GPU."),
    channels_last: bool = typer.Option(SETTING("channels_last"), help="Channels-last memory format."),
    compile_model: bool = typer.Option(SETTING("compile"), "--compile", help="torch.compile each model (pays off for long runs)."),
    deterministic: bool = typer.Option(SETTING("deterministic"), "--deterministic",
                                       help="No cudnn autotuning, deterministic kernels: identical re-runs on one "
                                            "GPU too (slower; on the CPU re-runs are identical anyway)."),
    loader_workers: int = typer.Option(DATA("loader_workers"), help="DataLoader workers per model (imagefolder only)."),
    save_weights: bool = typer.Option(SETTING("save_weights"), "--save-weights", help="Keep final weights in RUN/weights/ID.pt."),
    checkpoints: bool = typer.Option(SETTING("checkpoints"), help="Save each model's state after every epoch in RUN/checkpoints/, "
                                                "so that an interrupted model resumes where it stopped."),
    limit: Optional[int] = typer.Option(None, help="Train at most this many models, then stop."),
    ids: Optional[str] = typer.Option(None, help="Only these model ids, e.g. 0,3,7-9."),
    retry_failed: bool = typer.Option(SWEEP("retry_failed"), "--retry-failed", help="Train models whose result is 'failed' or "
                                                                    "'diverged' again."),
    backend: str = typer.Option(SWEEP("backend"), help="local (worker processes) | ray (one Ray task per model)."),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster to join, e.g. auto (default: a local instance)."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary only."),
):
    """Train every model of the runs that has no result yet; re-running resumes.

    Defaults are the run's regime's protocol (SGD momentum 0.9, half-period cosine after an optional
    linear warm-up; epochs, batch size, lr, weight decay, warm-up, zero-init and image subsets per
    regime, listed by `dsd spaces`). Each result is written atomically to
    RUN/results/ID.parquet, and gathered into RUN/results.parquet when the sweep ends (`dsd compact`);
    several processes or hosts may train one run at once. A model that was
    interrupted resumes from its checkpoint of the last finished epoch.

    \b
    Examples:
      dsd train runs/xa                                   # every untrained model, on all GPUs or the CPU
      dsd train runs/xa runs/regnetx --dataset cifar10 --models-per-gpu 4
      dsd train runs/regnetx --epochs 2 --train-images 5000 --eval-images 2000 --cpu-workers 2
      dsd train runs/xa --retry-failed --ids 3,7-9
      dsd train runs/xa --backend ray --ray-address auto
    """
    from dsd.api import train_runs

    summary = train_runs(
        runs, ids=parse_ids(ids), limit=limit, retry_failed=retry_failed, backend=backend,
        device=device, models_per_gpu=models_per_gpu, cpu_workers=cpu_workers, ray_address=ray_address,
        dataset=dataset, data_dir=data_dir, download=download, epochs=epochs, batch_size=batch_size, lr=lr,
        wd=wd, warmup_epochs=warmup_epochs, zero_init_residual=zero_init_residual, train_images=train_images,
        eval_images=eval_images, loader_workers=loader_workers, seed=seed, amp=amp, channels_last=channels_last,
        compile=compile_model, deterministic=deterministic, save_weights=save_weights, checkpoints=checkpoints)
    if json_out:
        emit_json(summary)
    elsewhere = f", {summary['claimed_elsewhere']} left to other processes" if summary["claimed_elsewhere"] else ""
    if not summary["trained"] and not summary["claimed_elsewhere"]:
        say("nothing to train: every chosen model has a result (--retry-failed trains failed and diverged ones again)")
        return
    say(f"trained {len(summary['trained'])} models in {summary['wall_s']:.1f} s: {summary['done']} done, "
        f"{summary['failed']} failed, {summary['diverged']} diverged{elsewhere}")
    for run, compacted in summary["compacted"].items():
        if "error" in compacted:
            say(f"warning: {run}: its results were written but not compacted ({compacted['error']})")


@app.command()
def status(
    runs: Optional[List[Path]] = RUNS_ARG,
    json_out: bool = JSON,
):
    """Per run: models sampled, done, failed, diverged, running, pending; best and mean error so far.

    \b
    Examples:
      dsd status                      # every run under ./runs
      dsd status runs/xa runs/regnetx --json
    """
    from dsd.runfolder import find_runs, run_status
    from dsd.runfolder.status import NEAR_CHANCE_POINTS

    rows = [run_status(r) for r in find_runs(runs)]
    if json_out:
        emit_json(rows)
        return
    cols = ["run", "space", "regime", "sampled", "done", "failed", "diverged", "running", "pending",
            "best_error", "mean_error"]
    say_table([cols] + [[_cell(r[c]) for c in cols] for r in rows], left={0, 1, 2})
    for r in rows:
        warn_mixed_settings(r["run"], r["mixed_settings"])
        if r["near_chance_flag"]:
            say(f"warning: {r['run']}: {r['near_chance']:.0%} of its trained models diverged or ended near chance "
                f"(within {NEAR_CHANCE_POINTS:g} points): likely deep models diverging at the start of a short "
                f"schedule; its EDF then measures the protocol, not the space. Train with a warm-up "
                f"(--warmup-epochs) and --zero-init-residual (docs/method.md section 4.1)")


@app.command()
def compact(
    runs: Optional[List[Path]] = RUNS_ARG,
    json_out: bool = JSON,
):
    """Gather each run's per-model result files into one RUN/results.parquet (`dsd train` does this when
    it ends), so that a run of many models loads in a moment.

    Safe while trainers run and against a kill at any moment: the gathered file is written before any
    file in it is removed; a model's own file stands over its gathered row; the file of a model being
    trained stays (a failed one is removed only while compaction holds its claim).

    \b
    Examples:
      dsd compact                       # every run under ./runs
      dsd compact runs/xa --json
    """
    from dsd.api import compact_runs

    rows = compact_runs(runs)
    if json_out:
        emit_json(rows)
        return
    for r in rows:
        if r["busy"]:
            say(f"{r['run']}: another process is compacting it; left alone")
            continue
        if not r["rows"]:
            say(f"{r['run']}: no results yet; nothing to gather")
            continue
        kept = f", {r['kept']} left as files (their models are being trained)" if r["kept"] else ""
        say(f"{r['run']}: {r['folded']} result files gathered into {r['file']} ({r['rows']} rows){kept}")


@app.command("time")
def time_models(
    runs: Optional[List[Path]] = RUNS_ARG,
    device: str = typer.Option(TIMING("device"), help="auto | cpu | cuda | cuda:N (auto: the GPU when torch "
                                                      "sees one, else the CPU)."),
    batch: int = typer.Option(TIMING("batch"), help="Images per timed batch (the paper's zoo times 64)."),
    repeats: int = typer.Option(TIMING("repeats"), help="Timed passes of each kind; their median is kept."),
    warmup: int = typer.Option(TIMING("warmup"), help="Untimed passes first (autotuning, allocation)."),
    threads: int = typer.Option(TIMING("threads"), help="torch's CPU threads while timing (one: a busy machine "
                                                        "stalls parallel regions, see dsd.training.timing)."),
    ids: Optional[str] = typer.Option(None, help="Only these model ids, e.g. 0,3,7-9."),
    json_out: bool = JSON,
):
    """Measure each model's runtime on one device: inference (forward, eval mode, no grad) and a
    training step (forward + backward + SGD step), each the median seconds per batch.

    One fixed random batch of the run's images, fp32, channels-last; WARMUP untimed passes, then
    REPEATS timed ones (synchronized on a GPU). Rows go to RUN/timings.parquet (a model timed again
    replaces its row; results/ is untouched), and the analysis then has infer_ms and train_ms (ms per
    batch) as statistics like flops: trends, `edf --normalize infer_ms`, the report. Timings are
    comparable within one device and batch; on the CPU they use --threads threads.

    \b
    Examples:
      dsd time runs/xa                          # on the GPU if there is one, batch 64
      dsd time runs/xa runs/regnetx --device cpu --batch 8 --ids 0-9
    """
    from dsd.api import time_models as measure

    def show(run, row):
        say(f"{run.name}/{row['model_id']}: inference {1e3 * row['infer_s']:.2f} ms, "
            f"training step {1e3 * row['train_s']:.2f} ms")

    summary = measure(runs, ids=parse_ids(ids), on_model=None if json_out else show,
                        device=device, batch=batch, repeats=repeats, warmup=warmup, threads=threads)
    if json_out:
        emit_json(summary)
        return
    wrote = f"; wrote {', '.join(summary['files'])}" if summary["files"] else ""
    say(f"timed {len(summary['timed'])} models on {summary['device']} (batch {batch}, median of {repeats} after "
        f"{warmup} warm-up) in {summary['wall_s']:.1f} s{wrote}")
    for run, differ in summary["mixed"].items():
        what = "; ".join(f"{c}: {', '.join(map(str, values))}" for c, values in differ.items())
        say(f"warning: {run}: its timings were measured under different conditions ({what}); they compare only "
            f"on one device at one batch size: time all its models alike")


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)
