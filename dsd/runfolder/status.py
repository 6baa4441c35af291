"""The status of a run: its models by state, from its results and the live claims (reads only, no torch)."""
from __future__ import annotations

import numpy as np

from dsd.runfolder import files
from dsd.runfolder.claims import live_claims
from dsd.runfolder.results import read_results

NEAR_CHANCE_POINTS = 5.0  # an error within this many points of chance level is "near chance"
NEAR_CHANCE_SHARE = 0.2   # more than this share of trained models near chance flags the run


def chance_error(num_classes) -> np.ndarray:
    """Top-1 error (%) of guessing: what a diverged model is counted at, and what "near chance" nears."""
    return 100.0 * (1.0 - 1.0 / np.asarray(num_classes, dtype=float))


def near_chance_share(results: list[dict], num_classes: int) -> float | None:
    """The share of trained (done or diverged) models that diverged or ended near chance; None if none."""
    chance = float(chance_error(num_classes))
    trained = [r for r in results if r["status"] in ("done", "diverged")]
    if not trained:
        return None
    bad = [r for r in trained if r["status"] == "diverged" or r["error"] >= chance - NEAR_CHANCE_POINTS]
    return len(bad) / len(trained)


def run_status(run) -> dict:
    """Counts by state and the errors so far of one run (reads only)."""
    meta = files.read_meta(run)
    models = files.read_models(run)
    sampled = models.num_rows
    results = read_results(run, ["model_id", "status", "error", *files.SETTING_COLUMNS]).to_pylist()
    near = near_chance_share(results, max(models.column("num_classes").to_pylist(), default=10))
    counts = {s: sum(1 for r in results if r["status"] == s) for s in files.STATUSES}
    finished = {r["model_id"] for r in results}
    running = live_claims(run)
    errors = [r["error"] for r in results if r["status"] == "done" and r["error"] is not None]
    regime = meta.get("regime") or {}
    return {"run": str(run), "name": meta.get("name"), "space": meta.get("space"),
            "regime": regime.get("name") if isinstance(regime, dict) else None, "sampled": sampled,
            **counts, "running": len(running), "pending": sampled - len(finished | running),
            "best_error": min(errors) if errors else None,
            "mean_error": sum(errors) / len(errors) if errors else None,
            "near_chance": near, "near_chance_flag": near is not None and near > NEAR_CHANCE_SHARE,
            "mixed_settings": files.mixed_settings(results, files.sampled_settings(models))}
