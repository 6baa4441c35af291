"""The `dsd` command line: thin typer commands that parse, call the library, print.

Commands live in three modules by stage of the pipeline (design, training, analysis); this module owns
the app, the error policy (bad input -> one line and exit 2; other failures -> exit 1) and small
helpers every command shares.
"""
from __future__ import annotations

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
        from dsd import __version__

        print(f"dsd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print dsd's version and exit.")) -> None:
    pass


RUNS_ROOT = Path("runs")
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
    """Say that a run pools models trained under different settings (dsd.store.mixed_settings)."""
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


def resolve_runs(runs: list[Path] | None) -> list[Path]:
    """The given run folders, or every run folder under ./runs when none is given."""
    from dsd.store import is_run, require_run

    if runs:
        return [require_run(r) for r in runs]
    found = sorted(p for p in RUNS_ROOT.glob("*") if is_run(p)) if RUNS_ROOT.is_dir() else []
    if not found:
        raise BadInput(f"no run folders given and none found under {RUNS_ROOT}/ (make one with `dsd sample`)")
    return found


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


def main() -> None:
    """Entry point: run the app with dsd's error policy."""
    # register the commands, in pipeline order (the order `dsd --help` lists them)
    from dsd.cli import design  # noqa: F401
    from dsd.cli import training  # noqa: F401
    from dsd.cli import analysis  # noqa: F401

    if len(sys.argv) == 1:
        sys.argv.append("--help")

    # typer may vendor its own click: take UsageError from typer's BadParameter, whichever click it is
    usage_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")

    try:
        code = app(standalone_mode=False)
    except BadInput as e:
        say(f"error: {e}")
        sys.exit(2)
    except usage_error as e:
        say(f"error: {e.format_message()}")
        sys.exit(2)
    except typer.Abort:
        say("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        say("interrupted")
        sys.exit(130)
    except Exception as e:  # noqa: BLE001  (any other failure: one line, exit 1)
        say(f"error: {type(e).__name__}: {e}")
        sys.exit(1)
    code = code if isinstance(code, int) else 0
    if code == 130:  # typer turns Ctrl-C into exit code 130 without a word
        say("interrupted")
    sys.exit(code)
