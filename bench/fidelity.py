"""Fidelity: does a short CPU protocol rank design spaces as the paper does? A real study on Fashion-MNIST.

For each protocol asked for, n models of each space (fashion regime, one sampling seed) are trained on
this machine's CPU and compared: per space the median / mean / min error, the share of models that
diverged or ended near chance, the KS test against the first space, and Kendall's tau between the
ranking after epoch 1 and the final one; then the paper's orderings (XA ~ XC; XD, XE not worse than XC;
XE and RegNetX better than XA) with one-sided Mann-Whitney p-values, for the spaces present. The runs
live in ROOT/PROTOCOL/SPACE, so an interrupted study resumes where it stopped (re-run the same command);
the time column is the sum of the models' training wall times divided by the number of workers (what
the study costs on this machine).

Run: python bench/fidelity.py [--protocol warmup,plain] [--spaces AnyNetXA,...] [--n 30] [--seed 2026]
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import date

import numpy as np
from scipy import stats

import dsd
from dsd.runfolder.status import NEAR_CHANCE_POINTS, near_chance_share

SPACES = ("AnyNetXA", "AnyNetXC", "AnyNetXD", "AnyNetXE", "RegNetX")
COMMON = {"epochs": 3, "batch_size": 64, "train_images": 8000, "eval_images": 2000}
PROTOCOLS = {  # each: options of `dsd train` over the fashion regime's protocol
    "plain": {**COMMON, "warmup_epochs": 0.0, "zero_init_residual": False},
    "warmup": {**COMMON, "warmup_epochs": 0.5, "zero_init_residual": False},
    "warmup1": {**COMMON, "warmup_epochs": 1.0, "zero_init_residual": False},
    "warmup-zero": {**COMMON, "warmup_epochs": 1.0, "zero_init_residual": True},
    "warmup-5ep": {**COMMON, "epochs": 5, "warmup_epochs": 0.5, "zero_init_residual": False},
}


def study(protocol: str, spaces: list[str], args) -> list[str]:
    """Sample and train (resuming) one protocol's runs; return their folders in the order of spaces."""
    runs = [dsd.sample_run(space, args.n, regime="fashion", seed=args.seed,
                           out=os.path.join(args.root, protocol, space.lower())).run for space in spaces]
    dsd.train_runs(runs, device="cpu", cpu_workers=args.cpu_workers, dataset="fashion-mnist",
                   data_dir=args.data_dir, **PROTOCOLS[protocol])
    return runs


def one_sided(better, worse) -> float:
    """Mann-Whitney p-value for "better has lower errors than worse"."""
    return float(stats.mannwhitneyu(better, worse, alternative="less").pvalue)


ORDERINGS = (("AnyNetXC", "AnyNetXA", "XA ~ XC"), ("AnyNetXA", "AnyNetXC", "XA ~ XC"),
             ("AnyNetXD", "AnyNetXC", "XD not worse than XC"), ("AnyNetXC", "AnyNetXD", "XD not worse than XC"),
             ("AnyNetXE", "AnyNetXC", "XE not worse than XC"), ("AnyNetXC", "AnyNetXE", "XE not worse than XC"),
             ("AnyNetXE", "AnyNetXA", "XE better than XA"), ("RegNetX", "AnyNetXA", "RegNetX better than XA"))


def report(protocol: str, spaces: list[str], runs, workers: int) -> None:
    frame = dsd.load_runs(runs)
    table = dsd.edf_table(frame).set_index("run")
    errors = {}
    print(f"\n### protocol `{protocol}`: {PROTOCOLS[protocol]}\n")
    print(f"| space | n | median | mean | min | near chance | KS D vs {spaces[0]} | KS p | tau(epoch 1, final) | time |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for space, run in zip(spaces, runs):
        part = frame[frame["run"] == os.path.basename(run)]
        done = part[part["status"] == "done"]
        errors[space] = part["err"].dropna().to_numpy()
        near = near_chance_share(part.to_dict("records"), int(part["num_classes"].max()))
        first = done["error_curve"].map(lambda c: c[0])
        tau = stats.kendalltau(first, done["err"]).statistic if len(done) > 2 else float("nan")
        row = table.loc[os.path.basename(run)]
        minutes = part["wall_s"].sum() / workers / 60
        ks = "- | -" if space == spaces[0] else f"{row['ks_d']:.2f} | {row['ks_p']:.2g}"
        print(f"| {space} | {len(errors[space])} | {row['median']:.1f} | {row['mean']:.1f} | {row['min']:.1f} | "
              f"{near:.0%} | {ks} | {tau:.2f} | {minutes:.1f} min |")
    print(f"\nnear chance: diverged, or error within {NEAR_CHANCE_POINTS:g} points of chance (90%).")
    print("orderings (one-sided Mann-Whitney p; small p: the first is better):")
    e = errors
    for a, b, paper in (o for o in ORDERINGS if o[0] in e and o[1] in e):
        print(f"- {a} better than {b}: p = {one_sided(e[a], e[b]):.3g} (median {np.median(e[a]):.1f} vs "
              f"{np.median(e[b]):.1f}; paper: {paper})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", default="warmup,plain", help=f"comma-separated, of: {', '.join(PROTOCOLS)}")
    ap.add_argument("--spaces", default=",".join(SPACES), help="comma-separated; the first is the KS reference")
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--root", default=os.path.join("runs", "fidelity"))
    ap.add_argument("--cpu-workers", type=int, default=2)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--report-only", action="store_true", help="print the tables of what is trained; train nothing")
    args = ap.parse_args()
    protocols = [p.strip() for p in args.protocol.split(",") if p.strip()]
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        ap.error(f"unknown protocol {unknown[0]} (known: {', '.join(PROTOCOLS)})")
    spaces = [s.strip() for s in args.spaces.split(",") if s.strip()]
    print(f"fidelity study on {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{date.today()}: n = {args.n} per space, sampling seed {args.seed}, Fashion-MNIST, "
          f"{args.cpu_workers} CPU workers")
    for protocol in protocols:
        start = time.perf_counter()
        runs = ([os.path.join(args.root, protocol, s.lower()) for s in spaces] if args.report_only
                else study(protocol, spaces, args))
        if not args.report_only:
            print(f"\n(this invocation: {(time.perf_counter() - start) / 60:.1f} min)")
        report(protocol, spaces, runs, args.cpu_workers)


if __name__ == "__main__":
    main()
