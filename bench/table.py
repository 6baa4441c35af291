"""The markdown table every bench script ends with: a header naming the machine, then what / target / time."""
from __future__ import annotations

import os
import platform


def print_table(title: str, rows, digits: int = 2, extra: str = "") -> None:
    """Print `title timings on CPU, Python X[extra]`, then one row per (what, target, seconds)."""
    cpu = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    print(f"{title} timings on {cpu}, Python {platform.python_version()}{extra}\n")
    print("| what | target | time |")
    print("|---|---|---|")
    for what, target, seconds in rows:
        print(f"| {what} | {target} | {seconds:.{digits}f} s |")
