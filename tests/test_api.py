"""The public API as the README shows it, run as a user would: a script read from stdin (no main guard)."""
from __future__ import annotations

import re
import subprocess
import sys

from helpers import REPO

from dsd.runfolder import read_results


def readme_python() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("\n## Python\n"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readmes_python_section_runs_from_stdin(tmp_path):
    proc = subprocess.run([sys.executable, "-"], input=readme_python(), cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "py-regnetx"
    assert read_results(run).num_rows == 6 and (run / "results.parquet").is_file()  # compacted at the end
    assert (run / "report.html").is_file()
    assert "'flops': " in proc.stdout and "failed" not in proc.stderr


def test_the_api_raises_bad_input_with_the_clis_message(tmp_path):
    import pytest

    import dsd

    with pytest.raises(dsd.BadInput, match="--n must be positive"):
        dsd.sample_run("RegNetX", 0, out=tmp_path / "r")
    with pytest.raises(dsd.BadInput, match="unknown space"):
        dsd.sample_run("NoSuchSpace", 5, out=tmp_path / "r")
    assert not (tmp_path / "r").exists()
