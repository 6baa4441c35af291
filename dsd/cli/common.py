"""The typer app and the small helpers every command shares (output, --out checks, --json)."""

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import typer

from dsd.errors import BadInput

app = typer.Typer(
    name="dsd",
    help="Design space design: sample, train and compare populations of networks (RegNet / NDS).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        from dsd.version import __version__

        print(f"dsd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print dsd's version and exit.")) -> None:
    pass


RUNS_ARG = typer.Argument(None, metavar="RUN", help="Run folders (default: every run under ./runs).",
                          show_default=False)
JSON = typer.Option(False, "--json", help="Print JSON only (on stdout).")


def say(message: str) -> None:
    """Human text goes to stderr so that stdout stays clean for --json and piping."""
    print(message, file=sys.stderr, flush=True)


def say_table(cells: list[list[str]], left: set[int]) -> None:
    """An aligned text table on stderr: cells[0] is the header; columns in `left` align left."""
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    for row in cells:
        say("  ".join(v.ljust(w) if i in left else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths))))


def warn_mixed_settings(run: str, differ: dict[str, list]) -> None:
    """Say that a run pools models trained under different settings (dsd.runfolder.mixed_settings)."""
    if differ:
        what = "; ".join(f"{c}: {', '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in values)}"
                         for c, values in differ.items())
        say(f"warning: {run}: its models were trained under different settings ({what}); "
            f"their errors are not comparable")


def emit_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=_json_default))


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def check_out(out: Path) -> Path:
    """--out FILE, refused before any work when it names a folder or lies where nothing can be written.

    Missing folders on the way are made when the file is written.
    """
    if out.is_dir():
        raise BadInput(f"--out {out}: is a folder; give a file name")
    existing = out.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise BadInput(f"--out {out}: cannot write into {existing}")
    return out


@contextmanager
def writing(path: Path):
    """An OSError while writing an output file ends as one line naming the file (exit 2), not a traceback.

    check_out catches most bad places up front; this catches the rest (e.g. a path under /proc)."""
    try:
        yield
    except OSError as e:
        raise BadInput(f"{path}: cannot write there ({e.strerror or e})") from None


def check_figure_out(out: Path | None) -> None:
    """--out of a figure: PNG, SVG or PDF by extension, somewhere it can be written (None: the default)."""
    if out is None:
        return
    if out.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise BadInput(f"--out {out}: a figure must end in .png, .svg or .pdf")
    check_out(out)


def figure_path(out: Path | None, default_dir: Path, default_name: str) -> Path:
    """Where a figure goes: --out FILE or DIR/NAME.png."""
    check_figure_out(out)
    return out or Path(default_dir) / f"{default_name}.png"
