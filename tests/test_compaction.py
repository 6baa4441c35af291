"""Compaction of a run's results (dsd.runfolder.results): nothing lost or changed, safe while trainers
write and against kill -9 at any moment, and analysis of a compacted run equal to that of the files."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dsd import runfolder
from dsd.errors import BadInput
from dsd.runfolder import results as store
from tests.synthetic_runs import anynet_rows, write_run


def _run(tmp_path, n=30, statuses=None, name="xa") -> Path:
    return write_run(tmp_path / name, anynet_rows(n, np.random.default_rng(1)), statuses=statuses)


def test_a_compacted_run_reads_and_analyses_the_same(tmp_path):
    from dsd.api import edf_table, load_runs, trends

    run = _run(tmp_path, statuses=["done"] * 26 + ["failed", "diverged", "untrained", "done"])
    before, frame_before = runfolder.read_results(run), load_runs([run])
    summary = runfolder.compact(run)
    assert summary == {"folded": 29, "kept": 0, "rows": 29, "busy": False}
    assert runfolder.read_results(run).equals(before)
    frame_after = load_runs([run])
    pd.testing.assert_frame_equal(frame_after, frame_before)
    pd.testing.assert_frame_equal(edf_table(frame_after), edf_table(frame_before))
    pd.testing.assert_frame_equal(trends(frame_after), trends(frame_before))
    assert not list((run / runfolder.RESULTS_DIR).glob("*.parquet"))
    assert runfolder.compact(run) == {"folded": 0, "kept": 0, "rows": 29, "busy": False}
    assert runfolder.read_results(run).equals(before)


def test_a_models_own_file_stands_over_its_compacted_row(tmp_path):
    run = _run(tmp_path, n=5, statuses=["done", "failed", "done", "done", "done"])
    runfolder.compact(run)
    assert runfolder.result_stamp(run, 1)[0] == "failed"
    retried = {**runfolder.read_results(run).to_pylist()[1], "status": "done", "error": 12.5}
    runfolder.write_result(run, retried)  # `dsd train --retry-failed` after compaction
    assert runfolder.result_stamp(run, 1)[0] == "done"
    assert runfolder.read_results(run).to_pylist()[1]["error"] == 12.5
    runfolder.compact(run)
    assert store.read_compacted(run).to_pylist()[1]["error"] == 12.5
    assert runfolder.read_results(run).num_rows == 5


def test_files_of_models_being_trained_stay_until_final(tmp_path):
    run = _run(tmp_path, n=4, statuses=["done", "failed", "done", "done"])
    assert runfolder.claim(run, 0) and runfolder.claim(run, 1)  # this process "trains" them
    summary = runfolder.compact(run)
    assert summary["kept"] == 2 and runfolder.result_path(run, 0).exists() and runfolder.result_path(run, 1).exists()
    runfolder.release(run, 0), runfolder.release(run, 1)
    assert runfolder.compact(run)["folded"] == 2


def test_one_compaction_at_a_time(tmp_path):
    run = _run(tmp_path, n=3)
    assert runfolder.claim(run, store.COMPACT_LOCK)
    assert runfolder.compact(run)["busy"]
    assert len(list((run / runfolder.RESULTS_DIR).glob("*.parquet"))) == 3
    runfolder.release(run, store.COMPACT_LOCK)
    assert not runfolder.compact(run)["busy"]


def test_training_plans_from_the_compacted_results(tmp_path):
    from dsd.training.jobs import plan
    from dsd.training.settings import settings_for
    from dsd.design.regimes import get_regime

    run = _run(tmp_path, n=6, statuses=["done", "failed", "untrained", "diverged", "done", "untrained"])
    runfolder.compact(run)
    assert not list((run / runfolder.RESULTS_DIR).glob("*.parquet"))
    settings = settings_for(get_regime("fashion"), dataset="synthetic")
    assert [j.model_id for j in plan(run, settings)] == [2, 5]
    assert [j.model_id for j in plan(run, settings, retry_failed=True)] == [1, 2, 3, 5]


def test_write_results_refuses_models_that_have_results(tmp_path):
    run = _run(tmp_path, n=3)
    row = runfolder.read_results(run).to_pylist()[0]
    before = runfolder.read_results(run)
    with pytest.raises(BadInput, match="already have results"):
        runfolder.write_results(run, [row])
    assert runfolder.read_results(run).equals(before)


def test_dsd_compact_command(tmp_path):
    run = _run(tmp_path, n=4)
    code, out, err = _cli("compact", run, "--json")
    assert code == 0 and json.loads(out)[0]["folded"] == 4
    code, out, err = _cli("compact", tmp_path / "nowhere")
    assert code == 2 and err.count("\n") == 1 and "no such run folder" in err


def _cli(*args):
    from tests.synthetic_runs import dsd as in_process

    return in_process(*args)


TRAINER = textwrap.dedent("""
    # a stand-in for `dsd train`: claims each model, writes its row, releases; logs what it wrote
    import json, sys, time
    from dsd import runfolder
    run, log, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])
    rows = json.load(open(sys.argv[4]))
    with open(log, "a") as out:
        for row in rows:
            assert runfolder.claim(run, row["model_id"])
            runfolder.write_result(run, row)
            runfolder.release(run, row["model_id"])
            out.write(f"{row['model_id']}\\n"); out.flush()
            time.sleep(pause)
""")


def test_kill_9_during_compaction_with_a_trainer_running_loses_and_changes_nothing(tmp_path):
    """A trainer writes 150 results while compactions start and are killed (SIGKILL) at random moments,
    and reads check that every row logged before they began is there, unchanged."""
    n = 150
    run = _run(tmp_path, n=n, statuses=["untrained"] * n)
    truth = _run(tmp_path, n=n, name="truth")  # the rows the trainer will write
    expected = {r["model_id"]: r for r in runfolder.read_results(truth).to_pylist()}
    (tmp_path / "rows.json").write_text(json.dumps(list(expected.values())))
    log = tmp_path / "written.log"
    log.touch()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    trainer = subprocess.Popen([sys.executable, "-c", TRAINER, str(run), str(log), "0.02", str(tmp_path / "rows.json")],
                               env=env)
    rng, kills = random.Random(0), 0
    try:
        while trainer.poll() is None:
            compactor = subprocess.Popen([sys.executable, "-m", "dsd", "compact", str(run)], env=env,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.2, 1.2))  # python start-up is most of it: kills land all through
            if compactor.poll() is None:
                compactor.send_signal(signal.SIGKILL)
                kills += 1
            compactor.wait()
            logged = {int(line) for line in log.read_text().split()}
            seen = {r["model_id"]: r for r in runfolder.read_results(run).to_pylist()}
            assert logged <= seen.keys()
            assert all(seen[i] == expected[i] for i in seen)
    finally:
        trainer.kill()
    assert trainer.wait() == 0 and kills > 0
    runfolder.compact(run)
    assert runfolder.read_results(run).to_pylist() == [expected[i] for i in range(n)]
    assert not list(run.glob(".*.tmp")) and not list((run / runfolder.RESULTS_DIR).glob("*.parquet"))


def test_a_result_file_folded_while_it_is_read_is_found_in_the_compacted_file(tmp_path, monkeypatch):
    run = _run(tmp_path, n=2)
    rows = runfolder.read_results(run).to_pylist()
    runfolder.compact(run)
    runfolder.write_result(run, rows[0])  # in both places, as between a compaction's write and its delete
    original = store._parquet

    def folded_first(path, read):  # another process folds a model's file just before this read
        if Path(path).parent.name == runfolder.RESULTS_DIR:
            Path(path).unlink(missing_ok=True)
        return original(path, read)

    monkeypatch.setattr(store, "_parquet", folded_first)
    assert runfolder.result_stamp(run, 0) == ("done", rows[0]["time"])
    runfolder.write_result(run, rows[1])
    assert runfolder.result_of(run, 1) == rows[1]


def test_old_result_files_read_with_the_new_columns_and_a_corrupt_one_is_named(tmp_path):
    import pyarrow.parquet as pq

    run = _run(tmp_path, n=3)
    old = pq.read_table(runfolder.result_path(run, 1)).drop_columns(list(runfolder.files.RESULT_COLUMNS_ADDED))
    pq.write_table(old, runfolder.result_path(run, 1))  # written before those columns existed
    assert runfolder.read_results(run)["warmup_epochs"].to_pylist()[1] is None
    runfolder.result_path(run, 2).write_bytes(b"not parquet")
    with pytest.raises(BadInput, match="2.parquet"):
        runfolder.read_results(run)
    with pytest.raises(BadInput, match="2.parquet"):
        runfolder.compact(run)
    assert not (run / runfolder.COMPACTED_FILE).exists() and len(list((run / runfolder.RESULTS_DIR).iterdir())) == 3


def test_a_malformed_result_file_is_never_folded(tmp_path):
    import pyarrow.parquet as pq

    run = _run(tmp_path, n=2)
    pq.write_table(pq.read_table(runfolder.result_path(run, 0)).drop_columns(["status"]), runfolder.result_path(run, 0))
    for read in (runfolder.read_results, runfolder.compact):
        with pytest.raises(BadInput, match="0.parquet: missing columns status"):
            read(run)
    assert runfolder.result_path(run, 0).exists() and not (run / runfolder.COMPACTED_FILE).exists()


def test_a_failed_model_retrained_elsewhere_since_the_plan_is_not_trained_again(tmp_path):
    from dsd.design.regimes import get_regime
    from dsd.training.jobs import Feed, plan
    from dsd.training.settings import settings_for

    run = _run(tmp_path, n=3, statuses=["failed", "failed", "done"])
    jobs = plan(run, settings_for(get_regime("fashion"), dataset="synthetic"), retry_failed=True)
    assert [j.model_id for j in jobs] == [0, 1]
    again = {**runfolder.result_of(run, 0), "time": "2026-11-29T20:00:00"}  # another task re-failed it
    runfolder.write_result(run, again)
    feed = Feed(jobs)
    try:
        assert feed.next().model_id == 1 and feed.next() is None
    finally:
        feed.close()
