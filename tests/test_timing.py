"""`dsd time` and the timings in the analysis: one row per model, bad input changes nothing, a deeper
model measures longer, and infer_ms / train_ms become statistics like flops."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dsd import runfolder as store
from dsd.analysis.bootstrap import model_statistics, trends
from dsd.analysis.edf import edf_table, normalized_weights, bin_edges
from dsd.analysis.load import load_runs
from dsd.design.spec import ModelSpec
from dsd.training import timing
from dsd.training.timing import time_model
from synthetic_runs import anynet_rows, dsd, write_run

QUICK = ("--device", "cpu", "--batch", "8", "--repeats", "2", "--warmup", "1")


def test_one_row_per_model_and_a_rerun_replaces_only_the_models_timed(tiny_run):
    run = tiny_run(n=3)
    code, out, err = dsd("time", run, *QUICK, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert [t["model_id"] for t in summary["timed"]] == [0, 1, 2] and summary["mixed"] == {}
    table = store.read_timings(run).to_pylist()
    assert [r["model_id"] for r in table] == [0, 1, 2]
    assert all(r["infer_s"] > 0 and r["train_s"] > 0 and r["batch"] == 8 and r["repeats"] == 2 for r in table)
    assert all(r["device"] == "cpu (1 threads)" and r["torch"] == torch.__version__ for r in table)
    assert not (run / store.RESULTS_DIR).exists()

    code, _, err = dsd("time", run, *QUICK[:2], "--batch", "4", "--repeats", "1", "--ids", "1")
    assert code == 0, err
    assert "timed 1 models" in err and "warning:" in err and "batch: 4, 8" in err
    rows = {r["model_id"]: r for r in store.read_timings(run).to_pylist()}
    assert sorted(rows) == [0, 1, 2] and rows[1]["batch"] == 4 and rows[0]["batch"] == rows[2]["batch"] == 8
    assert rows[0]["time"] == table[0]["time"] and rows[0]["infer_s"] == table[0]["infer_s"]


@pytest.mark.parametrize("args, message", [
    (("--device", "gpu"), "--device gpu: expected auto, cpu, cuda or cuda:N"),
    (("--batch", "0"), "--batch must be at least 1, got 0"),
    (("--repeats", "0"), "--repeats must be at least 1, got 0"),
    (("--warmup", "-1"), "--warmup must be at least 0, got -1"),
    (("--threads", "0"), "--threads must be at least 1, got 0"),
    (("--ids", "0,99"), "no model with id 99 (ids are 0..1)"),
    (("--ids", "two"), "--ids two: expected model ids like 0,3,7-9"),
])
def test_bad_input_exits_2_in_one_line_and_builds_and_writes_nothing(tiny_run, monkeypatch, args, message):
    run = tiny_run(n=2)
    before = sorted(p.name for p in run.iterdir())
    monkeypatch.setattr(timing, "time_model", lambda *a, **k: pytest.fail("a model was timed"))
    code, out, err = dsd("time", run, *args)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err
    assert sorted(p.name for p in run.iterdir()) == before


def test_a_missing_gpu_or_a_folder_that_is_no_run_exits_2(tiny_run, tmp_path):
    run = tiny_run(n=2)
    if not torch.cuda.is_available():
        code, _, err = dsd("time", run, "--device", "cuda")
        assert code == 2 and "no CUDA GPU is visible to torch" in err
    code, _, err = dsd("time", tmp_path)
    assert code == 2 and "not a run folder" in err
    assert not (run / store.TIMINGS_FILE).exists()


def stack(depth: int) -> ModelSpec:
    """A fashion-regime X-block model with `depth` blocks in each of its 4 stages."""
    return ModelSpec(depths=(depth,) * 4, widths=(16, 32, 64, 128), bottleneck_ratios=(1.0,) * 4,
                     group_widths=(8,) * 4, strides=(1, 2, 2, 2), stem_width=16, in_channels=1,
                     num_classes=10, resolution=28)


DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU")])]


@pytest.mark.parametrize("device", DEVICES)
def test_a_model_with_eight_times_the_blocks_measures_longer(device):
    """A property, not a threshold: 8 blocks per stage against 1 (several times the work); the median
    of 15 passes keeps a busy machine from reversing it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        shallow, deep = (time_model(stack(d), torch.device(device), 8, 15, 2) for d in (1, 8))
    finally:
        torch.set_num_threads(threads)
    assert deep[0] > shallow[0] and deep[1] > shallow[1], (shallow, deep)
    assert shallow[1] > shallow[0]  # a training step does the forward pass and more


def write_timings(run, rows, batch=8, device="cpu (1 threads)"):
    """Timings for the rows: inference proportional to flops, a training step three times it."""
    store.write_timings(run, [{"model_id": r["model_id"], "device": device, "batch": batch, "repeats": 5,
                               "warmup": 2, "infer_s": r["flops"] * 1e-12, "train_s": 3 * r["flops"] * 1e-12,
                               "torch": "test", "python": "test", "host": "test", "time": "2026-01-01T00:00:00"}
                              for r in rows])


@pytest.fixture(scope="module")
def timed_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("timed")
    rows = anynet_rows(40, np.random.default_rng(5))
    timed, plain = write_run(root / "timed", rows), write_run(root / "plain", rows)
    write_timings(timed, rows)
    return timed, plain, rows


def test_the_analysis_frame_and_statistics_get_the_timings(timed_runs):
    timed, plain, rows = timed_runs
    frame = load_runs([timed])
    flops = np.array([r["flops"] for r in rows], dtype=float)
    np.testing.assert_allclose(frame["infer_ms"], flops * 1e-9)
    np.testing.assert_allclose(frame["train_ms"], 3 * flops * 1e-9)
    assert set(frame["timing_batch"]) == {8} and set(frame["timing_device"]) == {"cpu (1 threads)"}
    stats = model_statistics(frame)
    np.testing.assert_allclose(stats["infer_ms"], frame["infer_ms"])
    assert "train_ms" in stats
    table = trends(frame, ["infer_ms", "flops"], samples=200).set_index("stat")
    # inference time is proportional to flops here, so the best model's values agree
    assert table.at["infer_ms", "best_model"] == pytest.approx(table.at["flops", "best_model"] * 1e-9)


def test_a_run_never_timed_loads_as_before(timed_runs):
    timed, plain, _ = timed_runs
    columns = list(load_runs([plain]).columns)
    added = ["infer_ms", "train_ms", "timing_batch", "timing_device"]
    assert not set(added) & set(columns)
    assert [c for c in load_runs([timed]).columns if c not in added] == columns
    assert not {"infer_ms", "train_ms"} & set(model_statistics(load_runs([plain])))
    both = load_runs([timed, plain])
    assert both["infer_ms"].notna().sum() == len(both) // 2  # the plain run's models have none


def test_edf_normalized_by_a_timing(timed_runs):
    timed, plain, _ = timed_runs
    frame = load_runs([timed])
    table = edf_table(frame, "infer_ms", bins=5)
    values = frame["infer_ms"].to_numpy()
    w = normalized_weights(values, bin_edges(values, 5))
    e = frame["err"].to_numpy()
    assert table.at[0, "mean"] == pytest.approx(np.sum(w * e) / np.sum(w))
    code, out, err = dsd("edf", timed, "--normalize", "train_ms", "--bins", "5", "--json")
    assert code == 0 and json.loads(out)["normalize"] == "train_ms", err
    for runs in ([plain], [timed, plain]):  # untimed models: refused in one line, not a traceback
        code, _, err = dsd("edf", *runs, "--normalize", "infer_ms")
        assert code == 2 and "not every trained model has it" in err and err.count("\n") == 1, err
