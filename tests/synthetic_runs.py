"""Run folders written from scratch with dsd.runfolder, for the analysis tests (no sampler, no training).

Models are AnyNet-like (random per-stage lists) or made by the RegNet rule; errors follow a rule the
test chooses (by default lowest at d1 = 7), so the statistics have a known right answer.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import yaml

from dsd import runfolder as store
from dsd.design.regnet import regnet_stages

NUM_CLASSES = 10


def _row(i: int, depths, widths, b, g, w0=None, wa=None, wm=None) -> dict:
    depths, widths = [int(v) for v in depths], [int(v) for v in widths]
    flops = int(sum(d * w * w * (1 + 9 / gi) / bi for d, w, bi, gi in zip(depths, widths, b, g)) * 50)
    return {"model_id": i, "space": "synthetic", "seed": 0, "key": f"k{i}", "stem": "simple",
            "stem_width": 32, "block": "X", "depths": depths, "widths": widths,
            "bottleneck_ratios": [float(v) for v in b], "group_widths": [int(v) for v in g],
            "strides": [2] * len(depths), "se_ratio": 0.0, "depth": sum(depths), "w0": w0, "wa": wa,
            "wm": wm, "resolution": 28, "in_channels": 1, "num_classes": NUM_CLASSES, "flops": flops,
            "params": flops // 40 + 1000, "acts": int(np.sqrt(flops)) * 30}


def anynet_rows(n: int, rng: np.random.Generator) -> list[dict]:
    """AnyNetXA-like models: every per-stage value drawn independently."""
    rows = []
    for i in range(n):
        depths = rng.integers(1, 17, 4)
        widths = 8 * np.maximum(1, np.round(np.exp(rng.uniform(0, np.log(128), 4))))
        rows.append(_row(i, depths, widths, rng.choice([1, 2, 4], 4), rng.choice([1, 2, 4, 8, 16, 32], 4)))
    return rows


def regnet_rows(n: int, rng: np.random.Generator) -> list[dict]:
    """Models made by the quantized linear rule with 4 stages (g = 8, b = 1: widths need no compatibility step)."""
    rows = []
    while len(rows) < n:
        d, w0 = int(rng.integers(6, 40)), 8.0 * int(rng.integers(1, 32))
        wa = float(np.exp(rng.uniform(np.log(8), np.log(256))))
        wm = float(np.exp(rng.uniform(np.log(1.5), np.log(3))))
        depths, widths = regnet_stages(d, w0, wa, wm)
        if len(depths) == 4:
            rows.append(_row(len(rows), depths, widths, [1] * 4, [8] * 4, w0, wa, wm))
    return rows


def default_error(row: dict, rng: np.random.Generator) -> float:
    """Lowest at d1 = 7, independent of everything else, plus noise."""
    return 20.0 + 1.5 * abs(row["depths"][0] - 7) + rng.normal(0, 0.7)


def write_run(folder: Path, rows: list[dict], name: str | None = None, errors=None,
              statuses=None, epochs: int = 3, curves=None) -> Path:
    """Write run.yaml, models.parquet and a result per model whose status is not "untrained".

    errors: one error per row (default: default_error, or each curve's last value when curves are
    given); statuses: one of done | failed | diverged | untrained per row (default: all done);
    curves: one per-epoch error curve per row for the done models (default: linear from 80 to the
    error over `epochs` epochs).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(rows))
    if errors is None and curves is not None:
        errors = [float(c[-1]) if len(c) else np.nan for c in curves]
    errors = [default_error(r, rng) for r in rows] if errors is None else list(errors)
    statuses = ["done"] * len(rows) if statuses is None else list(statuses)
    meta = {"name": name or folder.name, "space": "synthetic",
            "regime": {"name": "fashion", "resolution": 28, "in_channels": 1, "num_classes": NUM_CLASSES},
            "seed": 0, "n": len(rows), "dsd_version": "test"}
    (folder / store.RUN_FILE).write_text(yaml.safe_dump(meta, sort_keys=False))
    store.write_parquet(pa.Table.from_pylist(rows, schema=store.MODEL_SCHEMA), folder / store.MODELS_FILE)
    for i, (row, err, status) in enumerate(zip(rows, errors, statuses)):
        if status == "untrained":
            continue
        finished = status == "done"
        if not finished:
            curve = []
        elif curves is None:
            curve = list(np.linspace(80.0, err, epochs))
        else:
            curve = [float(v) for v in curves[i]]
        store.write_result(folder, {
            "model_id": row["model_id"], "status": status, "error": float(err) if finished else None,
            "best_error": float(err) if finished else None, "train_loss": 0.5 if finished else None,
            "epochs": epochs, "dataset": "synthetic", "batch_size": 128, "lr": 0.1, "wd": 5e-4,
            "train_seed": 0, "wall_s": 1.0, "images_per_s": 1000.0, "device": "cpu",
            "error_curve": curve, "loss_curve": [1.0] * len(curve),
            "message": "" if finished else f"{status} on purpose", "versions": "test", "host": "test",
            "time": "2026-01-01T00:00:00"})
    return folder


def dsd(*args) -> tuple[int, str, str]:
    """Run the dsd command line in this process: (exit code, stdout, stderr)."""
    import contextlib
    import io
    import sys

    from dsd.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["dsd", *map(str, args)]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()
