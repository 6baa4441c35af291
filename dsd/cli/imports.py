"""Import commands: `dsd import nds FILE.json` and `dsd import pycls SWEEP_DIR` (dsd.importers)."""

import shlex
from pathlib import Path
from typing import Optional

import typer

from dsd.cli.common import JSON, app, emit_json, say

imports = typer.Typer(name="import", help="Import populations trained elsewhere (NDS data, pycls sweeps) as run folders.",
                      no_args_is_help=True, add_completion=False, rich_markup_mode=None)
app.add_typer(imports, name="import")

OUT = typer.Option(None, "--out", help="Run folder (default: runs/nds-NAME or runs/pycls-NAME, from the source's name).")
FORCE = typer.Option(False, "--force", help="Replace a run folder that holds another run or another import.")


@imports.command("nds")
def nds(
    file: Path = typer.Argument(..., help="An NDS data file, e.g. ResNet.json or ResNeXt-A_in.json."),
    out: Optional[Path] = OUT,
    regime: Optional[str] = typer.Option(None, help="cifar | imagenet (default: imagenet when the file's name "
                                                    "ends in _in, else cifar)."),
    force: bool = FORCE,
    json_out: bool = JSON,
):
    """Import an NDS file (a list of jobs, or {"top": [...], "mid": [...]}) as a run folder: every model
    counted by dsd and checked against the file's flops and params, every result with its curves.

    \b
    Examples:
      dsd import nds ResNeXt-A.json                    # -> runs/nds-resnext-a
      dsd import nds Vanilla_lr-wd_in.json --out runs/vanilla-in
    """
    from dsd.api import import_nds

    _report(import_nds(file, out=out, force=force, regime=regime), json_out)


@imports.command("pycls")
def pycls(
    sweep_dir: Path = typer.Argument(..., help="A pycls sweep folder (cfgs/*.yaml, logs/*/stdout.log, sweep.json)."),
    out: Optional[Path] = OUT,
    force: bool = FORCE,
    json_out: bool = JSON,
):
    """Import a pycls sweep (AnyNet and RegNet configs) as a run folder; jobs whose last epoch is not
    tested yet come in as untrained models.

    \b
    Examples:
      dsd import pycls sweeps/regnetx_cifar   # -> runs/pycls-regnetx_cifar
    """
    from dsd.api import import_pycls

    _report(import_pycls(sweep_dir, out=out, force=force), json_out)


def _report(made, json_out: bool) -> None:
    """Say what the import did and how dsd's complexity compares with the source's; with --json, only its
    JSON summary (on stdout)."""
    run, source = made.run, made.source
    if json_out:
        emit_json({"run": str(run), "format": source.format, "source": source.name, "models": made.n,
                   "results": made.results, "unfinished": made.unfinished, "unchanged": made.unchanged,
                   "completed": made.completed, "complexity": made.comparison, "seconds": round(made.seconds, 3)})
        return
    if made.unchanged:
        say(f"{run}: already imported from {source.name}; nothing to do")
        return
    if made.completed:
        say(f"{run}: completed an earlier import of {source.name} cut short ({made.completed} results added)")
    else:
        unfinished = f", {made.unfinished:,} unfinished" if made.unfinished else ""
        say(f"imported {made.n:,} models ({made.results:,} with results{unfinished}) from {source.name} "
            f"({source.format}) in {made.seconds:.2f} s -> {run}")
    for kind, c in made.comparison.items():
        say(_comparison(kind, c))
    say(f"next: dsd edf {shlex.quote(str(run))}")


def _comparison(kind: str, c: dict) -> str:
    if not c["compared"]:
        return f"{kind}: the source gives none to check dsd's counts against"
    if not c["differ"]:
        return f"{kind}: dsd's counts equal the source's for all {c['compared']:,} models"
    return (f"{kind}: dsd's counts differ from the source's for {c['differ']:,} of {c['compared']:,} models "
            f"(largest relative difference {100 * c['max_rel_diff']:.3g}%, {c['worst']}); imported with dsd's")
