"""Small helpers shared by the tests: run the CLI as a user would."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def dsd(*args, cwd=None, check=False, timeout=600) -> subprocess.CompletedProcess:
    """Run `dsd ARGS` in a fresh interpreter (python -m dsd), capturing stdout and stderr."""
    proc = subprocess.run([sys.executable, "-m", "dsd", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"dsd {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc
