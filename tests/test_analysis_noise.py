"""The noise floor (dsd.analysis.noise) on planted seed noise and against a direct numpy computation."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dsd import runfolder as store
from dsd.analysis.load import load_runs
from dsd.analysis.noise import COLUMNS, noise_floor, pooled_sd, within_noise
from synthetic_runs import anynet_rows, write_run


def write_copies(source, out, model_ids, repeats, errors, **settings):
    """A copy run of source with a done result per copy (errors in copy order; None: left untrained),
    trained like synthetic_runs.write_run's models unless settings say otherwise."""
    made = store.copy_models(source, model_ids, repeats, out, {"made_by": "dsd reseed"})
    for copy_id, err in zip(made.copy_ids, errors):
        if err is not None:
            store.write_result(out, {"model_id": copy_id, "status": "done", "error": err, "best_error": err,
                                     "epochs": 3, "dataset": "synthetic", "batch_size": 128, "lr": 0.1,
                                     "wd": 5e-4, "train_seed": 1, **settings})
    return made


def test_planted_seed_noise_and_model_spread_are_recovered(tmp_path):
    rng = np.random.default_rng(11)
    true = rng.normal(25, 3, 40)
    source = write_run(tmp_path / "xa", anynet_rows(40, rng), errors=true + rng.normal(0, 0.5, 40))
    copies = true.repeat(3) + rng.normal(0, 0.5, 120)
    write_copies(source, tmp_path / "xa-reseed", list(range(40)), 3, copies)
    row = noise_floor(load_runs([source, tmp_path / "xa-reseed"])).iloc[0]
    assert (row["run"], row["source"], row["models"], row["repeats"], row["originals"], row["df"]) == \
           ("xa-reseed", "xa", 40, 3, 40, 120)
    assert row["seed_sd_lo"] < 0.5 < row["seed_sd_hi"] and row["seed_sd"] == pytest.approx(0.5, abs=0.06)
    assert row["model_sd_from"] == "source run" and row["model_sd"] == pytest.approx(3, abs=0.5)
    assert row["ratio"] == pytest.approx(row["seed_sd"] / row["model_sd"])


def test_small_case_equals_numpy(tmp_path):
    source = write_run(tmp_path / "src", anynet_rows(5, np.random.default_rng(0)), errors=[20, 24, 30, 27, 22])
    write_copies(source, tmp_path / "cp", [1, 2, 4], 3, [25, 23.5, None, 31, 29.5, 30.2, None, None, None])
    frame = load_runs([source, tmp_path / "cp"])
    row = noise_floor(frame).iloc[0]
    groups = [np.array([24, 25, 23.5]), np.array([30, 31, 29.5, 30.2])]  # model 4: its original alone
    ss = sum(((g - g.mean()) ** 2).sum() for g in groups)
    assert (row["models"], row["originals"], row["df"], row["repeats"]) == (2, 2, 5, 3)
    assert row["seed_sd"] == pytest.approx(math.sqrt(ss / 5), rel=1e-12)
    assert row["seed_sd_lo"] == pytest.approx(math.sqrt(ss / stats.chi2.ppf(0.975, 5)), rel=1e-12)
    assert row["seed_sd_hi"] == pytest.approx(math.sqrt(ss / stats.chi2.ppf(0.025, 5)), rel=1e-12)
    assert row["model_sd"] == pytest.approx(np.std([20, 24, 30, 27, 22], ddof=1), rel=1e-12)
    # without the source loaded: copies only, the spread of their group means, the source named by path
    alone = noise_floor(load_runs([tmp_path / "cp"])).iloc[0]
    copies = [np.array([25, 23.5]), np.array([31, 29.5, 30.2])]
    ss = sum(((g - g.mean()) ** 2).sum() for g in copies)
    assert (alone["source"], alone["originals"], alone["df"], alone["model_sd_from"]) == \
           (str(source), 0, 3, "copy means")
    assert alone["seed_sd"] == pytest.approx(math.sqrt(ss / 3), rel=1e-12)
    assert alone["model_sd"] == pytest.approx(np.std([g.mean() for g in copies], ddof=1), rel=1e-12)


def test_originals_trained_otherwise_do_not_join(tmp_path, monkeypatch):
    source = write_run(tmp_path / "src", anynet_rows(3, np.random.default_rng(0)), errors=[20, 24, 30])
    write_copies(source, tmp_path / "cp", [0, 1], 2, [21, 22, 25, 26], epochs=5)
    monkeypatch.chdir(tmp_path)  # the source found under another spelling of its path
    row = noise_floor(load_runs([source, "cp"])).iloc[0]
    assert (row["source"], row["originals"], row["df"], row["models"]) == ("src", 0, 2, 2)
    assert row["seed_sd"] == pytest.approx(math.sqrt(4 * 0.25 / 2))
    assert row["model_sd_from"] == "source run"


def test_no_copy_runs_and_no_seeds(tmp_path):
    source = write_run(tmp_path / "src", anynet_rows(3, np.random.default_rng(0)), errors=[20, 24, 30])
    empty = noise_floor(load_runs([source]))
    assert empty.empty and list(empty.columns) == COLUMNS
    write_copies(source, tmp_path / "cp", [0], 2, [None, None])
    row = noise_floor(load_runs([tmp_path / "cp"])).iloc[0]
    assert row["models"] == 0 and row["df"] == 0 and np.isnan(row["seed_sd"]) and np.isnan(row["ratio"])
    assert pooled_sd([np.array([1.0])])[3] == 0


def test_within_noise():
    row = pd.Series({"seed_sd": 0.4})
    assert within_noise(0.3, row) and within_noise(-0.3, {"seed_sd": 0.4}) and not within_noise(0.5, 0.4)
    assert not within_noise(0.0, float("nan"))


def test_a_promote_run_is_not_a_noise_measurement(tmp_path):
    rng = np.random.default_rng(3)
    source = write_run(tmp_path / "xa", anynet_rows(8, rng), errors=rng.normal(25, 3, 8))
    made = store.copy_models(source, [0, 1], 2, tmp_path / "xa-top2", {"made_by": "dsd promote", "top": 2})
    for copy_id in made.copy_ids:
        store.write_result(made.run, {"model_id": copy_id, "status": "done", "error": 20.0 + copy_id % 2,
                                      "epochs": 3, "dataset": "synthetic"})
    assert noise_floor(load_runs([source, made.run])).empty
