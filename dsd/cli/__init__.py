"""The `dsd` command line: thin typer commands that parse, call the library, print.

Commands live in three modules by stage of the pipeline (design, training, analysis), on the app of
common.py with its shared helpers; this module owns the entry point and the error policy (bad input ->
one line and exit 2; other failures -> exit 1). The command modules do without `from __future__ import
annotations`: typer would evaluate each annotation string again at every start (20 ms of `dsd sample`).
"""

import signal
import sys

import typer

from dsd.cli.common import app, say
from dsd.errors import BadInput


def main() -> None:
    """Entry point: run the app with dsd's error policy."""
    # register the commands, in pipeline order (the order `dsd --help` lists them)
    from dsd.cli import design, imports, training, cluster, analysis  # noqa: F401

    if len(sys.argv) == 1:
        sys.argv.append("--help")
    # SIGTERM (how SLURM preempts a task, how `kill` stops one) unwinds like Ctrl-C: `dsd train` then
    # releases its claims, so that a task requeued on another node takes its models at once
    signal.signal(signal.SIGTERM, signal.default_int_handler)

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
