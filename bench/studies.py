"""Wall times of the paper's study commands that have a target (issue 12), with interpreter start-up:

- `dsd sample --space RegNetX --n 100 --flops-targets 200M,400M,800M,1.6G,3.2G,6.4G` (imagenet): <= 5 s;
- `dsd time RUN --device cpu --batch 8` on fashion-regime models: <= 0.5 s per model (measured inside
  the command, start-up excluded: it is paid once per command, not per model).

Run: python bench/studies.py [--models 20]. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def dsd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dsd", *args], check=True, capture_output=True, text=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", type=int, default=20, help="fashion-regime models to time")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        dsd("sample", "--space", "RegNetX", "--n", "100", "--flops-targets", "200M,400M,800M,1.6G,3.2G,6.4G",
            "--out", tmp)
        rows.append(("`dsd sample` of a 6-target RegNetX series, 100 models each, imagenet", "5 s",
                     f"{time.perf_counter() - t:.2f} s"))
        run = f"{tmp}/fashion"
        dsd("sample", "--space", "AnyNetXA", "--regime", "fashion", "--n", str(args.models), "--out", run)
        timed = json.loads(dsd("time", run, "--device", "cpu", "--batch", "8", "--json").stdout)
        rows.append((f"`dsd time --device cpu --batch 8`, {args.models} fashion AnyNetXA models, per model",
                     "0.5 s", f"{timed['wall_s'] / len(timed['timed']):.2f} s"))
    print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}\n")
    print("| what | target | time |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
