"""Design commands: `dsd spaces`, `dsd sample`, `dsd describe`, `dsd reseed`. None of them imports torch."""

import math
import shlex
from pathlib import Path
from typing import Optional

import typer

from dsd.cli.common import JSON, app, emit_json, say, say_table, warn_mixed_settings
from dsd.errors import BadInput


def _band(lo, hi) -> str:
    if not lo and (hi is None or math.isinf(hi)):
        return "any"

    def q(v):
        if v is None or math.isinf(v):
            return ""
        for unit, f in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
            if v >= f:
                return f"{v / f:g}{unit}"
        return f"{v:g}"
    return f"{q(lo)}..{q(hi)}"


@app.command()
def spaces(json_out: bool = JSON):
    """List the built-in design spaces and regimes, and the regime files of spaces/regimes/.

    \b
    Examples:
      dsd spaces
      dsd spaces --json
    """
    from dsd.design.regime_files import load_regime, regime_file_names
    from dsd.design.regimes import REGIMES
    from dsd.design.spaces import builtin_names, load_space

    rows = []
    for name in builtin_names():
        s = load_space(name)
        rows.append({"name": s.name, "short": s.short, "block": s.network["block"], "stages": s.stages,
                     "free_dims": s.free_dims(), "size": s.size(), "continuous": s.continuous(),
                     "description": s.description})
    regimes = [r.as_dict() for r in REGIMES.values()]
    files = [load_regime(name).as_dict() for name in regime_file_names()]
    if json_out:
        emit_json({"spaces": [{**r, "size": None if math.isinf(r["size"]) else r["size"]} for r in rows],
                   "regimes": regimes, "regime_files": files})
        return
    say(f"{'space':10} {'short':8} {'block':5} {'stages':6} {'free dims':9} {'size':>10}  description")
    for r in rows:
        size = f"{r['size']:.1e}" if not math.isinf(r["size"]) else "continuous"
        note = f" (continuous: {', '.join(r['continuous'])})" if r["continuous"] else ""
        say(f"{r['name']:10} {r['short']:8} {r['block']:5} {r['stages']:<6} {r['free_dims']:<9} {size:>10}  "
            f"{r['description']}{note}")
    _say_regimes(regimes + files)
    if files:
        say(f"regime files (spaces/regimes/): {', '.join(r['name'] for r in files)}; "
            f"--regime takes their names, or a .yaml file of your own")


def _say_regimes(regimes: list[dict]) -> None:
    """The regimes' inputs and bands, then their training protocols (each as Regime.as_dict())."""
    w = max(9, *(len(r["name"]) for r in regimes))
    say("")
    say(f"{'regime':{w}} {'px':>4} {'ch':>3} {'classes':>7} {'stem':7} {'strides':9} {'flops':12} dataset")
    for r in regimes:
        strides = ",".join(map(str, r["strides"])) if r["strides"] else "space's"
        say(f"{r['name']:{w}} {r['resolution']:>4} {r['in_channels']:>3} {r['num_classes']:>7} "
            f"{r['stem'] or 'space':7} {strides:9} {_band(*r['flops']):12} {r['dataset']}")
    say("")
    say(f"{'protocol':{w}} {'epochs':>6} {'batch':>5} {'lr':>6} {'wd':>7} {'warm-up':>7} {'zero-init':>9} {'images':>13}")
    for r in regimes:
        t = r["train"]
        images = f"{t['train_images'] or 'all'}/{t['eval_images'] or 'all'}"
        say(f"{r['name']:{w}} {t['epochs']:>6} {t['batch_size']:>5} {t['lr']:>6g} {t['wd']:>7g} "
            f"{t['warmup_epochs']:>7g} {'yes' if t['zero_init_residual'] else 'no':>9} {images:>13}")


@app.command()
def sample(
    space: str = typer.Option(..., "--space", help="Built-in space name (see `dsd spaces`) or a space .yaml file."),
    n: int = typer.Option(..., "--n", help="Number of models to sample."),
    regime: Optional[str] = typer.Option(None, help="imagenet | cifar | fashion, a regime file's name (`dsd spaces`) "
                                                    "or a regime .yaml file (default: the space's, else imagenet)."),
    seed: int = typer.Option(0, min=0, help="Sampling seed; model i depends only on (space, regime, seed, i)."),
    out: Optional[Path] = typer.Option(None, help="Run folder (default: runs/<space short name>); with "
                                                  "--flops-targets, the folder that holds the runs (default: runs)."),
    flops: Optional[str] = typer.Option(None, help="Flops range, e.g. 360M:400M, :1.5G, 2e6: (overrides the regime)."),
    flops_targets: Optional[str] = typer.Option(
        None, "--flops-targets", help="A flop-regime series: one run per target F, e.g. 200M,400M,800M,1.6G, each "
                                      "in the band 0.9F..F, named runs/<short>-200mf, ... (instead of --flops)."),
    params: Optional[str] = typer.Option(None, help="Params range, e.g. :2M."),
    acts: Optional[str] = typer.Option(None, help="Activations range, e.g. :1M."),
    force: bool = typer.Option(False, "--force", help="Replace a run folder made with other arguments (deletes its results)."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary only."),
):
    """Sample N models from a design space under a complexity band (rejection sampling).

    With --flops-targets, sample the space once per target into a series of runs (the RegNet paper's
    flop regimes); `dsd trends` and `dsd report` then show how the best designs move across the series.

    \b
    Examples:
      dsd sample --space AnyNetXC --n 500                  # -> runs/xc, 360M..400M flops at 224 px
      dsd sample --space RegNetX --regime cifar --n 100
      dsd sample --space RegNetX --regime imagenet_160px --n 100     # 360M..400M flops at 160 px
      dsd sample --space spaces/examples/regnet_se_cifar.yaml --n 50 --flops 100M:140M
      dsd sample --space RegNetX --n 100 --flops-targets 200M,400M,800M,1.6G   # -> runs/regnetx-200mf, ...
    """
    from dsd.api import sample_run, sample_series

    if flops_targets is None:
        made = [sample_run(space, n, regime=regime, seed=seed, out=out, flops=flops, params=params, acts=acts,
                           force=force)]
    elif flops is not None:
        raise BadInput("give --flops (one band) or --flops-targets (one run per target), not both")
    else:
        made = sample_series(space, n, flops_targets, regime=regime, seed=seed, params=params,
                             acts=acts, root=out, force=force)
    summaries = [_sampled(m) for m in made]
    if json_out:
        emit_json(summaries[0] if flops_targets is None else
                  {"series": made[0].space.short, "targets": [m.regime.flops[1] for m in made], "runs": summaries})
    fresh = [str(m.run) for m in made if not m.unchanged]
    if fresh:
        say(f"next: dsd train {' '.join(fresh)}")


def _sampled(made) -> dict:
    """Say what sampling did to one run folder (made: a dsd.api.SampledRun); its --json summary."""
    folder, rg, n = made.run, made.regime, made.n
    if made.unchanged:
        say(f"{folder}: already sampled with these arguments; nothing to do")
        return {"run": str(folder), "n": n, "unchanged": True}
    limits = "".join(f", {limit}" for limit in made.space.limits)  # the space's own, at each model's flops
    say(f"sampled {n} models from {made.space.name} ({rg.name}: flops {_band(*rg.flops)}, params "
        f"{_band(*rg.params)}, acts {_band(*rg.acts)}{limits}) in {made.seconds:.2f} s: {made.draws:,} "
        f"candidates, {100 * n / made.draws:.2f}% accepted -> {folder}")
    return {"run": str(folder), "space": made.space.name, "regime": rg.name, "n": n, "seed": made.seed,
            "draws": made.draws, "acceptance": n / made.draws, "duplicates": made.duplicates,
            "seconds": round(made.seconds, 3)}


def _check_options(params: dict, counts: dict, se_ratio: float) -> None:
    """Refuse, by option name, a value no model can have; an option left unset (None) is not checked.

    params: space parameter name -> value, bounded as in space files (dsd.design.spaces.LOWER_BOUNDS);
    counts: option -> value that must be at least 1."""
    from dsd.design.spaces import check_lowest

    for name, value in params.items():
        if value is not None:
            check_lowest(name, value, "--" + name.replace("_", "-"))
    for flag, value in counts.items():
        if value is not None and value < 1:
            raise BadInput(f"{flag} must be >= 1, got {value}")
    if not 0 <= se_ratio < 1:
        raise BadInput(f"--se-ratio must be in [0, 1), got {se_ratio:g}")


def _numbers(text: Optional[str], what: str, kind=int) -> Optional[list]:
    """'1,2,7,12' -> [1, 2, 7, 12] (kind=float for ratios); None stays None."""
    if text is None:
        return None
    try:
        return [kind(x) for x in text.split(",")]
    except ValueError:
        raise BadInput(f"--{what} {text!r}: expected comma-separated {kind.__name__}s, e.g. 1,2,7,12") from None


@app.command()
def describe(
    run: Optional[Path] = typer.Argument(None, help="A run folder (with --id)."),
    model_id: Optional[int] = typer.Option(None, "--id", help="Model id in the run."),
    model: Optional[str] = typer.Option(None, "--model", help="A published zoo model, e.g. RegNetX-400MF "
                                                              "(`dsd zoo` lists them), under --regime."),
    depth: Optional[int] = typer.Option(None, help="RegNet depth d."),
    w0: Optional[float] = typer.Option(None, help="RegNet initial width w0."),
    wa: Optional[float] = typer.Option(None, help="RegNet slope wa."),
    wm: Optional[float] = typer.Option(None, help="RegNet width multiplier wm."),
    group_width: Optional[int] = typer.Option(None, help="RegNet group width g."),
    bottleneck_ratio: float = typer.Option(1.0, help="RegNet bottleneck ratio b."),
    se_ratio: float = typer.Option(0.0, help="SE ratio (0.25 for RegNetY)."),
    depths: Optional[str] = typer.Option(None, help="Explicit stage depths, e.g. 1,2,7,12."),
    widths: Optional[str] = typer.Option(None, help="Explicit stage widths."),
    group_widths: Optional[str] = typer.Option(None, help="Explicit stage group widths (default 1 each)."),
    bottleneck_ratios: Optional[str] = typer.Option(None, help="Explicit stage bottleneck ratios (default 1 each)."),
    regime: str = typer.Option("imagenet", help="Defaults for resolution, channels, classes, stem, strides: a "
                                                "regime name (`dsd spaces`) or a regime .yaml file."),
    stem: Optional[str] = typer.Option(None, help="simple | cifar | resnet."),
    stem_width: int = typer.Option(32, help="Stem width."),
    block: Optional[str] = typer.Option(None, help="X | Y | R | V (default X, or Y when --se-ratio > 0)."),
    strides: Optional[str] = typer.Option(None, help="Per-stage strides (default: the regime's, else 2)."),
    resolution: Optional[int] = typer.Option(None, help="Input resolution."),
    in_channels: Optional[int] = typer.Option(None, help="Input channels."),
    classes: Optional[int] = typer.Option(None, help="Number of classes."),
    json_out: bool = JSON,
):
    """Show one model's stages and complexity (flops, params, acts), counted analytically.

    \b
    Examples:
      dsd describe --depth 13 --w0 24 --wa 36.44 --wm 2.49 --group-width 8      # RegNetX-200MF
      dsd describe --depths 9,9,9 --widths 16,32,64 --block R --stem cifar --stem-width 16 \\
                   --strides 1,2,2 --regime cifar                               # ResNet-56
      dsd describe runs/xa --id 3
      dsd describe --model RegNetY-800MF
    """
    from dsd.design.complexity import complexity

    _check_options({"depth": depth, "w0": w0, "wa": wa, "wm": wm, "group_width": group_width,
                    "bottleneck_ratio": bottleneck_ratio},
                   {"--stem-width": stem_width, "--resolution": resolution, "--in-channels": in_channels,
                    "--classes": classes}, se_ratio)
    if run is not None:
        if model_id is None:
            raise BadInput("give --id K with a run folder")
        spec = _spec_from_run(run, model_id)
    elif model is not None:
        from dsd.design.regime_files import load_regime
        from dsd.design.zoo import zoo_model, zoo_spec

        spec = zoo_spec(zoo_model(model), load_regime(regime))
    else:
        spec = _spec_from_options(
            regnet={"depth": depth, "w0": w0, "wa": wa, "wm": wm}, depths=depths, widths=widths,
            group_widths=group_widths, bottleneck_ratios=bottleneck_ratios, group_width=group_width,
            bottleneck_ratio=bottleneck_ratio, regime=regime,
            network={"stem": stem, "stem_width": stem_width, "block": block or ("Y" if se_ratio else "X"),
                     "se_ratio": se_ratio, "strides": _numbers(strides, "strides"), "resolution": resolution,
                     "in_channels": in_channels, "num_classes": classes})
    counts = complexity(spec)
    info = {"depths": list(spec.depths), "widths": list(spec.widths), "group_widths": list(spec.group_widths),
            "bottleneck_ratios": list(spec.bottleneck_ratios), "strides": list(spec.strides), **counts,
            "stem": spec.stem, "stem_width": spec.stem_width, "block": spec.block, "se_ratio": spec.se_ratio,
            "resolution": spec.resolution, "in_channels": spec.in_channels, "num_classes": spec.num_classes,
            "activation": spec.activation}
    if json_out:
        emit_json(info)
        return
    say(f"{spec.block} blocks, {spec.stem} stem ({spec.stem_width}), {spec.resolution} px, "
        f"{spec.in_channels} channels, {spec.num_classes} classes, SE {spec.se_ratio:g}, {spec.activation}")
    say(f"{'stage':5} {'depth':>5} {'width':>6} {'b':>4} {'g':>4} {'stride':>6}")
    for i, row in enumerate(zip(spec.depths, spec.widths, spec.bottleneck_ratios, spec.group_widths, spec.strides)):
        say(f"{i + 1:<5} {row[0]:>5} {row[1]:>6} {row[2]:>4g} {row[3]:>4} {row[4]:>6}")
    say(f"flops {counts['flops']:,}  params {counts['params']:,}  acts {counts['acts']:,}")


@app.command()
def zoo(
    models: Optional[str] = typer.Option(None, "--models", help="Comma-separated zoo models (default: all 24)."),
    regime: str = typer.Option("imagenet", help="The regime the models are built for (flops at its input): a "
                                                "regime name (`dsd spaces`) or a regime .yaml file."),
    out: Optional[Path] = typer.Option(None, "--out", help="Make a run of these models in this folder."),
    repeats: int = typer.Option(1, "--repeats", help="With --out: copies of each model (own training seeds)."),
    force: bool = typer.Option(False, help="With --out: replace a run made with other arguments."),
    json_out: bool = JSON,
):
    """The published RegNet zoo: each model's parameters, its complexity under the regime, and the paper's
    ImageNet top-1 error after 100 epochs. With --out, a run of them to train under a study's protocol
    (`dsd train RUN`) and compare in the report with the published errors.

    \b
    Examples:
      dsd zoo
      dsd describe --model RegNetX-400MF
      dsd zoo --models RegNetX-200MF,RegNetX-400MF --regime fashion --repeats 3 --out runs/zoo
    """
    from dsd.api import zoo_run
    from dsd.design.complexity import complexity
    from dsd.design.regime_files import load_regime
    from dsd.design.zoo import zoo as zoo_models, zoo_model, zoo_spec

    names = [n for n in (models or "").split(",") if n.strip()]
    if models is not None and not names:
        raise BadInput("--models: no zoo model named")
    chosen = [zoo_model(n) for n in names] if models is not None else list(zoo_models())
    rg = load_regime(regime)
    table = [{"name": m.name, "depth": m.depth, "w0": m.w0, "wa": m.wa, "wm": m.wm, "group_width": m.group_width,
              "se_ratio": m.se_ratio, "published_error": m.published_error, **complexity(zoo_spec(m, rg))}
             for m in chosen]
    run = str(zoo_run(out, [m.name for m in chosen], regime=regime, repeats=repeats, force=force)) if out else None
    if json_out:
        emit_json({"regime": rg.name, "models": table, "run": run})
        return
    say_table([["name", "d", "w0", "wa", "wm", "g", "flops", "params", "acts", "top-1 err (100 ep)"]] +
              [[r["name"], str(r["depth"]), f"{r['w0']:g}", f"{r['wa']:g}", f"{r['wm']:g}", str(r["group_width"]),
                f"{r['flops'] / 1e6:,.0f}M", f"{r['params'] / 1e6:.1f}M", f"{r['acts'] / 1e6:.1f}M",
                f"{r['published_error']:.1f}"] for r in table], {0})
    if run:
        say(f"{run}: {len(table) * repeats} models; next: dsd train {shlex.quote(run)}")


def _spec_from_options(regnet: dict, depths, widths, group_widths, bottleneck_ratios, group_width,
                       bottleneck_ratio, regime: str, network: dict):
    """describe's spec from RegNet parameters or explicit stages, under the regime's network, with the
    network options given (not None) taking precedence."""
    from dsd.design.regime_files import load_regime
    from dsd.design.regnet import regnet_stages
    from dsd.design.spec import make_spec, network_for

    if depths is not None:
        d, w, rule = _numbers(depths, "depths"), _numbers(widths, "widths"), None
        if w is None:
            raise BadInput("--depths needs --widths")
    elif None not in (*regnet.values(), group_width):
        d, w = regnet_stages(regnet["depth"], regnet["w0"], regnet["wa"], regnet["wm"])
        rule = {k: regnet[k] for k in ("w0", "wa", "wm")}
    else:
        raise BadInput("give RUN --id K, or --depth --w0 --wa --wm --group-width, or --depths --widths")
    k = len(d)
    net = network_for(load_regime(regime), k).fields()
    net.update({key: value for key, value in network.items() if value is not None})
    g = _numbers(group_widths, "group-widths") or [1 if group_width is None else group_width] * k
    b = _numbers(bottleneck_ratios, "bottleneck-ratios", float) or [bottleneck_ratio] * k
    return make_spec(d, w, b, g, regnet=rule, **net)


def _spec_from_run(run: Path, model_id: int):
    from dsd.design.spec import spec_from_row
    from dsd.runfolder import read_models

    table = read_models(run)
    ids = table.column("model_id").to_pylist()
    if model_id not in ids:
        raise BadInput(f"{run}: no model with id {model_id} (ids {min(ids)}..{max(ids)})")
    return spec_from_row(table.slice(ids.index(model_id), 1).to_pylist()[0])


@app.command()
def reseed(
    run: Path = typer.Argument(..., help="A run folder with trained models."),
    n: int = typer.Option(10, "--n", help="Number of trained models to copy, picked at random."),
    repeats: int = typer.Option(3, "--repeats", help="Copies of each model."),
    seed: int = typer.Option(0, help="Seed of the random pick."),
    out: Optional[Path] = typer.Option(None, help="The copy run's folder (default: RUN-reseed beside RUN)."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary only."),
):
    """Copy N trained models of a run REPEATS times each into a new run, to train them again with other
    seeds: how much a model's error moves with the seed alone is the noise floor of every comparison.

    The copies get new model ids (so new training seeds) and must be trained with the settings the
    originals had: the command to do that is printed.

    \b
    Examples:
      dsd reseed runs/xa                            # 10 models x 3 copies -> runs/xa-reseed
      dsd reseed runs/xa --n 20 --repeats 4 --out runs/xa-noise
    """
    from dsd.runfolder.copies import reseed as make_copies

    made = make_copies(run, n, repeats, seed=seed, out=out)
    _say_copies(made, json_out, "train the copies as {source}'s models were trained (same data, epochs, lr, ...), "
                                "so that only the seed differs:")


@app.command()
def promote(
    run: Path = typer.Argument(..., help="A run folder with trained models."),
    top: int = typer.Option(..., "--top", help="Number of best trained models to promote."),
    repeats: int = typer.Option(1, "--repeats", help="Copies of each model (each trains with its own seed)."),
    out: Optional[Path] = typer.Option(None, help="The new run's folder (default: RUN-topK beside RUN)."),
    json_out: bool = JSON,
):
    """Copy the TOP best trained models of a run (by final error), REPEATS times each, into a new run to
    train with the long schedule: do the short schedule's winners stay ahead when trained fully?

    \b
    Examples:
      dsd promote runs/regnetx --top 5 --repeats 3     # -> runs/regnetx-top5 (15 models)
      dsd train runs/regnetx-top5 --epochs 100
    """
    from dsd.runfolder.copies import promote as make_copies

    made = make_copies(run, top, repeats, out=out)
    _say_copies(made, json_out, "train them with the long schedule, the source's other settings kept "
                                "(change --epochs as the study needs):", epochs=100)


def _say_copies(made, json_out: bool, advice: str, epochs: int | None = None) -> None:
    """What a copy run holds and the `dsd train` command for it (the source's settings, epochs replaced)."""
    from dsd.runfolder.copies import source_settings

    settings = source_settings(made)
    if epochs is not None:
        settings["epochs"] = [epochs]
    command = f"dsd train {shlex.quote(str(made.run))} {_train_options(settings)}".rstrip()
    if json_out:
        emit_json({"run": str(made.run), "source": str(made.source), "models": list(made.model_ids),
                   "repeats": made.repeats, "copy_ids": list(made.copy_ids), "unchanged": made.unchanged,
                   "settings": settings, "train": command})
    if made.unchanged:
        say(f"{made.run}: already made with these arguments; nothing to do")
    else:
        say(f"copied {len(made.model_ids)} trained models of {made.source} {made.repeats} times each -> {made.run} "
            f"({len(made.copy_ids)} models, ids {made.copy_ids[0]}..{made.copy_ids[-1]})")
    warn_mixed_settings(str(made.source), {c: v for c, v in settings.items() if len(v) > 1})
    say(advice.format(source=made.source))
    say(f"next: {command}")


# `dsd train` options of the result columns dsd.runfolder.SETTING_COLUMNS
TRAIN_OPTIONS = {"dataset": "--dataset", "epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr",
                 "wd": "--wd", "warmup_epochs": "--warmup-epochs", "train_images": "--train-images",
                 "eval_images": "--eval-images"}


def _train_options(settings: dict[str, list]) -> str:
    """`dsd train` options giving each setting its one known value (left out when unknown or mixed)."""
    words = []
    for column, values in settings.items():
        if len(values) != 1 or values[0] is None:
            continue
        value = values[0]
        if column == "zero_init_residual":
            words.append("--zero-init-residual" if value else "--no-zero-init-residual")
        else:
            words += [TRAIN_OPTIONS[column], str(value)]  # str: a float's shortest exact form
    return " ".join(shlex.quote(w) for w in words)
