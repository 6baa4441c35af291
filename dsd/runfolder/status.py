"""The status of a run: its models by state, from its results and the live claims (reads only, no torch)."""
from __future__ import annotations

from dsd.runfolder import files
from dsd.runfolder.claims import live_claims


def run_status(run) -> dict:
    """Counts by state and the errors so far of one run (reads only)."""
    meta = files.read_meta(run)
    sampled = files.read_models(run).num_rows
    results = files.read_results(run).to_pylist()
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
            "mixed_settings": files.mixed_settings(results)}
