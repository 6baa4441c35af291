"""One self-contained HTML page with every analysis of a set of runs.

Figures are PNGs embedded as base64 data URIs and the style is inline, so the file opens in any
browser with no server and no network, can be mailed, and stays valid after the runs move.
"""
from __future__ import annotations

import base64
import html
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import yaml

from dsd import runfolder
from dsd.analysis import plots
from dsd.analysis.bootstrap import model_statistics
from dsd.analysis.edf import check_bins, edf_curves, edf_table
from dsd.analysis.findings import NARROW, Evidence, findings, pair_alpha
from dsd.errors import BadInput
from dsd.analysis.load import run_meta, run_names, run_path, scored, top_error
from dsd.analysis.search import search_efficiency

TRAINING_SETTINGS = ("dataset", "epochs", "batch_size", "lr", "wd", "device")
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; display: block; margin: .8em 0; }
pre { background: #f7f7f7; padding: .8em; overflow-x: auto; font-size: .85em; }
p.note { color: #555; font-size: .9em; }
"""


def _img(fig, alt: str) -> str:
    data = base64.b64encode(plots.png_bytes(fig)).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(frame: pd.DataFrame, table_id: str) -> str:
    return frame.to_html(index=False, na_rep="-", float_format=lambda v: f"{v:.4g}", border=0,
                         table_id=table_id, escape=True)


def _section(title: str, *parts: str) -> str:
    return f"<h2>{html.escape(title)}</h2>\n" + "\n".join(parts)


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _edf_section(frame: pd.DataFrame, bins: int) -> str:
    xmax = top_error(frame)
    parts = [_img(plots.edf_figure(edf_curves(frame), edf_table(frame), xmax=xmax), "error EDF")]
    models = scored(frame)
    if models["flops"].nunique() > 1:
        table = edf_table(frame, "flops", bins)
        parts.append(_img(plots.edf_figure(edf_curves(frame, "flops", bins), table, "flops", xmax),
                          "flops-normalized error EDF"))
        parts.append(_note(f"Normalized EDF: {bins} equal flops bins shared by all runs; each bin weighs "
                           f"the same. KS against the first run on the weighted EDFs:"))
        parts.append(_table(table[["run", "n", "min", "mean", "median", "ks_d", "ks_p"]], "edf-normalized"))
    return _section("Error distributions (EDF)", *parts)


def _trends_section(ev: Evidence) -> str:
    from dsd.analysis.series import series_runs

    title = "Design trends (bootstrap of the best value)"
    try:
        table = ev.trends
    except BadInput as e:  # e.g. a single trained model: the rest of the report still says something
        return _section(title, _note(f"No trends: {e}."))
    frame, models = ev.frame, ev.models
    parts = [_note(f"Empirical bootstrap: {ev.samples} draws of 25% of the models with replacement; the "
                   f"best model's value per draw; shaded: 95% interval, line: median."),
             _img(plots.trends_figure(models, model_statistics(models), table), "trends")]
    series = series_runs(frame)  # across runs only along a flop-regime series: elsewhere it means nothing
    if series:
        from dsd.analysis.scaling import complexity_exponents

        parts.append(_img(plots.trends_across_runs_figure(table, series), "trends across runs"))
        parts.append(_note("Complexity of the 5 best models of each regime: the exponent k of s ~ flops^k "
                           "(least squares in log-log, 95% bootstrap interval over the models)."))
        parts.append(_table(complexity_exponents(frame, seed=ev.seed), "complexity-exponents"))
    elif len(run_names(frame)) > 1:
        parts.append(_note("No figure across runs: it is drawn for the runs of a flop-regime series "
                           "(`dsd sample --flops-targets`) alone."))
    parts.append(_table(table, "trends"))
    return _section(title, *parts)


def _fit_section(frame: pd.DataFrame, fits: pd.DataFrame) -> str:
    pop = fits[fits["scope"] == "population"][["run", "depth", "w0", "wa", "wm", "e_fit", "linear_w0",
                                                "linear_wa"]]
    mean_fit = fits[fits["scope"] == "model"].groupby("run", sort=False)["e_fit"].agg(["mean", "median"])
    summary = pop.merge(mean_fit.add_prefix("e_fit_").reset_index(), on="run", how="left")
    return _section("Quantized linear fits of the top 20 models",
                    _img(plots.fit_figure(frame, fits, best=2), "quantized linear fits"),  # `dsd fit-linear`: 3
                    _note("Population: one rule for the pooled blocks of the top models, and the least-"
                          "squares line w_j = linear_w0 + linear_wa * j."),
                    _table(summary, "fits"))


def _search_section(frame: pd.DataFrame) -> str:
    table = search_efficiency(frame)
    return _section("Random search efficiency",
                    _img(plots.search_figure(table), "random search efficiency"),
                    _note("Expected minimum error of k models drawn at random (exact, from the sorted "
                          "errors); shaded: 25%-75% quantiles."),
                    _table(table, "search"))


def _findings_section(ev: Evidence) -> str:
    items = "".join(f"<li><b>{html.escape(f['kind'])}</b>: {html.escape(f['statement'])}</li>\n"
                    for f in findings(ev))
    return _section("Findings",
                    _note(f"Each statement is made only when its test passes (KS at alpha = {ev.alpha:g} "
                          f"divided by the number of pairs of runs; best ranges whose interval covers at most "
                          f"{NARROW:.0%} of the values seen). `dsd findings --json` gives the evidence."),
                    f'<ol id="findings">\n{items}</ol>' if items else _note("Nothing to state yet."))


def _epochs_section(ev: Evidence) -> str:
    from dsd.analysis.epochs import agreement_sentence

    table = ev.agreement
    if not len(table):
        return _section("How many epochs", _note("No run has enough trained models with curves."))
    sentences = [f"{name}: {s}." for name in run_names(ev.frame)
                 if (s := agreement_sentence(table, name)) is not None]
    return _section("How many epochs",
                    _note("Rank agreement between each model's error after epoch k and its final error "
                          "(Kendall tau-b and Spearman, 95% bootstrap intervals over models)."),
                    *(_note(s) for s in sentences),
                    _img(plots.epochs_figure(table), "rank agreement by epoch"), _table(table, "epochs"))


def _sizes_section(ev: Evidence) -> str:
    parts = [_note("Left: the share of random subsamples of n models per run in which KS separates two runs "
                   f"(p < {pair_alpha(ev):.2g}: alpha / pairs of runs). Right: the width of each best-value "
                   "bootstrap interval on n models, relative to its width on all models.")]
    ks = ev.ks_sizes
    try:
        widths = ev.widths
    except BadInput:  # nothing varies yet: no interval to narrow
        from dsd.analysis.samplesize import WIDTH_COLUMNS

        widths = pd.DataFrame(columns=WIDTH_COLUMNS)
    parts.append(_img(plots.sample_size_figure(ks, widths), "KS power and interval width by number of models"))
    if len(ks):
        parts.append(_table(ks, "sample-size"))
    return _section("How many models", *parts)


def _noise_section(ev: Evidence) -> str:
    if not len(ev.noise):
        return _section("Noise floor", _note("No copy run (make one with `dsd reseed RUN --n 10 --repeats 3` "
                                             "and train it) : the seed-to-seed spread of error is not measured."))
    return _section("Noise floor",
                    _note("Seed-to-seed SD: pooled over the copies of each model (95% chi-square interval); "
                          "model-to-model SD: across the source run's models."),
                    _table(ev.noise, "noise"))


def _compare_section(frame: pd.DataFrame) -> list[str]:
    """Zoo, promoted and copied models, when there are any: error over repeats beside complexity and,
    for the zoo, the paper's error after its full 100-epoch ImageNet schedule."""
    from dsd.analysis.compare import model_comparison

    table = model_comparison(frame)
    if not len(table):
        return []
    return [_section("Promoted, copied and zoo models",
                     _note("Each model's error over its repeats (own training seeds) under this study's "
                           "protocol; published_error: the paper's ImageNet top-1 error after 100 epochs, a "
                           "reference for the ranking, not for the numbers, unless the protocol is the same."),
                     _table(table, "models-compared"))]


def _models_section(frame: pd.DataFrame, count: int = 4) -> str:
    order = {name: i for i, name in enumerate(run_names(frame))}
    models = scored(frame).assign(order=lambda m: m["run"].map(order)).sort_values(["order", "err", "model_id"])
    best = models.groupby("run", sort=False).head(count)
    worst = models[models["status"] == "done"].groupby("run", sort=False).tail(count)
    parts = [_img(plots.models_figure(best, "best models: per-block widths"), "best models"),
             _img(plots.models_figure(worst, "worst trained models: per-block widths"), "worst models")]
    curves = best[best["error_curve"].map(lambda c: c is not None and len(c) > 0)]
    if len(curves):
        parts.append(_img(plots.curves_figure(curves.groupby("run", sort=False).head(3)), "training curves"))
    return _section("Best and worst models", *parts)


def _settings_section(frame: pd.DataFrame) -> str:
    parts = []
    for name in run_names(frame):
        part = frame[frame["run"] == name]
        trained = {c: _plain_values(part[c]) for c in TRAINING_SETTINGS if c in part}
        parts.append(f"<h3>{html.escape(name)} <small>({html.escape(run_path(frame, name))})</small></h3>")
        parts.append("<pre>" + html.escape(yaml.safe_dump(run_meta(frame, name), sort_keys=False)) + "</pre>")
        parts.append("<pre>" + html.escape(yaml.safe_dump({"training": trained}, sort_keys=False)) + "</pre>")
    return _section("Run settings", *parts)


def _plain_values(column: pd.Series):
    """The distinct values of a column as plain Python (3.0 -> 3), one value unwrapped from its list."""
    values = sorted((int(v) if isinstance(v, float) and v.is_integer() else v
                     for v in column.dropna().unique().tolist()), key=str)
    return values[0] if len(values) == 1 else values


def _filter_note(frame: pd.DataFrame) -> list[str]:
    said = [f"{label} {frame.attrs[key]}" for key, label in (("where", "models where"), ("split", "split by"))
            if frame.attrs.get(key)]
    said += [f"left out (nothing to analyse): {part}" for part in frame.attrs.get("empty", [])]
    return [_note("Sub-populations: " + "; ".join(said) + ".")] if said else []


def build_report(frame: pd.DataFrame, samples: int = 10_000, seed: int = 0, bins: int = 10) -> str:
    """The HTML text of the report for the runs in frame (each must have trained models).

    Bad options are refused up front: the trends section turns BadInput into a note, which is right
    for data too thin for trends but would hide a bad --samples."""
    check_bins(bins)
    ev = Evidence(frame, samples=samples, seed=seed)
    summary = edf_table(frame)
    names = ", ".join(run_names(frame))
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [f"<h1>dsd report: {html.escape(names)}</h1>",
            _note(f"Generated {when}. Errors are top-1 % on the evaluation set; diverged models count "
                  f"at chance-level error; failed and untrained models are left out."),
            *_filter_note(frame), _findings_section(ev), _section("Summary", _table(summary, "summary")),
            _edf_section(frame, bins), _trends_section(ev), _fit_section(frame, ev.fits),
            _epochs_section(ev), _sizes_section(ev), _noise_section(ev), *_compare_section(frame),
            _search_section(frame), _models_section(frame), _settings_section(frame)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>dsd report: {html.escape(names)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_report(frame: pd.DataFrame, out: Path, **options) -> Path:
    text = build_report(frame, **options)
    runfolder.write_atomic(Path(out), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return Path(out)
