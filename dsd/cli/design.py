"""Design commands: `dsd spaces`, `dsd sample`, `dsd describe`, `dsd reseed`. None of them imports torch."""
from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Optional

import typer

from dsd.cli.common import JSON, app, emit_json, say, warn_mixed_settings
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
    """List the built-in design spaces and regimes.

    \b
    Examples:
      dsd spaces
      dsd spaces --json
    """
    from dsd.design.regimes import REGIMES
    from dsd.design.spaces import builtin_names, load_space

    rows = []
    for name in builtin_names():
        s = load_space(name)
        rows.append({"name": s.name, "short": s.short, "block": s.network["block"], "stages": s.stages,
                     "free_dims": s.free_dims(), "size": s.size(), "continuous": s.continuous(),
                     "description": s.description})
    regimes = [r.as_dict() for r in REGIMES.values()]
    if json_out:
        emit_json({"spaces": [{**r, "size": None if math.isinf(r["size"]) else r["size"]} for r in rows],
                   "regimes": regimes})
        return
    say(f"{'space':10} {'short':8} {'block':5} {'stages':6} {'free dims':9} {'size':>10}  description")
    for r in rows:
        size = f"{r['size']:.1e}" if not math.isinf(r["size"]) else "continuous"
        note = f" (continuous: {', '.join(r['continuous'])})" if r["continuous"] else ""
        say(f"{r['name']:10} {r['short']:8} {r['block']:5} {r['stages']:<6} {r['free_dims']:<9} {size:>10}  "
            f"{r['description']}{note}")
    say("")
    say(f"{'regime':9} {'px':>4} {'ch':>3} {'classes':>7} {'stem':7} {'strides':9} {'flops':12} dataset")
    for r in regimes:
        strides = ",".join(map(str, r["strides"])) if r["strides"] else "space's"
        say(f"{r['name']:9} {r['resolution']:>4} {r['in_channels']:>3} {r['num_classes']:>7} "
            f"{r['stem'] or 'space':7} {strides:9} {_band(*r['flops']):12} {r['dataset']}")
    say("")
    say(f"{'protocol':9} {'epochs':>6} {'batch':>5} {'lr':>6} {'wd':>7} {'warm-up':>7} {'zero-init':>9} {'images':>13}")
    for r in regimes:
        t = r["train"]
        images = f"{t['train_images'] or 'all'}/{t['eval_images'] or 'all'}"
        say(f"{r['name']:9} {t['epochs']:>6} {t['batch_size']:>5} {t['lr']:>6g} {t['wd']:>7g} "
            f"{t['warmup_epochs']:>7g} {'yes' if t['zero_init_residual'] else 'no':>9} {images:>13}")


@app.command()
def sample(
    space: str = typer.Option(..., "--space", help="Built-in space name (see `dsd spaces`) or a space .yaml file."),
    n: int = typer.Option(..., "--n", help="Number of models to sample."),
    regime: Optional[str] = typer.Option(None, help="imagenet | cifar | fashion (default: the space's, else imagenet)."),
    seed: int = typer.Option(0, min=0, help="Sampling seed; model i depends only on (space, regime, seed, i)."),
    out: Optional[Path] = typer.Option(None, help="Run folder (default: runs/<space short name>)."),
    flops: Optional[str] = typer.Option(None, help="Flops range, e.g. 360M:400M, :1.5G, 2e6: (overrides the regime)."),
    params: Optional[str] = typer.Option(None, help="Params range, e.g. :2M."),
    acts: Optional[str] = typer.Option(None, help="Activations range, e.g. :1M."),
    force: bool = typer.Option(False, "--force", help="Replace a run folder made with other arguments (deletes its results)."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary only."),
):
    """Sample N models from a design space under a complexity band (rejection sampling).

    \b
    Examples:
      dsd sample --space AnyNetXC --n 500                  # -> runs/xc, 360M..400M flops at 224 px
      dsd sample --space RegNetX --regime cifar --n 100
      dsd sample --space spaces/examples/regnet_se_cifar.yaml --n 50 --flops 100M:140M
    """
    from dsd.api import sample_run

    made = sample_run(space, n, regime=regime, seed=seed, out=out, flops=flops, params=params, acts=acts,
                      force=force)
    folder, rg = made.run, made.regime
    if made.unchanged:
        say(f"{folder}: already sampled with these arguments; nothing to do")
        if json_out:
            emit_json({"run": str(folder), "n": n, "unchanged": True})
        return
    summary = {"run": str(folder), "space": made.space.name, "regime": rg.name, "n": n, "seed": seed,
               "draws": made.draws, "acceptance": n / made.draws, "duplicates": made.duplicates,
               "seconds": round(made.seconds, 3)}
    if json_out:
        emit_json(summary)
    say(f"sampled {n} models from {made.space.name} ({rg.name}: flops {_band(*rg.flops)}, params "
        f"{_band(*rg.params)}, acts {_band(*rg.acts)}) in {made.seconds:.2f} s: {made.draws:,} candidates, "
        f"{100 * n / made.draws:.2f}% accepted -> {folder}")
    say(f"next: dsd train {folder}")


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
    regime: str = typer.Option("imagenet", help="Defaults for resolution, channels, classes, stem, strides."),
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
            "resolution": spec.resolution, "in_channels": spec.in_channels, "num_classes": spec.num_classes}
    if json_out:
        emit_json(info)
        return
    say(f"{spec.block} blocks, {spec.stem} stem ({spec.stem_width}), {spec.resolution} px, "
        f"{spec.in_channels} channels, {spec.num_classes} classes, SE {spec.se_ratio:g}")
    say(f"{'stage':5} {'depth':>5} {'width':>6} {'b':>4} {'g':>4} {'stride':>6}")
    for i, row in enumerate(zip(spec.depths, spec.widths, spec.bottleneck_ratios, spec.group_widths, spec.strides)):
        say(f"{i + 1:<5} {row[0]:>5} {row[1]:>6} {row[2]:>4g} {row[3]:>4} {row[4]:>6}")
    say(f"flops {counts['flops']:,}  params {counts['params']:,}  acts {counts['acts']:,}")


def _spec_from_options(regnet: dict, depths, widths, group_widths, bottleneck_ratios, group_width,
                       bottleneck_ratio, regime: str, network: dict):
    """describe's spec from RegNet parameters or explicit stages, under the regime's network, with the
    network options given (not None) taking precedence."""
    from dsd.design.regimes import get_regime
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
    net = network_for(get_regime(regime), k).fields()
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
    from dsd.runfolder.copies import reseed as make_copies, source_settings

    made = make_copies(run, n, repeats, seed=seed, out=out)
    settings = source_settings(made)
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
    say(f"train the copies as {made.source}'s models were trained (same data, epochs, lr, ...), so that only "
        f"the seed differs:")
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
