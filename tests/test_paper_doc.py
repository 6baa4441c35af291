"""docs/paper.md: every toy command block runs, in order, in one folder, on synthetic data."""
import os
import re
import subprocess
import sys

from helpers import REPO

TOY = "--dataset synthetic --train-images 128 --eval-images 64 --batch-size 32 --epochs 1 --device cpu --cpu-workers 1"


def toy_blocks() -> list[str]:
    return re.findall(r"```toy\n(.*?)```", (REPO / "docs" / "paper.md").read_text(), re.S)


def test_every_toy_block_of_the_paper_page_runs(tmp_path):
    blocks = toy_blocks()
    assert len(blocks) >= 15
    script = "\n".join(["set -euo pipefail", f'dsd() {{ "{sys.executable}" -m dsd "$@"; }}', *blocks])
    env = {**os.environ, "TOY": TOY, "MPLBACKEND": "Agg"}
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "xc.html").is_file() and (tmp_path / "best.html").is_file()
    assert "edf-" in (tmp_path / "findings.json").read_text()
