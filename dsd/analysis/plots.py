"""All figures, in the style of the RegNet / NDS papers. Each function returns a matplotlib Figure.

matplotlib is imported inside the functions (it is slow to import and only figures need it), and
figures are made with matplotlib.figure.Figure directly, so no pyplot state and no display backend
is involved: `save` writes PNG, SVG or PDF by the file's extension, `png_bytes` feeds the report.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from dsd import runfolder
from dsd.analysis.bootstrap import log_scaled
from dsd.analysis.fit import block_widths
from dsd.analysis.load import top_error
from dsd.design.regnet import quantized_linear_widths



def _figure(rows: int, cols: int, width: float = 3.4, height: float = 2.8):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _hide_unused(axes, used: int) -> None:
    for ax in axes.ravel()[used:]:
        ax.set_visible(False)


def save(fig, path: Path) -> Path:
    """Write the figure atomically; the format follows the extension (png, svg, pdf)."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".") or "png"
    runfolder.write_atomic(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=150))
    return path


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def edf_figure(curves: dict, table: pd.DataFrame, normalize: str | None = None, xmax: float | None = None):
    """One EDF curve per run, legend "[min|mean] name", error (%) on x, cumulative probability on y;
    x ends at xmax when given (see dsd.analysis.load.top_error)."""
    fig, axes = _figure(1, 1, 5.2, 4.0)
    ax = axes[0, 0]
    stats = table.set_index("run")
    for (name, (x, y)), color in zip(curves.items(), _colors(len(curves))):
        label = f"[{stats.at[name, 'min']:.1f}|{stats.at[name, 'mean']:.1f}] {name}"
        ax.step(np.concatenate([[x[0]], x]), np.concatenate([[0.0], y]), where="post", color=color,
                lw=1.8, label=label)
    ax.set_xlabel("error (%)")
    ax.set_ylabel("cumulative prob." + (f" (normalized by {normalize})" if normalize else ""))
    ax.set_ylim(0, 1.0)
    if xmax is not None:
        lo = min(x[0] for x, _ in curves.values())
        pad = 0.03 * (xmax - lo) or 1.0
        ax.set_xlim(lo - pad, xmax + pad)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    ax.set_title("error EDF" + (f", {normalize}-normalized" if normalize else ""))
    return fig


def _maybe_log(ax, values, name: str = "") -> None:
    """Log x for positive statistics spanning a wide range (widths, flops, ...), plain tick labels;
    depths stay linear, since their steps of one block matter."""
    if log_scaled(name, values):
        _plain_log(ax, "x")


def _plain_log(ax, which: str) -> None:
    """Log scale on axis "x" or "y" with ticks at 1, 2, 5 x 10^k labeled 10, 20, 50, 1k (not powers)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    getattr(ax, f"set_{which}scale")("log")
    axis = getattr(ax, f"{which}axis")
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda x, _: _si(x)))
    axis.set_minor_formatter(NullFormatter())


def trends_figure(models: pd.DataFrame, stats: pd.DataFrame, table: pd.DataFrame, cols: int = 5):
    """Per statistic: error vs statistic for every model, the bootstrap 95% band of the best value
    shaded and its median as a line, one color per run."""
    names = list(dict.fromkeys(table["stat"]))
    runs = list(dict.fromkeys(table["run"]))
    rows = -(-len(names) // cols)
    fig, axes = _figure(rows, min(cols, len(names)), 3.0, 2.5)
    top = top_error(models)
    bottom = models["err"].min()
    pad = 0.04 * max(top - bottom, 1e-9)
    for ax, name in zip(axes.ravel(), names):
        for run, color in zip(runs, _colors(len(runs))):
            mask = (models["run"] == run).to_numpy()
            ax.plot(stats.loc[mask, name], models.loc[mask, "err"], "o", ms=2.4, alpha=0.45, color=color,
                    mec="none", label=run)  # markers of one Line2D draw much faster than a scatter
            row = table[(table["run"] == run) & (table["stat"] == name)]
            if len(row):
                r = row.iloc[0]
                ax.axvspan(r["lo"], r["hi"], color=color, alpha=0.18, lw=0)
                ax.axvline(r["median"], color=color, lw=1.4)
        _maybe_log(ax, stats[name], name)
        ax.set_ylim(bottom - pad, top + pad)
        ax.set_xlabel(name)
        ax.set_ylabel("error (%)")
        ax.grid(alpha=0.3)
        if len(runs) == 1:
            r = table[table["stat"] == name].iloc[0]
            ax.set_title(f"{name}: {_fmt(r['median'])} [{_fmt(r['lo'])}, {_fmt(r['hi'])}]", fontsize=9)
    if len(runs) > 1:
        axes.ravel()[0].legend(fontsize=7, markerscale=2)
    _hide_unused(axes, len(names))
    return fig


def _si(x: float) -> str:
    """1500 -> 1.5k, 4e8 -> 400M: short tick labels for counts."""
    for unit, f in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= f:
            return f"{x / f:g}{unit}"
    return f"{x:g}"


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"


def trends_across_runs_figure(table: pd.DataFrame, series: dict[str, dict[str, float]], cols: int = 5):
    """Per statistic, the best range (median and 95% interval) of each run of a flop-regime series
    against the series' flops targets: how the good region moves with complexity (the RegNet paper's
    Fig. 11). series: {name: {run: target}} (dsd.analysis.series.series_runs), one color per series."""
    from dsd.analysis.series import flops_label

    names = list(dict.fromkeys(table["stat"]))
    rows = -(-len(names) // cols)
    fig, axes = _figure(rows, min(cols, len(names)), 3.0, 2.5)
    targets = sorted({t for runs in series.values() for t in runs.values()})
    for ax, name in zip(axes.ravel(), names):
        for (label, runs), color in zip(series.items(), _colors(len(series))):
            part = table[table["stat"] == name].set_index("run").reindex(list(runs)).dropna(subset=["median"])
            x = np.array([runs[r] for r in part.index], dtype=float)
            med, lo, hi = (part[c].to_numpy() for c in ("median", "lo", "hi"))
            ax.errorbar(x, med, yerr=[med - lo, hi - med], fmt="o-", capsize=3, lw=1.2, ms=4, color=color,
                        label=label)
        ax.set_xscale("log")
        ax.set_xticks(targets, [flops_label(t) for t in targets], fontsize=7, rotation=30)
        ax.minorticks_off()
        ax.set_xlabel("flops regime")
        ax.set_ylabel(f"best {name}")
        ax.grid(alpha=0.3)
    if len(series) > 1:
        axes.ravel()[0].legend(fontsize=7)
    _hide_unused(axes, len(names))
    return fig


def draw_widths(ax, depths, widths, title: str, fit: dict | None = None) -> None:
    """Per-block widths (log scale) of one model, with its quantized linear fit if given."""
    w = block_widths(depths, widths)
    j = np.arange(len(w))
    ax.step(j, w, where="mid", lw=2, color="k", label="model")
    if fit is not None:
        pred = quantized_linear_widths(len(w), fit["w0"], fit["wa"], fit["wm"])
        ax.step(j, pred, where="mid", lw=1.4, ls="--", color="tab:red",
                label=f"fit e_fit={fit['e_fit']:.3f}")
        ax.plot(j, fit["w0"] + fit["wa"] * j, lw=0.8, ls=":", color="tab:red")
        ax.legend(fontsize=7, loc="upper left")
    _plain_log(ax, "y")
    ax.set_xlabel("block index j")
    ax.set_ylabel("width")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")


def fit_figure(models: pd.DataFrame, fits: pd.DataFrame, best: int = 3):
    """Per run one row: the population fit over the top models' widths, the best models with their
    fits, and e_fit against error."""
    runs = list(dict.fromkeys(fits["run"]))
    fig, axes = _figure(len(runs), best + 2, 3.0, 2.6)
    for row, run in zip(axes, runs):
        part = fits[fits["run"] == run]
        fitted = part[part["scope"] == "model"].merge(
            models[models["run"] == run][["model_id", "depths", "widths"]], on="model_id")
        pop = part[part["scope"] == "population"]
        ax = row[0]
        if len(pop):
            p = pop.iloc[0]
            top = fitted[fitted["error"].notna()].sort_values("rank").head(20)
            for rec in top.itertuples():
                ax.plot(block_widths(rec.depths, rec.widths), color="0.6", lw=0.8)
            j = np.arange(int(p["depth"]))
            ax.plot(j, p["linear_w0"] + p["linear_wa"] * j, color="tab:blue", lw=1.5,
                    label=f"w_j={p['linear_w0']:.0f}{p['linear_wa']:+.1f}j")
            ax.step(j, quantized_linear_widths(len(j), p["w0"], p["wa"], p["wm"]), where="mid",
                    color="tab:red", ls="--", lw=1.4, label=f"quantized, e_fit={p['e_fit']:.3f}")
            _plain_log(ax, "y")
            ax.legend(fontsize=7, loc="upper left")
        ax.set_title(f"{run}: top models, population fit", fontsize=9)
        ax.set_xlabel("block index j")
        ax.set_ylabel("width")
        ax.grid(alpha=0.3, which="both")
        ranked = fitted.sort_values("rank")
        for ax, rec in zip(row[1:best + 1], ranked.head(best).itertuples()):
            err = f", err {rec.error:.1f}%" if np.isfinite(rec.error) else ""
            draw_widths(ax, rec.depths, rec.widths, f"{run} #{rec.rank} (id {rec.model_id}{err})",
                        {"w0": rec.w0, "wa": rec.wa, "wm": rec.wm, "e_fit": rec.e_fit})
        _hide_unused(row[1:best + 1], len(ranked))
        ax = row[-1]
        ax.scatter(fitted["e_fit"], fitted["error"], s=10, alpha=0.7)
        ax.set_xlabel("e_fit")
        ax.set_ylabel("error (%)")
        ax.set_title(f"{run}: e_fit vs error", fontsize=9)
        ax.grid(alpha=0.3)
    return fig


def search_figure(table: pd.DataFrame):
    """Expected minimum error of k random models against k, shaded between its 25% and 75% quantiles."""
    fig, axes = _figure(1, 1, 5.2, 4.0)
    ax = axes[0, 0]
    runs = list(dict.fromkeys(table["run"]))
    for run, color in zip(runs, _colors(len(runs))):
        part = table[table["run"] == run]
        ax.plot(part["k"], part["mean"], "o-", color=color, ms=3, lw=1.6, label=run)
        ax.fill_between(part["k"], part["q25"], part["q75"], color=color, alpha=0.18, lw=0)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("number of random models k")
    ax.set_ylabel("min error of k models (%)")
    ax.set_title("random search efficiency")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=9)
    return fig


def models_figure(models: pd.DataFrame, title: str, cols: int = 4):
    """Per-block widths (log scale) of a few models of each run (e.g. its best and worst), one panel per
    run with a line per model: a panel per model made the report's figures slow to draw for many runs."""
    runs = list(dict.fromkeys(models["run"]))
    rows = max(1, -(-len(runs) // cols))
    fig, axes = _figure(rows, cols, 3.4, 2.6)
    for ax, run in zip(axes.ravel(), runs):
        for rec in models[models["run"] == run].itertuples():
            w = block_widths(rec.depths, rec.widths)
            ax.step(np.arange(len(w)), w, where="mid", lw=1.4, label=f"id {rec.model_id}: {rec.err:.1f}%")
        _plain_log(ax, "y")
        ax.set_xlabel("block index j")
        ax.set_ylabel("width")
        ax.set_title(run, fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper left")
    _hide_unused(axes, len(runs))
    fig.suptitle(title)
    return fig


def curves_figure(models: pd.DataFrame):
    """Per-epoch test error of a few models (training curves), one line each."""
    fig, axes = _figure(1, 1, 5.2, 3.6)
    ax = axes[0, 0]
    for rec in models.itertuples():
        curve = np.asarray(rec.error_curve if rec.error_curve is not None else [], dtype=float)
        ax.plot(np.arange(1, len(curve) + 1), curve, "o-", ms=3, lw=1.2,
                label=f"{rec.run} id {rec.model_id} ({rec.err:.1f}%)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)")
    ax.set_title("training curves of the best models")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def epochs_figure(table: pd.DataFrame):
    """Kendall tau between the errors after each epoch and the final errors, per run, its bootstrap
    interval shaded (see dsd.analysis.epochs); the dotted line marks tau = 0.8."""
    from matplotlib.ticker import MaxNLocator

    runs = list(dict.fromkeys(table["run"]))
    fig, axes = _figure(1, 1, 5.2, 3.6 + 0.14 * -(-len(runs) // 3))    # room for the legend below
    ax = axes[0, 0]
    for run, color in zip(runs, _colors(len(runs))):
        part = table[table["run"] == run]
        ax.plot(part["epoch"], part["kendall"], "o-", color=color, ms=3, lw=1.6,
                label=f"{run} ({part['n'].iat[0]} models)")
        ax.fill_between(part["epoch"], part["kendall_lo"], part["kendall_hi"], color=color, alpha=0.18, lw=0)
    ax.axhline(0.8, color="0.5", ls=":", lw=1)
    low = np.nanmin(table["kendall_lo"].to_numpy(dtype=float), initial=0.0)
    ax.set_ylim(-1.02 if low < 0 else 0, 1.02)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch k")
    ax.set_ylabel("Kendall tau with final error")
    ax.set_title("rank agreement of epoch k with the final epoch", fontsize=10)
    ax.grid(alpha=0.3)
    if runs:
        ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    return fig


def sample_size_figure(ks_table: pd.DataFrame, width_table: pd.DataFrame):
    """Left: the share of subsamples of n models per run in which two runs separate (KS p < alpha).
    Right: the width of the bootstrap interval of the best value with n models, relative to its
    width with all of them, averaged over statistics (see dsd.analysis.samplesize)."""
    pairs = list(dict.fromkeys(zip(ks_table["a"], ks_table["b"])))
    fig, axes = _figure(1, 2, 4.6, 3.6 + 0.14 * -(-len(pairs) // 3))   # room for the legends below
    left, right = axes[0]
    for (a, b), color in zip(pairs, _colors(len(pairs))):
        part = ks_table[(ks_table["a"] == a) & (ks_table["b"] == b)]
        left.plot(part["n"], part["power"], "o-", color=color, ms=3, lw=1.4, label=f"{a} vs {b}")
    if len(ks_table):
        left.axhline(ks_table["alpha"].iat[0], color="0.5", ls=":", lw=1)
    left.set_ylim(-0.02, 1.02)
    left.set_ylabel("share of subsamples with KS p < alpha")
    left.set_title("do two runs separate with n models?", fontsize=10)
    relative = width_table.assign(relative=np.where(width_table["full_width"] > 0,
                                                    width_table["width"] / width_table["full_width"], np.nan))
    runs = list(dict.fromkeys(width_table["run"]))
    for run, color in zip(runs, _colors(len(runs))):
        mean = relative[relative["run"] == run].groupby("n")["relative"].mean()
        right.plot(mean.index, mean.to_numpy(), "o-", color=color, ms=3, lw=1.4, label=run)
    right.axhline(1.0, color="0.5", ls=":", lw=1)
    right.set_ylabel("interval width / width with all models")
    right.set_title("best-value interval width with n models", fontsize=10)
    for ax, used in ((left, pairs), (right, runs)):
        if used:
            _plain_log(ax, "x")
            ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
        ax.set_xlabel("models per run n")
        ax.grid(alpha=0.3, which="both")
    return fig
