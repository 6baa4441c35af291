"""The published zoo (list, describe, a run of it) and `dsd promote` (the best models, for long training)."""
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from dsd import runfolder as store
from dsd.design.complexity import complexity
from dsd.design.regimes import get_regime
from dsd.design.regnet import quantized_linear_widths, stages_from_block_widths
from dsd.design.spec import spec_from_row
from dsd.design.zoo import zoo, zoo_spec
from synthetic_runs import anynet_rows, dsd, write_run

REFERENCE = __import__("pathlib").Path(__file__).resolve().parent / "data" / "regnet_complexity.csv"
# torchvision rounds the group-width compatibility step half up where the paper (and dsd) round half to even:
# its regnet_x_400mf has a last stage of 400, not 384, and regnet_y_800mf 144 and 784, not 128 and 768
TORCHVISION_OTHER_WIDTHS = {"RegNetX-400MF", "RegNetY-800MF"}


def test_every_zoo_model_follows_from_its_parameters():
    assert len(zoo()) == 24
    for m in zoo():
        spec = zoo_spec(m, get_regime("imagenet"))
        rule = quantized_linear_widths(m.depth, m.w0, m.wa, m.wm)
        depths, widths = stages_from_block_widths(rule)
        assert list(spec.depths) == depths, m.name
        # the compatibility step moves a width by less than one group width
        assert all(abs(a - b) < m.group_width for a, b in zip(spec.widths, widths)), m.name
        assert set(spec.group_widths) <= {m.group_width} | set(spec.widths), m.name
        assert spec.block == ("Y" if m.se_ratio else "X") and (spec.resolution, spec.num_classes) == (224, 1000)


def test_zoo_complexity_equals_the_published_reference_where_it_lists_the_model():
    import csv

    listed = {r["name"]: r for r in csv.DictReader(REFERENCE.open())}
    checked = 0
    for m in zoo():
        if m.name in listed:
            counts = complexity(zoo_spec(m, get_regime("imagenet")))
            assert [counts[k] for k in ("flops", "params", "acts")] == \
                [int(listed[m.name][k]) for k in ("flops", "params", "acts")], m.name
            checked += 1
    assert checked >= 2


def test_torchvision_parameter_counts_equal_ours_where_it_uses_the_papers_widths():
    tvm = pytest.importorskip("torchvision.models")
    compared = 0
    for m in zoo():
        family, size = m.name.split("-")
        builder = getattr(tvm, f"regnet_{family[-1].lower()}_{size.lower().replace('.', '_')}", None)
        if builder is None or m.depth > 25 or "GF" in size and float(size[:-2]) > 4:
            continue  # not in torchvision, or big enough to slow the suite (16GF, 32GF match too)
        net = builder()
        theirs = sum(p.numel() for p in net.parameters())
        ours = complexity(zoo_spec(m, get_regime("imagenet")))["params"]
        assert (theirs == ours) == (m.name not in TORCHVISION_OTHER_WIDTHS), (m.name, theirs, ours)
        compared += 1
    assert compared >= 6


def test_zoo_cli_lists_describes_and_makes_a_run(tmp_path):
    code, out, err = dsd("zoo", "--json")
    assert code == 0, err
    models = json.loads(out)["models"]
    assert [m["name"] for m in models][:2] == ["RegNetX-200MF", "RegNetX-400MF"]
    assert models[0]["published_error"] == 31.1 and models[0]["flops"] == 199040872
    code, out, err = dsd("describe", "--model", "regnetx-200mf", "--json")
    assert code == 0 and json.loads(out)["widths"] == [24, 56, 152, 368]
    run = tmp_path / "zoo"
    code, out, err = dsd("zoo", "--models", "RegNetX-200MF,RegNetY-400MF", "--regime", "fashion",
                         "--repeats", "2", "--out", run, "--json")
    assert code == 0, err
    rows = pq.read_table(run / store.MODELS_FILE).to_pylist()
    assert [r["space"] for r in rows] == ["RegNetX-200MF"] * 2 + ["RegNetY-400MF"] * 2
    assert [r["model_id"] for r in rows] == [0, 1, 2, 3] and rows[0]["resolution"] == 28
    before = (run / store.MODELS_FILE).stat().st_mtime_ns
    assert dsd("zoo", "--models", "RegNetX-200MF,RegNetY-400MF", "--regime", "fashion", "--repeats", "2",
               "--out", run)[0] == 0
    assert (run / store.MODELS_FILE).stat().st_mtime_ns == before  # the same arguments change nothing
    code, _, err = dsd("zoo", "--models", "RegNetX-200MF", "--out", run)
    assert code == 2 and "other arguments" in err


@pytest.mark.parametrize("args, message", [
    (["zoo", "--models", "RegNetZ-1GF"], "unknown zoo model 'RegNetZ-1GF'"),
    (["zoo", "--models", ","], "--models: no zoo model named"),
    (["describe", "--model", "nope"], "unknown zoo model 'nope'"),
    (["zoo", "--regime", "mars"], "unknown regime 'mars'"),
])
def test_zoo_bad_input(args, message):
    code, _, err = dsd(*args)
    assert code == 2 and message in err


@pytest.fixture
def trained(tmp_path):
    rng = np.random.default_rng(0)
    errors = rng.uniform(10, 40, 12)
    statuses = ["done"] * 9 + ["diverged", "failed", "untrained"]
    errors[9] = 1.0  # a diverged model's recorded error must not promote it
    return write_run(tmp_path / "xa", anynet_rows(12, rng), errors=errors, statuses=statuses), errors


def test_promote_copies_exactly_the_top_k_and_maps_back(trained):
    run, errors = trained
    code, out, err = dsd("promote", run, "--top", 3, "--repeats", 2, "--json")
    assert code == 0, err
    made = json.loads(out)
    top = [int(i) for i in np.argsort(errors[:9])[:3]]
    assert made["models"] == top and made["run"].endswith("xa-top3")
    rows = pq.read_table(run.parent / "xa-top3" / store.MODELS_FILE).to_pylist()
    assert [r["source_model_id"] for r in rows] == [i for i in top for _ in range(2)]
    assert min(r["model_id"] for r in rows) > 11  # new ids: new training seeds
    assert "--epochs 100" in made["train"]
    originals = {r["model_id"]: r for r in store.read_models(run).to_pylist()}
    for r in rows:
        assert spec_from_row(r) == spec_from_row(originals[r["source_model_id"]])


def test_promote_refuses_more_than_trained_and_bad_counts(trained):
    run, _ = trained
    for args, message in ((["--top", 10], "has 9 trained models; --top 10 asks for more"),
                          (["--top", 0], "--top must be >= 1"), (["--top", 2, "--repeats", 0], "--repeats must be >= 1")):
        code, _, err = dsd("promote", run, *args)
        assert code == 2 and message in err
    assert not (run.parent / "xa-top10").exists() and not (run.parent / "xa-top0").exists()


def test_a_promoted_copy_trained_with_the_original_seed_reproduces_the_original_curve(tmp_path):
    import torch

    from conftest import sample_run
    from dsd.training.data import load, locate
    from dsd.training.loop import train_model
    from dsd.training.settings import settings_for

    run = sample_run(tmp_path / "rx", n=3)
    settings = settings_for(get_regime("fashion"), "synthetic", epochs=2, batch_size=32, train_images=256,
                            eval_images=128)
    torch.set_num_threads(1)
    data = load(locate(settings.data))
    for row in store.read_models(run).to_pylist():
        store.write_result(run, train_model(spec_from_row(row), data, settings, model_id=row["model_id"]))
    code, out, err = dsd("promote", run, "--top", 1, "--json")
    assert code == 0, err
    copy = pq.read_table(tmp_path / "rx-top1" / store.MODELS_FILE).to_pylist()[0]
    original = [r for r in store.read_results(run).to_pylist() if r["model_id"] == copy["source_model_id"]][0]
    again = train_model(spec_from_row(copy), data, settings, model_id=copy["source_model_id"])
    assert again["error_curve"] == original["error_curve"] and again["loss_curve"] == original["loss_curve"]


def test_comparison_gives_each_zoo_model_its_error_over_repeats_and_the_published_one(tmp_path):
    from dsd.analysis.compare import model_comparison
    from dsd.analysis.load import load_runs

    run = tmp_path / "zoo"
    assert dsd("zoo", "--models", "RegNetX-200MF,RegNetX-400MF", "--regime", "fashion", "--repeats", "3",
               "--out", run)[0] == 0
    errors = [30.0, 31.0, 35.0, 20.0, 22.0, None]  # the last repeat failed
    for model_id, err in enumerate(errors):
        store.write_result(run, {"model_id": model_id, "status": "done" if err else "failed", "error": err,
                                 "epochs": 1, "dataset": "synthetic"})
    table = model_comparison(load_runs([run]))
    assert list(table["model"]) == ["RegNetX-200MF", "RegNetX-400MF"]
    assert list(table["repeats"]) == [3, 2]
    assert table["err_mean"].tolist() == pytest.approx([32.0, 21.0])
    assert table["err_sd"].tolist() == pytest.approx([np.std([30, 31, 35], ddof=1), np.std([20, 22], ddof=1)])
    assert table["published_error"].tolist() == [31.1, 27.3]
    assert table["flops"].iat[0] == complexity(zoo_spec(zoo()[0], get_regime("fashion")))["flops"]


def test_comparison_carries_the_measured_time_when_the_run_is_timed(tmp_path):
    from dsd.analysis.compare import model_comparison
    from dsd.analysis.load import load_runs

    run = tmp_path / "zoo"
    assert dsd("zoo", "--models", "RegNetX-200MF", "--regime", "fashion", "--repeats", "2", "--out", run)[0] == 0
    for model_id in (0, 1):
        store.write_result(run, {"model_id": model_id, "status": "done", "error": 30.0, "epochs": 1})
    store.write_timings(run, [{"model_id": 0, "device": "cpu", "batch": 8, "infer_s": 0.010, "train_s": 0.030},
                              {"model_id": 1, "device": "cpu", "batch": 8, "infer_s": 0.012, "train_s": 0.034}])
    table = model_comparison(load_runs([run]))
    assert table["infer_ms"].iat[0] == pytest.approx(11.0) and table["train_ms"].iat[0] == pytest.approx(32.0)
