"""Analysis commands: `dsd edf`, `trends`, `fit-linear`, `search-efficiency`, `report`, `export`.

They read run folders only (dsd.analysis.load) and work on partial runs. Everything numeric lives in the
library modules; these functions parse, call, print and save figures.
"""

from pathlib import Path
from typing import List, Optional

import typer

from dsd.cli.common import (JSON, RUNS_ARG, app, check_figure_out, check_out, emit_json, figure_path, say, say_table,
                     warn_mixed_settings, writing)
from dsd.errors import BadInput

PLOT = typer.Option(False, "--plot",
                    help="Write the figure (default into the first run folder) and print its path.")
OUT = typer.Option(None, "--out", help="Figure file (.png, .svg or .pdf); implies --plot.")
WHERE = typer.Option(None, "--where", metavar="EXPR",
                     help="Keep the models for which EXPR holds, e.g. 'b <= 2 and flops >= 380M', "
                          "'d in 12..28', 'g1 > 1' (columns and statistics joined with 'and').")
SPLIT = typer.Option(None, "--split", metavar="EXPR",
                     help="Analyse each run as two sub-populations, 'RUN: EXPR' and 'RUN: not EXPR'.")


def _load(runs, figure_out: Path | None = None, where: str | None = None, split: str | None = None):
    """Load the runs and keep the sub-populations asked for; when no run was named, the runs under
    ./runs with nothing trained yet are skipped.

    A figure's --out and the filters' syntax are checked first, so that bad ones are refused before any work."""
    from dsd.analysis.filters import check_filters, subpopulations
    from dsd.analysis.load import load_runs, run_path
    from dsd.runfolder import find_runs

    check_figure_out(figure_out)
    check_filters(where, split)
    paths = find_runs(runs)
    frame = load_runs(paths)
    if not runs:
        scored = frame.groupby("run", sort=False)["err"].apply(lambda e: e.notna().any())
        if scored.any() and not scored.all():
            idle = list(scored.index[~scored])
            say(f"skipping runs with no trained model yet: {', '.join(idle)}")
            paths = [p for p in paths if str(p) not in {run_path(frame, n) for n in idle}]
            frame = load_runs(paths)
    _warn_mixed(frame)
    frame = subpopulations(frame, where, split)
    for part in frame.attrs.get("empty", []):
        say(f"left out, nothing to analyse: {part}")
    return paths, frame


def _warn_mixed(frame) -> None:
    from dsd.runfolder import SETTING_COLUMNS, mixed_settings, sampled_settings

    for name, part in frame.groupby("run", sort=False):
        warn_mixed_settings(f"run {name}", mixed_settings(part[["status", *SETTING_COLUMNS]].to_dict("records"),
                                                          sampled_settings(part)))


def _save(fig, path: Path) -> str:
    """Write the figure and name it on stderr; the name is returned for --json, where stderr is not read."""
    from dsd.analysis.plots import save

    with writing(path):
        saved = str(save(fig, path))
    say(f"figure: {saved}")
    return saved


def _num(v, fmt: str = ".1f") -> str:
    import pandas as pd

    return "-" if pd.isna(v) else format(v, fmt)


def _say_table(table, columns: list[tuple[str, str]]) -> None:
    """An aligned text table on stderr; columns are (column, number format), text columns use "s"."""
    cells = [[c for c, _ in columns]]
    cells += [[str(row[c]) if fmt == "s" else _num(row[c], fmt) for c, fmt in columns]
              for _, row in table.iterrows()]
    say_table(cells, {i for i, (_, fmt) in enumerate(columns) if fmt == "s"})


def _records(frame) -> list[dict]:
    return frame.astype(object).where(frame.notna(), None).to_dict(orient="records")


@app.command()
def edf(
    runs: Optional[List[Path]] = RUNS_ARG,
    normalize: Optional[str] = typer.Option(
        None, help="flops | params | acts (or infer_ms | train_ms, once timed by `dsd time`): the complexity-normalized EDF of NDS (equal-width bins over the "
                   "range of all runs; each occupied bin weighs the same). Then mean and median are "
                   "weighted, D is the largest distance between the weighted EDFs, and p is scipy's asymptotic "
                   "two-sample KS p-value taken at the Kish effective sample sizes (sum w)^2 / sum w^2."),
    bins: int = typer.Option(10, help="Number of complexity bins for --normalize."),
    where: Optional[str] = WHERE, split: Optional[str] = SPLIT,
    plot: bool = PLOT, out: Optional[Path] = OUT, json_out: bool = JSON,
):
    """Error EDFs: per run n, min / mean / median error, and the two-sample KS test against the first run.

    F(e) is the fraction of models with error below e (diverged models count at chance error; failed and
    untrained ones are left out, the table counts them). Without --normalize the KS statistic and p-value
    are scipy.stats.ks_2samp's.

    Example: dsd edf runs/xa runs/xc --plot
    """
    from dsd.analysis.edf import edf_curves, edf_table

    paths, frame = _load(runs, out, where, split)
    table = edf_table(frame, normalize, bins)
    figure = None
    if plot or out:
        from dsd.analysis.load import top_error
        from dsd.analysis.plots import edf_figure

        path = figure_path(out, paths[0], "edf" + (f"_{normalize}" if normalize else ""))
        figure = _save(edf_figure(edf_curves(frame, normalize, bins), table, normalize, top_error(frame)), path)
    if json_out:
        emit_json({"normalize": normalize, "bins": bins if normalize else None, "runs": _records(table),
                   "figure": figure})
        return
    _say_table(table, [("run", "s"), ("n", "d"), ("done", "d"), ("diverged", "d"), ("failed", "d"),
                       ("untrained", "d"), ("min", ".1f"), ("mean", ".1f"), ("median", ".1f"), ("ks_d", ".3f"),
                       ("ks_p", ".2g")])


@app.command()
def trends(
    runs: Optional[List[Path]] = RUNS_ARG,
    stats: Optional[str] = typer.Option(
        None, help="Comma-separated statistics: d1.. w1.. b1.. g1.. (per stage), w2/w1.. d2/d1.. (stage "
                   "ratios, the paper's Fig. 7), d (total depth), w_sum, w0, wa, wm, flops, params, acts, and "
                   "infer_ms, train_ms once timed. Default: every one that varies, but the ratios."),
    samples: int = typer.Option(10_000, help="Bootstrap repetitions."),
    subsample: float = typer.Option(0.25, help="Fraction of the models drawn (with replacement) per repetition."),
    level: float = typer.Option(0.95, help="Coverage of the interval."),
    seed: int = typer.Option(0, min=0, help="Seed of the bootstrap draws."),
    where: Optional[str] = WHERE, split: Optional[str] = SPLIT,
    plot: bool = PLOT, out: Optional[Path] = OUT, json_out: bool = JSON,
):
    """Empirical bootstrap of the best value of each statistic (RegNet, footnote 4).

    Per repetition, draw a subsample of the (statistic, error) pairs with replacement and keep the
    statistic of its minimum-error model; the interval of the kept values is the likely range of the
    best value, their median the most likely one. The figure is a grid of error-vs-statistic scatter
    plots with the band and the median line; for the runs of a flop-regime series (`dsd sample
    --flops-targets`) a second figure, *_across, shows how the best range moves with the series' targets,
    and the exponents k of acts, params (and measured times) ~ flops^k of the best models (Fig. 12).

    Example: dsd trends runs/xc --stats d,w4,g1 --plot
    """
    from dsd.analysis import bootstrap

    paths, frame = _load(runs, out, where, split)
    wanted = [s.strip() for s in stats.split(",") if s.strip()] if stats is not None else None
    table = bootstrap.trends(frame, wanted, samples, subsample, level, seed)
    figure = across = None
    if plot or out:
        from dsd.analysis.load import scored
        from dsd.analysis.plots import trends_across_runs_figure, trends_figure
        from dsd.analysis.series import series_runs

        models = scored(frame)
        path = figure_path(out, paths[0], "trends")
        figure = _save(trends_figure(models, bootstrap.model_statistics(models), table), path)
        series = series_runs(frame)  # across runs only along a flop-regime series: elsewhere it means nothing
        if series:
            across = _save(trends_across_runs_figure(table, series),
                           path.with_name(f"{path.stem}_across{path.suffix}"))
    from dsd.analysis.scaling import complexity_exponents

    scaling = complexity_exponents(frame, level=level, seed=seed)
    if json_out:
        emit_json({"samples": samples, "subsample": subsample, "level": level, "seed": seed,
                   "trends": _records(table), "complexity": _records(scaling), "figure": figure,
                   "figure_across": across})
        return
    _say_table(table, [("run", "s"), ("stat", "s"), ("n", "d"), ("lo", ".4g"), ("median", ".4g"), ("hi", ".4g"),
                       ("best_model", ".4g")])
    if len(scaling):
        say("complexity of the 5 best models of each regime, s ~ flops^k:")
        _say_table(scaling, [("series", "s"), ("stat", "s"), ("exponent", ".2f"), ("lo", ".2f"), ("hi", ".2f"),
                             ("models", "d"), ("regimes", "d")])


@app.command("fit-linear")
def fit_linear(
    runs: Optional[List[Path]] = RUNS_ARG,
    top: Optional[int] = typer.Option(None, min=1, help="Fit the best TOP trained models of each run [default: 20]."),
    all_models: bool = typer.Option(False, "--all", help="Fit every model, trained or not."),
    where: Optional[str] = WHERE, split: Optional[str] = SPLIT,
    plot: bool = PLOT, out: Optional[Path] = OUT, json_out: bool = JSON,
):
    """Quantized linear fits: per model the (w0, wa, wm) whose RegNet rule best matches its widths.

    Grid search with d = the model's depth, minimizing e_fit = mean over blocks of |log(w_pred / w)|,
    plus the population fit of the run's top 20 trained models (one rule for their pooled blocks, and
    the least-squares line w_j = w0 + wa*j). The fits are written to RUN/fits.parquet.

    Example: dsd fit-linear runs/xe --plot
    """
    from dsd.analysis.fit import fit_runs, save_fits

    if all_models and top is not None:
        raise BadInput("give --top N or --all, not both")
    paths, frame = _load(runs, out, where, split)
    fits = fit_runs(frame, None if all_models else (top or 20))
    if where is None and split is None:
        for saved in save_fits(fits, frame):
            say(f"fits: {saved}")
    else:
        say("fits of a sub-population are not written to the run folder")
    figure = None
    if plot or out:
        from dsd.analysis.plots import fit_figure

        figure = _save(fit_figure(frame, fits), figure_path(out, paths[0], "fit_linear"))
    if json_out:
        emit_json({"fits": _records(fits), "figure": figure})
        return
    _say_table(fits, [("run", "s"), ("scope", "s"), ("model_id", "d"), ("rank", "d"), ("depth", "d"),
                      ("error", ".1f"), ("w0", ".0f"), ("wa", ".2f"), ("wm", ".2f"), ("e_fit", ".3f")])
    for r in fits[fits["scope"] == "population"].itertuples():
        sign = "+" if r.linear_wa >= 0 else "-"
        say(f"{r.run}: top models follow w_j = {r.linear_w0:.1f} {sign} {abs(r.linear_wa):.1f} j "
            f"(quantized: w0={r.w0:.0f} wa={r.wa:.1f} wm={r.wm:.2f}, e_fit {r.e_fit:.3f})")


@app.command("search-efficiency")
def search_efficiency(
    runs: Optional[List[Path]] = RUNS_ARG,
    where: Optional[str] = WHERE, split: Optional[str] = SPLIT,
    plot: bool = PLOT, out: Optional[Path] = OUT, json_out: bool = JSON,
):
    """Random-search efficiency (NDS): the minimum error of k random models, k = 1, 2, 4, ...

    Computed exactly from each run's sorted errors (k draws with replacement): the mean, the standard
    deviation and the 25% / 75% quantiles of the minimum. Diverged models count at chance error.

    Example: dsd search-efficiency runs/xa runs/regnetx --plot
    """
    from dsd.analysis import search

    paths, frame = _load(runs, out, where, split)
    table = search.search_efficiency(frame)
    figure = None
    if plot or out:
        from dsd.analysis.plots import search_figure

        figure = _save(search_figure(table), figure_path(out, paths[0], "search_efficiency"))
    if json_out:
        emit_json({"search_efficiency": _records(table), "figure": figure})
        return
    _say_table(table, [("run", "s"), ("k", "d"), ("mean", ".2f"), ("std", ".2f"), ("q25", ".2f"), ("q75", ".2f")])


@app.command()
def findings(
    runs: Optional[List[Path]] = RUNS_ARG,
    alpha: float = typer.Option(0.05, help="Chance of any false difference among the runs: each pair is tested at alpha / pairs."),
    samples: int = typer.Option(10_000, help="Bootstrap repetitions for the best ranges."),
    seed: int = typer.Option(0, min=0, help="Seed of the bootstrap and subsampling draws."),
    where: Optional[str] = WHERE, split: Optional[str] = SPLIT,
    json_out: bool = JSON,
):
    """What the runs' numbers support, each statement with its evidence and the threshold it passed:
    which EDF is better (KS), the likely best range of each statistic where the bootstrap interval is
    narrow, e_fit of the best models, whether the epochs and the number of models sufficed, and the
    noise floor measured by `dsd reseed` runs.

    Example: dsd findings runs/xa runs/xb runs/xa-reseed --json
    """
    from dsd.analysis.findings import Evidence, check_alpha, findings as find

    check_alpha(alpha)
    _, frame = _load(runs, None, where, split)
    found = find(Evidence(frame, samples=samples, seed=seed, alpha=alpha))
    if json_out:
        emit_json({"findings": found})
        return
    for i, f in enumerate(found, 1):
        print(f"{i}. [{f['kind']}] {f['statement']}")


@app.command()
def report(
    runs: Optional[List[Path]] = RUNS_ARG,
    out: Optional[Path] = typer.Option(None, "--out", help="HTML file (default: FIRST_RUN/report.html)."),
    samples: int = typer.Option(10_000, help="Bootstrap repetitions for the trends."),
    seed: int = typer.Option(0, min=0, help="Seed of the bootstrap draws."),
    bins: int = typer.Option(10, help="Number of flops bins of the normalized EDF."),
    where: Optional[str] = WHERE, split: Optional[str] = SPLIT,
    json_out: bool = JSON,
):
    """One self-contained HTML page (figures embedded, no network needed) with the summary table, EDFs
    (plain and flops-normalized), trends, fits, search efficiency, best and worst models, training
    curves and the run settings. Prints the file's path on stdout.

    Example: dsd report runs/xa runs/xe runs/regnetx --out study.html
    """
    from dsd.analysis.report import write_report

    if out is not None:
        if out.suffix.lower() not in (".html", ".htm"):
            raise BadInput(f"--out {out}: the report is an .html file")
        check_out(out)
    paths, frame = _load(runs, None, where, split)
    with writing(out or paths[0] / "report.html"):
        path = write_report(frame, out or paths[0] / "report.html", samples=samples, seed=seed, bins=bins)
    if json_out:
        emit_json({"report": str(path)})
    else:
        print(path)


@app.command()
def export(
    runs: Optional[List[Path]] = RUNS_ARG,
    out: Path = typer.Option(..., "--out",
                             help="Output file: .parquet (list columns kept) or .csv (lists as JSON)."),
    where: Optional[str] = WHERE, split: Optional[str] = SPLIT,
    json_out: bool = JSON,
):
    """Models joined with their results, one row per model (status "untrained" where there is none),
    with a `run` column and `err` (the error the statistics use: chance level for diverged models).

    Example: dsd export runs/xa runs/xb --out all.parquet
    """
    from dsd.analysis.load import export as export_frame

    check_out(out)
    _, frame = _load(runs, None, where, split)
    with writing(out):
        path = export_frame(frame, out)
    if json_out:
        emit_json({"out": str(path), "models": len(frame)})
    else:
        say(f"{len(frame)} models -> {path}")
