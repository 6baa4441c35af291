"""Sampling speed: candidate draws per second and `dsd sample --n 500` wall time (with interpreter start-up).

Run: python bench/sample.py [--n 500] [--regime imagenet]. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from dsd.design.regimes import get_regime
from dsd.design.sampler import sample
from dsd.design.spaces import builtin_names, load_space


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--regime", default="imagenet")
    args = ap.parse_args()
    regime = get_regime(args.regime)
    print(f"n = {args.n}, regime {regime.name} (flops {regime.flops[0]:.3g}..{regime.flops[1]:.3g}), "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}\n")
    print("| space | candidates drawn | accepted | candidates / s | sample() s | `dsd sample` wall s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in builtin_names():
        space = load_space(name)
        t = time.perf_counter()
        result = sample(space, regime, args.n, seed=0)
        inproc = time.perf_counter() - t
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "dsd", "sample", "--space", name, "--n", str(args.n),
                            "--regime", regime.name, "--out", f"{tmp}/run"], check=True, capture_output=True)
            wall = time.perf_counter() - t
        print(f"| {name} | {result.draws:,} | {100 * args.n / result.draws:.2f}% | "
              f"{result.draws / inproc:,.0f} | {inproc:.2f} | {wall:.2f} |")


if __name__ == "__main__":
    main()
