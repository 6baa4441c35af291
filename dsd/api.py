"""The library's public API, used by the CLI and importable as `dsd.NAME`:

    import dsd
    run = dsd.sample_run("RegNetX", 100, regime="cifar").run       # -> runs/regnetx
    dsd.train_runs([run], epochs=3, dataset="synthetic", device="cpu")
    frame = dsd.load_runs([run])                                     # models joined with results
    dsd.edf_table(frame); dsd.trends(frame); dsd.fit_runs(frame); dsd.search_efficiency(frame)
    dsd.write_report(frame, "report.html")

Each function checks its input and raises dsd.BadInput with a one-line message. Training and analysis
are imported when called, so `import dsd` and `dsd sample` stay fast.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from dsd import runfolder
from dsd.design.complexity import complexity
from dsd.design.regime_files import load_regime
from dsd.design.regimes import Regime, get_regime, with_overrides
from dsd.design.sampler import check_count, regime_for, sample
from dsd.design.spaces import Space, load_space
from dsd.design.spec import ModelSpec, make_spec
from dsd.errors import BadInput
from dsd.version import __version__
from dsd.runfolder import run_status

__all__ = ["BadInput", "ModelSpec", "SampledRun", "compact_runs", "complexity", "edf_table", "findings", "fit_runs", "get_regime", "import_nds", "import_pycls",
           "ks_by_size", "load_regime", "load_runs", "load_space", "make_spec", "noise_floor", "rank_agreement", "reseed_run",
           "run_status", "sample_run", "sample_series", "search_efficiency", "slurm_sweep", "train_runs", "time_models", "trends", "write_report", "zoo_run"]


@dataclass(frozen=True)
class SampledRun:
    """What `sample_run` made: the run folder, the space and regime (bands applied) and the sampling's cost."""

    run: Path
    space: Space
    regime: Regime
    n: int
    seed: int
    draws: int = 0
    duplicates: int = 0
    seconds: float = 0.0
    unchanged: bool = False  # the folder already held this very sample


def sample_run(space: str | Path, n: int, *, regime: str | None = None, seed: int = 0, out: Path | None = None,
               flops: str | None = None, params: str | None = None, acts: str | None = None,
               force: bool = False) -> SampledRun:
    """Sample n models of a space (built-in name or .yaml file) into a run folder (default runs/SHORT).

    regime: imagenet | cifar | fashion, a regime file's name (spaces/regimes/) or a regime .yaml file
    (dsd.design.regime_files; default: the space file's, else imagenet); flops / params / acts:
    ranges such as "360M:400M" over the regime's bands. A folder sampled with the same arguments is left
    as it is; one with fewer models is extended (model i depends only on space, regime, seed and i);
    one made with other arguments is refused unless force, which replaces it and its results.
    """
    check_count(n)
    sp = load_space(space)
    rg = _space_regime(sp, regime, flops, params, acts)
    folder = Path(out) if out is not None else runfolder.RUNS_ROOT / sp.short
    return _sample_runs(sp, [(folder, runfolder.describe_run(sp, rg, seed, n), rg)], n, seed, force)[0]


def _space_regime(sp: Space, regime: str | None, flops, params, acts) -> Regime:
    """The regime a space is sampled under: the one named (default: the space file's, else imagenet),
    fitted to the space, with the bands given."""
    return with_overrides(regime_for(sp, load_regime(regime or sp.regime or "imagenet")), flops, params, acts)


def _sample_runs(sp: Space, planned: list[tuple], n: int, seed: int, force: bool) -> list[SampledRun]:
    """Sample (folder, run.yaml, regime) each: every folder is checked and every run drawn before any is
    written; a folder already holding its sample is left as it is."""
    checked = [(folder, meta, rg, runfolder.check_run_folder(folder, meta, force)) for folder, meta, rg in planned]
    drawn = iter(_draw_all(sp, [rg for _, _, rg, action in checked if action != "same"], n, seed))
    made = []
    for folder, meta, rg, action in checked:
        if action == "same":
            runfolder.read_models(folder)  # a corrupt models file is not "already sampled": name it
            made.append(SampledRun(folder, sp, rg, n, seed, unchanged=True))
            continue
        result, seconds = next(drawn)
        runfolder.write_run(folder, meta, result.rows, replace=action == "replace")
        made.append(SampledRun(folder, sp, rg, n, seed, result.draws, result.duplicates, seconds))
    return made


def sample_series(space: str | Path, n: int, targets, *, regime: str | None = None, seed: int = 0,
                  params: str | None = None, acts: str | None = None, root: Path | None = None,
                  force: bool = False) -> list[SampledRun]:
    """Sample n models of a space once per flops target F (["200M", 1.6e9] or "200M,1.6G"), each into the
    band [0.9 F, F]: the paper's flop-regime studies. Runs go to ROOT/SHORT-F (default runs/regnetx-200mf,
    runs/regnetx-1.6gf), in target order; params / acts apply to every run, as in sample_run.

    Each run.yaml records `series: {name: SHORT, targets: [...], target: F}`, which analysis reads to
    draw trends across the series (dsd.analysis.series). Every target and folder is checked, and every
    run drawn, before any is written; runs already sampled so are left as they are.
    """
    from dataclasses import replace

    from dsd.analysis.series import band, parse_targets, run_name

    check_count(n)
    sp = load_space(space)
    base = _space_regime(sp, regime, None, params, acts)
    values = parse_targets(targets)
    count = [int(v) if v.is_integer() else v for v in values]  # run.yaml: 200000000, not 200000000.0
    root = Path(root) if root is not None else runfolder.RUNS_ROOT
    planned = []
    for value, target in zip(values, count):
        rg, name = replace(base, flops=band(value)), run_name(sp.short, value)
        meta = {**runfolder.describe_run(sp, rg, seed, n), "name": name,
                "series": {"name": sp.short, "targets": count, "target": target}}
        planned.append((root / name, meta, rg))
    return _sample_runs(sp, planned, n, seed, force)


def _draw_all(sp: Space, regimes: list[Regime], n: int, seed: int) -> list:
    """[(Sample, seconds)] per regime, drawn in processes on every core when there are several (the runs
    of a series are independent, and drawing is the time a series takes), else in this process."""
    import os

    jobs = [(sp, rg, n, seed) for rg in regimes]
    workers = min(len(jobs), os.cpu_count() or 1)
    if workers <= 1:
        return [_timed_sample(job) for job in jobs]
    from concurrent.futures import ProcessPoolExecutor  # here: a single run does without (5 ms of start-up)
    from multiprocessing import get_context

    with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
        return list(pool.map(_timed_sample, jobs))


def _timed_sample(job: tuple) -> tuple:
    t = time.perf_counter()
    drawn = sample(*job)
    return drawn, time.perf_counter() - t


def zoo_run(out: Path, models: list[str] | None = None, *, regime: str = "imagenet", repeats: int = 1,
            force: bool = False) -> Path:
    """A run of published RegNet zoo models (default: all 24) under a regime (a name or file, as in
    sample_run), `repeats` of each, to train under a study's protocol and compare with the paper's
    errors. The same arguments again change nothing; a folder made otherwise is refused unless force
    (which replaces it and its results)."""
    from dsd.design.zoo import zoo, zoo_model, zoo_rows

    names = [zoo_model(n).name for n in models] if models else [m.name for m in zoo()]
    rg = load_regime(regime)
    rows = zoo_rows(names, rg, repeats)
    meta = {"name": Path(out).name, "space": "zoo", "regime": rg.as_dict(), "seed": 0, "n": len(rows),
            "zoo": {"models": names, "repeats": repeats}, "dsd_version": __version__}
    action = runfolder.check_run_folder(Path(out), meta, force)
    if action != "same":
        runfolder.write_run(Path(out), meta, rows, replace=action == "replace")
    return Path(out)


def import_nds(path: Path, *, out: Path | None = None, force: bool = False, regime: str | None = None):
    """An NDS data file (facebookresearch/nds: ResNet, ResNeXt, Vanilla spaces) as a run folder, default
    runs/nds-NAME (dsd.importers); returns a dsd.importers.ImportedRun. The same file again changes
    nothing; a folder holding anything else is refused unless force, which replaces it."""
    from dsd.importers import import_nds as run_import

    return run_import(path, out=out, force=force, regime=regime)


def import_pycls(sweep_dir: Path, *, out: Path | None = None, force: bool = False):
    """A pycls sweep folder (cfgs/*.yaml, logs/*/stdout.log, sweep.json) as a run folder, default
    runs/pycls-NAME (dsd.importers), as import_nds."""
    from dsd.importers import import_pycls as run_import

    return run_import(sweep_dir, out=out, force=force)


def time_models(runs=None, *, ids: list[int] | None = None, on_model=None, **options) -> dict:
    """Measure each model's inference and training-step time on a device into RUN/timings.parquet
    (dsd.training.timing; options: device, batch, repeats, warmup, threads). The analysis then has
    infer_ms and train_ms as statistics like flops."""
    from dsd.training.timing import time_runs

    return time_runs(runfolder.find_runs(runs), ids=ids, on_model=on_model, **options)


def reseed_run(run: Path, n: int = 10, repeats: int = 3, *, seed: int = 0, out: Path | None = None):
    """A run of `repeats` copies of n trained models of run, picked at random (seed), with new training
    seeds (default folder RUN-reseed); trained like run, they measure the noise floor (noise_floor)."""
    from dsd.runfolder.copies import reseed

    return reseed(Path(run), n, repeats, seed=seed, out=out)


def train_runs(runs=None, **options) -> dict:
    """Train every model of the runs (default: every run under ./runs) that has no result yet.

    options: see dsd.training.sweep.train_runs (epochs, batch_size, lr, wd, dataset, device, ids, ...);
    defaults come from each run's regime. Returns counts and a summary per trained model."""
    from dsd.training.sweep import train_runs as sweep

    return sweep(runfolder.find_runs(runs), **options)


def slurm_sweep(runs=None, jobs: int = 1, *, gpus_per_job: int = 0, models_per_gpu: int = 1,
                cpus_per_job: int | None = None, partition: str | None = None, time_limit: str | None = None,
                dry_run: bool = False, **options) -> dict:
    """Train the runs on a SLURM cluster: an sbatch array of `jobs` tasks, each `dsd train` on the shared
    run folders (dsd.training.slurm), written to RUN/slurm/dsd-train.sbatch and submitted unless dry_run.

    options: train_runs's (epochs, dataset, ids, ...), checked here as train_runs checks them. Returns
    the script's path, the job id (None on a dry run) and the models left to train."""
    from dsd.training.slurm import SlurmOptions, slurm_sweep as submit

    slurm = SlurmOptions(jobs, gpus_per_job, models_per_gpu, cpus_per_job, partition, time_limit)
    return submit(runfolder.find_runs(runs), slurm, options, dry_run=dry_run)


def load_runs(runs=None, *, where: str | None = None, split: str | None = None):
    """The runs (default: every run under ./runs) as one DataFrame, a row per model (dsd.analysis.load).

    where / split: a filter such as "b <= 2 and flops >= 380M" (dsd.analysis.filters): keep the models
    that satisfy it, or make each run two sub-populations, "RUN: EXPR" and "RUN: not EXPR"."""
    from dsd.analysis.filters import check_filters, subpopulations
    from dsd.analysis.load import load_runs as load

    check_filters(where, split, prefix="")
    return subpopulations(load(runfolder.find_runs(runs)), where, split)


def edf_table(frame, normalize: str | None = None, bins: int = 10):
    """Per run n, min / mean / median error and the KS test against the first run."""
    from dsd.analysis.edf import edf_table as table

    return table(frame, normalize, bins)


def trends(frame, stats: list[str] | None = None, samples: int = 10_000, subsample: float = 0.25,
           level: float = 0.95, seed: int = 0):
    """Bootstrap ranges of the best value of each statistic (dsd.analysis.bootstrap)."""
    from dsd.analysis.bootstrap import trends as bootstrap_trends

    return bootstrap_trends(frame, stats, samples, subsample, level, seed)


def fit_runs(frame, top: int | None = 20):
    """Quantized linear fits of each run's best `top` models (None: every model) and of the population."""
    from dsd.analysis.fit import fit_runs as fit

    return fit(frame, top)


def search_efficiency(frame):
    """The minimum error of k random models, k = 1, 2, 4, ..., per run."""
    from dsd.analysis.search import search_efficiency as efficiency

    return efficiency(frame)


def write_report(frame, out: Path, samples: int = 10_000, seed: int = 0, bins: int = 10) -> Path:
    """The self-contained HTML report of the runs in frame."""
    from dsd.analysis.report import write_report as report

    return report(frame, Path(out), samples=samples, seed=seed, bins=bins)


def rank_agreement(frame, samples: int = 1000, level: float = 0.95, seed: int = 0):
    """Per run and epoch k: Kendall's tau and Spearman's rho between the error after epoch k and the final
    error, with bootstrap intervals: did the schedule's ranking settle? (dsd.analysis.epochs)"""
    from dsd.analysis.epochs import rank_agreement as agreement

    return agreement(frame, samples=samples, level=level, seed=seed)


def ks_by_size(frame, sizes=None, repeats: int = 200, seed: int = 0, alpha: float = 0.05):
    """Per pair of runs and n: how often n models per run separate them by KS (dsd.analysis.samplesize)."""
    from dsd.analysis.samplesize import ks_by_size as by_size

    return by_size(frame, sizes=sizes, repeats=repeats, seed=seed, alpha=alpha)


def noise_floor(frame):
    """Per copy run (reseed_run) in frame: the seed-to-seed SD of error beside the model-to-model SD."""
    from dsd.analysis.noise import noise_floor as floor

    return floor(frame)


def findings(frame, alpha: float = 0.05, samples: int = 10_000, seed: int = 0) -> list[dict]:
    """What the numbers support, as {"kind", "statement", "evidence"} dicts (dsd.analysis.findings)."""
    from dsd.analysis.findings import Evidence, findings as find

    return find(Evidence(frame, samples=samples, seed=seed, alpha=alpha))


def compact_runs(runs=None) -> list[dict]:
    """Gather each run's per-model result files into RUN/results.parquet (dsd.runfolder.results.compact);
    one summary per run: folded, kept, rows, busy, and the file."""
    out = []
    for run in runfolder.find_runs(runs):
        summary = runfolder.compact(run)
        out.append({"run": str(run), "file": str(Path(run) / runfolder.COMPACTED_FILE), **summary})
    return out
