"""A run of 10^5 models through dsd, and the speed targets of the scale issue; prints a markdown table.

    python bench/scale.py [N]            # N models in the big run (default 100000)

Targets (wall times on a 2-core machine): load 10^5 results <= 2 s; plan `dsd train` over 10^5 models
<= 5 s; `dsd fit-linear --all` on 500 models <= 1 s; the whole command `dsd sample --space AnyNetXA --n
500` <= 0.5 s; `dsd import nds` of 10^4 jobs <= 10 s. The whole commands include Python's start-up and
imports, as a user meets them from the second run on: with Python's bytecode cache written (some
sandboxes set PYTHONDONTWRITEBYTECODE, which the commands here do without, so that each run does not
compile dsd's modules again: about 50 ms). The compute-only rows beside them show how much of each is
dsd's own work; `dsd fit-linear` runs on runs whose results are gathered, as `dsd train` leaves them. The other rows have no target: they show what a
run of N models costs at each stage. The big run's models are sampled by dsd (RegNetX, cifar regime);
their errors are made up by a rule (training 10^5 models is not a benchmark), written as 10^4 result
files (as trainers write them) that `dsd compact` gathers, plus the rest in one file.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from import_fixtures import make_nds_jobs  # noqa: E402
from synthetic_runs import anynet_rows, regnet_rows, write_run  # noqa: E402

from table import print_table  # noqa: E402

from dsd import api, runfolder  # noqa: E402
from dsd.analysis.fit import fit_runs  # noqa: E402
from dsd.analysis.load import load_runs  # noqa: E402
from dsd.design.regimes import get_regime  # noqa: E402
from dsd.design.sampler import sample  # noqa: E402
from dsd.design.spaces import load_space  # noqa: E402

FILES = 10_000  # results written one file per model, as trainers do


def timed(fn, repeat: int = 1):
    """(best wall seconds of `repeat` calls, the last call's value)."""
    best, value = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t)
    return best, value


def command(*args, cwd=None) -> float:
    """Wall time of one `dsd ARGS` in a fresh interpreter, as a user runs it (bytecode cached)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dsd", *map(str, args)], check=True, cwd=cwd, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def made_up_results(models, rng) -> list[dict]:
    """One done result row per model: error falls with log flops, plus noise; a 10-epoch curve."""
    flops = np.asarray(models["flops"], dtype=float)
    error = 40 - 3 * np.log10(flops / flops.min() + 1) + rng.normal(0, 1.5, len(flops))
    return [{"model_id": int(i), "status": "done", "error": float(e), "best_error": float(e), "train_loss": 0.5,
             "epochs": 10, "dataset": "cifar10", "batch_size": 128, "lr": 0.1, "wd": 5e-4, "train_seed": int(i),
             "wall_s": 60.0, "images_per_s": 5e3, "device": "made-up", "error_curve": list(np.linspace(90, e, 10)),
             "loss_curve": [1.0] * 10, "message": "", "versions": "bench", "host": "bench", "time": "2026"}
            for i, e in zip(models["model_id"], error)]


def big_run_rows(tmp: Path, n: int, rng) -> list[tuple[str, str, float]]:
    from dsd.training.jobs import plan, run_settings

    rows = []
    t, sampled = timed(lambda: api.sample_run("RegNetX", n, regime="cifar", flops="1M:100G", out=tmp / "big"))
    rows.append((f"sample {n:,} RegNetX models (cifar regime, any flops)", "-", t))
    run = sampled.run
    t, jobs = timed(lambda: plan(run, run_settings(run, dataset="synthetic")), 3)
    rows.append((f"plan `dsd train` over {len(jobs):,} untrained models", "5 s", t))
    results = made_up_results(runfolder.read_models(run).to_pydict(), rng)
    t, _ = timed(lambda: [runfolder.write_result(run, r) for r in results[:FILES]])
    rows.append((f"write {FILES:,} result files (one per model, as trainers do)", "-", t))
    t, _ = timed(lambda: runfolder.read_results(run))
    rows.append((f"read {FILES:,} result files before compaction", "-", t))
    t, _ = timed(lambda: runfolder.compact(run))
    rows.append((f"`dsd compact`: gather {FILES:,} result files", "-", t))
    runfolder.write_results(run, results[FILES:])
    t, frame = timed(lambda: load_runs([run]), 3)
    rows.append((f"load the run: {len(frame):,} models with results (compacted)", "2 s", t))
    t, _ = timed(lambda: plan(run, run_settings(run, dataset="synthetic")), 3)
    rows.append((f"plan `dsd train` over {len(frame):,} trained models (nothing left)", "5 s", t))
    rows.append((f"edf table, {len(frame):,} models", "-", timed(lambda: api.edf_table(frame), 3)[0]))
    rows.append((f"trends, 10^4 bootstrap reps, {len(frame):,} models", "-", timed(lambda: api.trends(frame))[0]))
    rows.append((f"report (every section, figures), {len(frame):,} models", "-",
                 timed(lambda: api.write_report(frame, tmp / "report.html"))[0]))
    return rows


def command_rows(tmp: Path, rng) -> list[tuple[str, str, float]]:
    rows = []
    command("--version")  # writes the bytecode cache, as any first run does
    # a fresh folder each time: sampling into a folder already sampled alike does nothing
    rows.append(("`dsd sample --space AnyNetXA --n 500` (whole command)", "0.5 s",
                 min(command("sample", "--space", "AnyNetXA", "--n", 500, "--out", tmp / f"xa{k}") for k in range(5))))
    rows.append(("sampling only: 500 AnyNetXA models, in process", "-",
                 timed(lambda: sample(load_space("AnyNetXA"), get_regime("imagenet"), 500), 3)[0]))
    for name, make in (("RegNet-rule", regnet_rows), ("AnyNetXA-like", anynet_rows)):
        fitted = write_run(tmp / f"fit-{name}", make(500, rng))
        api.compact_runs([fitted])
        frame = load_runs([fitted])
        rows.append((f"fit compute: `fit_runs` on 500 {name} models", "-", timed(lambda: fit_runs(frame, None), 3)[0]))
        rows.append((f"`dsd fit-linear --all` on 500 {name} models (whole command)", "1 s",
                     min(command("fit-linear", fitted, "--all") for _ in range(3))))
    nds = tmp / "nds.json"
    nds.write_text(json.dumps(make_nds_jobs(10_000, seed=0)))
    rows.append(("`dsd import nds` of 10^4 jobs (whole command)", "10 s",
                 min(command("import", "nds", nds, "--out", tmp / f"nds{k}") for k in range(2))))
    return rows


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        rows = command_rows(Path(tmp), rng) + big_run_rows(Path(tmp), n, rng)
    print_table("scale", rows, 2)


if __name__ == "__main__":
    main()
