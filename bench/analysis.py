"""Timings of the analysis library on synthetic runs; prints a markdown table.

    python bench/analysis.py

The targets (compute only, on a 2-core machine): `dsd trends` with 10^4 bootstrap repetitions on
n = 500 for all statistics <= 1 s; `dsd edf` on 10^5 models <= 1 s; `dsd fit-linear --all` on 500
models <= 30 s; the report with every section (findings, epochs, sample size included) on 7 runs x 500
models <= 30 s, figures included. Reading the run folder (one Parquet file per result) and drawing figures are timed
separately: they are not part of those targets.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from synthetic_runs import anynet_rows, regnet_rows, write_run  # noqa: E402

from table import print_table  # noqa: E402

from dsd.analysis import bootstrap, edf, epochs, fit, plots, report, samplesize, search  # noqa: E402
from dsd.analysis.findings import Evidence, findings  # noqa: E402
from dsd.analysis.load import load_runs  # noqa: E402


def timed(fn, repeat: int = 3) -> float:
    """Best of `repeat` wall times (seconds)."""
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def scaled(frame: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """A frame of n models made by repeating a loaded run, with fresh errors and ids."""
    big = frame.iloc[np.arange(n) % len(frame)].reset_index(drop=True)
    big["model_id"] = np.arange(n)
    big["err"] = rng.normal(25, 4, n)
    big.attrs = frame.attrs
    return big


def study_rows(rng: np.random.Generator) -> list[tuple[str, str, float]]:
    """The statistics of issue 11 and the whole report on 7 runs x 500 models with 10-epoch curves."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for k in range(7):
            rows = anynet_rows(500, rng) if k % 2 else regnet_rows(500, rng)
            final = rng.normal(25 - k * 0.3, 3, 500)
            curves = [np.linspace(80, e, 10) + np.r_[rng.normal(0, 3, 9), 0] for e in final]
            paths.append(write_run(Path(tmp) / f"run{k}", rows, errors=final, curves=curves, epochs=10))
        frame = load_runs(paths)
        html = Path(tmp) / "report.html"
        return [
            ("epoch rank agreement: 7 runs x 500 models x 10 epochs, 1000 bootstrap reps", "-",
             timed(lambda: epochs.rank_agreement(frame), 1)),
            ("sample size: KS power, 21 pairs x 6 sizes x 200 subsamples", "-",
             timed(lambda: samplesize.ks_by_size(frame), 1)),
            ("sample size: interval widths, 7 runs, all statistics", "-",
             timed(lambda: samplesize.width_by_size(frame), 1)),
            ("findings (every kind), 7 runs x 500 models", "-",
             timed(lambda: findings(Evidence(frame)), 1)),
            ("report, every section with figures, 7 runs x 500 models", "30 s",
             timed(lambda: report.write_report(frame, html), 1)),
        ]


def main() -> None:
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_run(Path(tmp) / "xa", anynet_rows(500, rng))
        write_run(Path(tmp) / "regnetx", regnet_rows(500, rng))
        paths = [Path(tmp) / "xa", Path(tmp) / "regnetx"]
        rows.append(("load 2 run folders (2 x 500 models, 1000 result files)", "-",
                     timed(lambda: load_runs(paths), 1)))
        both = load_runs(paths)
    xa = both[both["run"] == "xa"].copy()
    xa.attrs = {"runs": {"xa": both.attrs["runs"]["xa"]}}
    n_stats = len(bootstrap.pick_stats(bootstrap.model_statistics(xa), None))
    rows.append((f"trends: 10^4 bootstrap reps, n=500, all {n_stats} statistics", "1 s",
                 timed(lambda: bootstrap.trends(xa, samples=10_000))))
    big = scaled(xa, 100_000, rng)
    rows.append(("edf: table (n, min/mean/median, KS) + curve, 10^5 models", "1 s",
                 timed(lambda: (edf.edf_table(big), edf.edf_curves(big)))))
    big2 = pd.concat([big, scaled(xa, 100_000, rng).assign(run="xb")], ignore_index=True)
    big2.attrs = {"runs": {"xa": {}, "xb": {}}}
    rows.append(("edf --normalize flops: 2 runs x 10^5 models", "-",
                 timed(lambda: edf.edf_table(big2, "flops"))))
    rows.append(("search-efficiency: 10^5 models (exact)", "-", timed(lambda: search.search_efficiency(big))))
    rows.append(("fit-linear --all: 500 AnyNetXA-like models", "30 s", timed(lambda: fit.fit_runs(xa, None), 1)))
    rx = both[both["run"] == "regnetx"].copy()
    rx.attrs = {"runs": {"regnetx": both.attrs["runs"]["regnetx"]}}
    rows.append(("fit-linear --all: 500 RegNet-rule models", "30 s", timed(lambda: fit.fit_runs(rx, None), 1)))
    table = bootstrap.trends(xa, samples=10_000)
    stats = bootstrap.model_statistics(xa)
    rows.append(("trends figure (PNG, all statistics, n=500)", "-",
                 timed(lambda: plots.png_bytes(plots.trends_figure(xa, stats, table)), 1)))

    rows += study_rows(rng)

    print_table("analysis", rows, 3, f", numpy {np.__version__}")


if __name__ == "__main__":
    main()
