"""`dsd time`: each model's measured runtime on a device, the runtime statistic of the paper's
complexity analysis (runtime is measured, not counted).

Per model: the module is built (seeded, so every run of the command times the same weights), put on
the device in channels-last (as dsd trains it) and fed one fixed random batch of the run's images:
- inference: a forward pass in eval mode under torch.no_grad;
- training step: forward, cross-entropy, backward and an SGD step (momentum and weight decay, as the
  loop's) in train mode.
Each is run `warmup` times untimed (oneDNN primitive creation, cudnn autotuning, the allocator's first
requests), then `repeats` times timed with time.perf_counter, with torch.cuda.synchronize before and
after each on a GPU; the median seconds per batch is kept (robust to a busy machine). Arithmetic is
fp32, as the official zoo's timings (no autocast); on a GPU setup_process turns on cudnn autotuning and
TF32, as for training. On the CPU torch runs on `threads` threads, one by default, which the device
name records ("cpu (1 threads)"): with torch's default (one per core) a machine busy with anything
else (a sweep, a CI job) stalls every parallel region, and on two busy cores the median of a small
model rose from 8 ms to 190 ms; one thread times the model, not the machine's load, and reads the same
on machines with other core counts.

The rows go to RUN/timings.parquet (dsd.runfolder.write_timings), replacing the rows of the models
timed again; results/ is never touched. The run folder (pyarrow) and torch are imported when needed,
so that the CLI reads TimingOptions' defaults for its help without them.
"""
from __future__ import annotations

import platform
import socket
import statistics
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from dsd.design.spec import spec_from_row
from dsd.errors import BadInput
from dsd.training.devices import parse_device


@dataclass(frozen=True)
class TimingOptions:
    """How models are timed. batch 64: the official zoo's inference times are for 64 images, and on a
    GPU a smaller batch mostly times kernel launches. Repeats 7 and warm-up 2 (the first pass pays
    oneDNN's or cudnn's set-up, the second already runs at speed) keep a fashion-regime model at about
    0.4 s of CPU on one thread at batch 8 (10 and 3 took 0.6 s), and a median of 7 ignores three
    passes slowed by other work."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N (auto: the GPU when torch sees one, else the CPU)
    batch: int = 64
    repeats: int = 7
    warmup: int = 2
    threads: int = 1      # torch's CPU threads while timing (the module docstring says why one)

    def check(self) -> None:
        """BadInput naming the first option that cannot be used (the device's form included)."""
        for option, value, least in (("--batch", self.batch, 1), ("--repeats", self.repeats, 1),
                                     ("--warmup", self.warmup, 0), ("--threads", self.threads, 1)):
            if value < least:
                raise BadInput(f"{option} must be at least {least}, got {value}")
        parse_device(self.device)


def chosen_models(run: Path, ids: list[int] | None) -> list[dict]:
    """The model rows of a run to time, in model order (only the given ids; BadInput for unknown ones)."""
    from dsd import runfolder

    rows = {r["model_id"]: r for r in runfolder.read_models(run).to_pylist()}
    if not ids:
        return list(rows.values())
    unknown = sorted(set(ids) - rows.keys())
    if unknown:
        raise BadInput(f"{run}: no model with id {', '.join(map(str, unknown))} (ids are {min(rows)}..{max(rows)})")
    return [rows[i] for i in sorted(set(ids))]


def median_seconds(step, device, repeats: int, warmup: int) -> float:
    """The median wall time of step() over `repeats` calls after `warmup` untimed ones."""
    import torch

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_model(spec, device, batch: int, repeats: int, warmup: int) -> tuple[float, float]:
    """(inference, training-step) median seconds per batch of one model on a torch device."""
    import torch
    import torch.nn.functional as F

    from dsd.design.model import build_model

    torch.manual_seed(0)
    model = build_model(spec).to(device, memory_format=torch.channels_last)
    shape = (batch, spec.in_channels, spec.resolution, spec.resolution)
    x = torch.randn(shape, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, spec.num_classes, (batch,), device=device)
    fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, **fast)

    def train_step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    model.eval()
    with torch.no_grad():
        infer = median_seconds(lambda: model(x), device, repeats, warmup)
    model.train()
    with torch.enable_grad():
        train = median_seconds(train_step, device, repeats, warmup)
    return infer, train


def timing_row(model_id: int, infer: float, train: float, device_label: str, options: TimingOptions) -> dict:
    """A row of RUN/timings.parquet (dsd.runfolder.TIMING_SCHEMA)."""
    import torch

    return {"model_id": int(model_id), "device": device_label, "batch": options.batch,
            "repeats": options.repeats, "warmup": options.warmup, "infer_s": infer, "train_s": train,
            "torch": torch.__version__, "python": platform.python_version(), "host": socket.gethostname(),
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def time_run(run: Path, models: list[dict], device, label: str, opts: TimingOptions, on_model) -> list[dict]:
    """Time a run's models; their rows are merged into RUN/timings.parquet when done, or when timing stops
    early (an error, Ctrl-C), so that what was measured is kept."""
    from dsd import runfolder

    rows = []
    try:
        for model in models:
            infer, train = time_model(spec_from_row(model), device, opts.batch, opts.repeats, opts.warmup)
            rows.append(timing_row(model["model_id"], infer, train, label, opts))
            if on_model:
                on_model(run, rows[-1])
    finally:
        if rows:
            runfolder.write_timings(run, rows)
    return rows


def mixed_timings(run: Path) -> dict[str, list]:
    """The columns (device, batch) on which the rows of RUN/timings.parquet differ: {column: values}.
    Timings compare only on one device at one batch size; callers warn."""
    from dsd import runfolder

    table = runfolder.read_timings(run)
    values = {c: sorted(set(table.column(c).to_pylist())) for c in ("device", "batch")}
    return {c: v for c, v in values.items() if len(v) > 1}


def time_runs(runs, *, ids: list[int] | None = None, on_model=None, **options) -> dict:
    """Time every model of the runs (or the given ids of each); write RUN/timings.parquet per run.

    options: TimingOptions fields (device, batch, repeats, warmup, threads). Everything is checked
    (options, runs, ids, the device on this machine) before a model is built or a file written.
    on_model(run, row) is called after each model. torch's thread count is restored at the end.
    Returns a summary: the device, the options, the rows timed (with their run), the files written and
    the runs whose timings now mix devices or batch sizes (mixed_timings)."""
    from dsd import runfolder
    from dsd.training.devices import device_name, local_device, setup_process

    opts = TimingOptions(**options)
    opts.check()
    chosen = {Path(run): chosen_models(run, ids) for run in runs}
    import torch

    device, threads = torch.device(local_device(opts.device)), torch.get_num_threads()
    start, timed, files = time.perf_counter(), [], []
    try:
        setup_process(str(device), opts.threads)
        label = device_name(device)
        for run, models in chosen.items():
            rows = time_run(run, models, device, label, opts, on_model)
            timed += [{"run": str(run), **row} for row in rows]
            files += [str(run / runfolder.TIMINGS_FILE)] if rows else []
    finally:
        torch.set_num_threads(threads)
    mixed = {str(run): m for run in chosen if (m := mixed_timings(run))}
    return {"device": label, "batch": opts.batch, "repeats": opts.repeats, "warmup": opts.warmup,
            "threads": opts.threads, "timed": timed, "files": files, "mixed": mixed,
            "wall_s": round(time.perf_counter() - start, 3)}
