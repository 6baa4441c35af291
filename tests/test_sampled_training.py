"""Training settings as sampled dimensions (the paper's appendix lr / wd study): drawn per model,
stored in models.parquet, used by `dsd train`, reproducible, and statistics of the analysis."""
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from dsd import runfolder as store
from dsd.design.regimes import get_regime
from dsd.design.sampler import sample
from dsd.design.spaces import load_space
from dsd.errors import BadInput
from helpers import dsd


def test_each_model_draws_its_own_lr_and_wd_on_the_architectures_of_regnetx():
    space, regime = load_space("RegNetX_lrwd"), get_regime("fashion")
    rows = sample(space, regime, 12, seed=3).rows
    assert [r["key"] for r in rows] == [r["key"] for r in sample(load_space("RegNetX"), regime, 12, seed=3).rows]
    lr = np.array([r["sampled_lr"] for r in rows])
    wd = np.array([r["sampled_wd"] for r in rows])
    assert ((lr >= 0.01) & (lr <= 1.0)).all() and ((wd >= 1e-5) & (wd <= 1e-3)).all()
    assert len(set(lr)) == 12
    assert rows == sample(space, regime, 12, seed=3).rows  # reproducible
    assert rows[:5] == sample(space, regime, 5, seed=3).rows  # and prefix-stable
    assert all(r.get("sampled_lr") is None for r in sample(load_space("RegNetX"), regime, 3).rows)


@pytest.mark.parametrize("training, message", [
    ({"momentum": {"distribution": "fixed", "value": 0.9}}, "training: unknown setting 'momentum'"),
    ({"lr": {"distribution": "log_uniform", "low": 0, "high": 1}}, "log_uniform needs low > 0"),
    ({"lr": {"same_as": "wd"}}, "drawn once per model"),
    ([1, 2], "training must be a mapping"),
])
def test_bad_training_dimensions_are_named(tmp_path, training, message):
    import yaml

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"extends": "RegNetX", "name": "Bad", "training": training}))
    with pytest.raises(BadInput, match=message):
        load_space(path)


def test_train_uses_each_models_lr_and_wd_and_the_analysis_sees_them(tmp_path):
    run = tmp_path / "lrwd"
    assert dsd("sample", "--space", "RegNetX_lrwd", "--regime", "fashion", "--n", 3, "--out", run).returncode == 0
    proc = dsd("train", run, "--dataset", "synthetic", "--epochs", 1, "--train-images", 128, "--eval-images", 64,
               "--batch-size", 32, "--device", "cpu", "--lr", 0.123)
    assert proc.returncode == 0, proc.stderr
    models = {r["model_id"]: r for r in pq.read_table(run / store.MODELS_FILE).to_pylist()}
    for r in store.read_results(run).to_pylist():
        assert r["lr"] == models[r["model_id"]]["sampled_lr"] and r["wd"] == models[r["model_id"]]["sampled_wd"]
    status = dsd("status", run, "--json")
    assert status.returncode == 0 and "warning" not in status.stderr  # lr differs by design, not by mistake
    trends = dsd("trends", run, "--stats", "lr,wd", "--samples", 200, "--json")
    assert trends.returncode == 0, trends.stderr
    assert {t["stat"] for t in json.loads(trends.stdout)["trends"]} == {"lr", "wd"}
