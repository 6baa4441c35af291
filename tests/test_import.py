"""`dsd import nds` and `dsd import pycls`: sources written in each format from known numbers become run
folders whose models, results, EDFs and trends are those of the numbers themselves."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import dsd.api as api
from dsd import runfolder
from dsd.design.complexity import complexity
from dsd.design.regnet import regnet_stages
from dsd.design.spec import ModelSpec, make_spec
from dsd.importers.counts import batched
from import_fixtures import (direct_run, make_nds_jobs, nds_spec, pycls_cfg, resnet56_job, write_pycls_sweep)
from synthetic_runs import dsd

TREND_STATS = ["d", "d1", "d2", "d3", "w1", "w2", "w3", "b1", "g1"]


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def snapshot(folder):
    """Every file under folder: (mtime, bytes), to tell whether anything was touched."""
    return {p.relative_to(folder): (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()}


def same_analysis(imported, direct, errors, stats=TREND_STATS):
    """edf_table and trends of the imported run equal those of the run written straight from the numbers,
    and the EDF's statistics are those of the errors."""
    frame = api.load_runs([imported, direct])
    table = api.edf_table(frame).drop(columns=["run", "ks_d", "ks_p"])
    pd.testing.assert_series_equal(table.iloc[0], table.iloc[1], check_names=False)
    assert api.edf_table(frame)["ks_d"].iloc[1] == 0
    assert table["min"].iloc[0] == pytest.approx(np.min(errors))
    assert table["mean"].iloc[0] == pytest.approx(np.mean(errors))
    assert table["median"].iloc[0] == pytest.approx(np.median(errors))
    trends = api.trends(frame, stats=stats, samples=500)
    a, b = (trends[trends["run"] == r].drop(columns="run").reset_index(drop=True) for r in trends["run"].unique())
    pd.testing.assert_frame_equal(a, b)


def test_batched_counts_equal_dsd_complexity_one_model_at_a_time():
    specs = [nds_spec(j["net"]) for j in make_nds_jobs(30, 1)] + [nds_spec(resnet56_job()["net"])]
    specs += [make_spec([1, 2, 4], [24, 56, 152], [1, 1, 1], [8, 8, 8], [2, 2, 2], stem=stem, block=block,
                        se_ratio=se, resolution=res, num_classes=1000)
              for stem, block, se, res in [("simple", "Y", 0.25, 224), ("resnet", "X", 0.0, 192),
                                           ("simple", "V", 0.0, 224), ("cifar", "R", 0.0, 32)]]
    counts = batched(specs)
    for i, spec in enumerate(specs):
        assert {k: int(counts[k][i]) for k in counts} == complexity(spec)


def test_counts_past_int64_are_found_not_wrapped_around():
    from dsd.importers.counts import checked

    fits = nds_spec(resnet56_job()["net"])
    # one X block of 16 channels with bottleneck width 2**28 in 2**20 groups: its flops fit in int64, but the
    # 3x3 conv's k * k * c_in * c_out * hw passes 2**63 before the division by the groups
    wraps = ModelSpec(depths=(1,), widths=(16,), bottleneck_ratios=(2.0 ** -24,), group_widths=(2 ** 8,),
                      strides=(1,), stem="cifar", stem_width=16, block="X", num_classes=10, resolution=32)
    wide, deep = replace(fits, widths=(16, 32, 10 ** 12)), replace(fits, depths=(9, 9, 2 ** 61))
    counts, too_large = checked([fits, wraps, wide, deep])
    assert list(too_large) == [1, 2, 3] and "intermediate product" in too_large[1]
    assert "1e+12 channels" in too_large[2] and "flops" in too_large[3]
    assert {k: int(counts[k][0]) for k in counts} == complexity(fits)


def test_an_nds_file_becomes_a_run_with_the_files_numbers(tmp_path):
    jobs = make_nds_jobs(40, 3) + [resnet56_job()]
    jobs[5]["flops"] += 12345  # the file disagrees with dsd on one model: reported, imported all the same
    run = tmp_path / "runs" / "resnext"
    code, _, err = dsd("import", "nds", write_json(tmp_path / "ResNeXt-A.json", jobs), "--out", run)
    assert code == 0, err
    assert "flops: dsd's counts differ from the source's for 1 of 41 models" in err and "job 1005 (index 5)" in err
    assert "params: dsd's counts equal the source's for all 41 models" in err

    specs = [nds_spec(j["net"]) for j in jobs]
    models = runfolder.read_models(run).to_pandas()
    assert list(models["key"]) == [s.key() for s in specs]
    assert list(models["flops"]) == [complexity(s)["flops"] for s in specs]
    assert models["flops"].iloc[-1] == 125_747_850 and models["params"].iloc[-1] == 855_770  # ResNet-56
    own = pq.read_table(run / "import.parquet").to_pandas()
    assert list(own["file_flops"]) == [j["flops"] for j in jobs] and own["job"].iloc[5] == "job 1005 (index 5)"
    summary = runfolder.read_meta(run)["import"]
    assert (summary["format"], summary["source"], summary["jobs"], summary["results"]) == ("nds", "ResNeXt-A.json", 41, 41)
    assert summary["complexity"]["flops"]["differ"] == 1

    results = runfolder.read_results(run).to_pandas()
    assert list(results["error"]) == [j["test_ep_top1"][-1] for j in jobs]
    assert list(results["best_error"]) == [min(j["test_ep_top1"]) for j in jobs]
    assert [list(c) for c in results["error_curve"]] == [j["test_ep_top1"] for j in jobs]
    assert [list(c) for c in results["loss_curve"]] == [j["train_ep_loss"] for j in jobs]
    assert set(results["status"]) == {"done"} and set(results["epochs"]) == {100} and set(results["lr"]) == {0.1}

    errors = [j["test_ep_top1"][-1] for j in jobs]
    direct = direct_run(tmp_path / "direct", specs, [complexity(s) for s in specs], errors, [j["test_ep_top1"] for j in jobs])
    same_analysis(run, direct, errors)


def test_importing_twice_changes_nothing_and_another_source_needs_force(tmp_path):
    run = tmp_path / "run"
    source = write_json(tmp_path / "ResNet.json", make_nds_jobs(8, 4))
    assert dsd("import", "nds", source, "--out", run)[0] == 0
    before = snapshot(run)
    code, _, err = dsd("import", "nds", source, "--out", run)
    assert code == 0 and "already imported from ResNet.json; nothing to do" in err
    assert snapshot(run) == before

    other = write_json(tmp_path / "ResNet.json", make_nds_jobs(9, 5))
    code, _, err = dsd("import", "nds", other, "--out", run)
    assert code == 2 and "holds another run" in err and "--force" in err
    assert snapshot(run) == before
    assert dsd("import", "nds", other, "--out", run, "--force")[0] == 0
    assert len(runfolder.read_results(run)) == 9


def test_default_folder_and_the_top_mid_form(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    jobs = make_nds_jobs(10, 6)
    made = api.import_nds(write_json(tmp_path / "ResNet_reruns.json", {"top": jobs[:4], "mid": jobs[4:]}))
    assert made.run == runfolder.RUNS_ROOT / "nds-resnet_reruns" and made.n == 10
    assert list(runfolder.read_models(made.run)["space"].to_pylist()) == ["top"] * 4 + ["mid"] * 6
    assert runfolder.read_meta(made.run)["import"]["groups"] == {"top": 4, "mid": 6}


def test_an_imagenet_file_is_counted_at_224_px(tmp_path):
    jobs = make_nds_jobs(3, 7)
    for job in jobs:
        job["net"]["ss"][0] = 4  # a stride-4 stem: 7x7/2 conv and 3x3/2 max-pool
        job["flops"] = complexity(nds_spec(job["net"], 224, 1000))["flops"]
        job["params"] = complexity(nds_spec(job["net"], 224, 1000))["params"]
    made = api.import_nds(write_json(tmp_path / "ResNeXt-A_in.json", jobs), out=tmp_path / "run")
    assert made.comparison["flops"]["differ"] == made.comparison["params"]["differ"] == 0
    meta = runfolder.read_meta(made.run)["regime"]
    assert (meta["name"], meta["resolution"], meta["num_classes"]) == ("imagenet", 224, 1000)
    assert set(runfolder.read_models(made.run)["stem"].to_pylist()) == {"resnet"}


def _break(job, what):
    if what == "optim":
        del job["optim"]
    elif what == "ws":
        job["net"]["ws"] = job["net"]["ws"][:-1]
    elif what == "curve":
        job["test_ep_top1"] = "5.1"
    elif what == "groups":
        job["net"]["ws"][1], job["net"]["bot_muls"][1], job["net"]["num_gs"][1] = 24, 1.0, 16
    elif what == "seed":
        job["rng_seed"] = 2 ** 64  # past int64: refused before anything is written, not halfway through
    elif what == "width":
        job["net"]["ws"][2] = 10 ** 12  # its flops would wrap around in int64
    elif what == "loss":
        job["train_ep_loss"] = job["train_ep_loss"][:50]
    elif what == "long":
        job["test_ep_top1"] = job["test_ep_top1"] + [5.0]
    return job


@pytest.mark.parametrize("what,message", [
    ("optim", "no optim"), ("ws", "ss has 4 entries"), ("curve", "test_ep_top1 must be"), ("groups", "num_gs = 16"),
    ("seed", "rng_seed is 18446744073709551616; a whole number must be below 2**63"),
    ("width", "too large for dsd's 64-bit flops, params and acts"),
    ("loss", "train_ep_loss has 50 entries and test_ep_top1 100"),
    ("long", "more than the 100 epochs of optim.max_ep")])
def test_a_malformed_job_exits_2_naming_it_and_writes_nothing(tmp_path, what, message):
    jobs = make_nds_jobs(5, 8)
    jobs[2] = _break(jobs[2], what)
    code, _, err = dsd("import", "nds", write_json(tmp_path / "ResNet.json", jobs), "--out", tmp_path / "run")
    assert code == 2 and "ResNet.json: job 1002 (index 2)" in err and message in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_a_job_whose_curve_stops_before_max_ep_is_an_untrained_model(tmp_path):
    jobs = make_nds_jobs(5, 13)
    jobs[3]["test_ep_top1"], jobs[3]["train_ep_loss"] = jobs[3]["test_ep_top1"][:40], jobs[3]["train_ep_loss"][:40]
    code, _, err = dsd("import", "nds", write_json(tmp_path / "ResNet.json", jobs), "--out", tmp_path / "run")
    assert code == 0 and "imported 5 models (4 with results, 1 unfinished)" in err, err
    assert runfolder.read_results(tmp_path / "run")["model_id"].to_pylist() == [0, 1, 2, 4]
    assert list(api.load_runs([tmp_path / "run"])["status"]) == ["done"] * 3 + ["untrained", "done"]
    assert runfolder.read_meta(tmp_path / "run")["import"]["unfinished"] == 1


def test_json_prints_only_the_summary_and_no_claims_folder_is_left(tmp_path):
    source, run = write_json(tmp_path / "ResNet.json", make_nds_jobs(3, 14)), tmp_path / "run"
    for unchanged in (False, True):
        code, out, err = dsd("import", "nds", source, "--out", run, "--json")
        assert code == 0 and err == "", err
        summary = json.loads(out)
        assert (summary["models"], summary["results"], summary["unchanged"]) == (3, 3, unchanged)
    assert sorted(p.name for p in run.iterdir()) == ["import.parquet", "models.parquet", "results.parquet",
                                                     "run.yaml"]  # no empty claims/


def test_a_value_that_does_not_fit_its_column_names_the_job_and_the_column(tmp_path):
    from dsd.errors import BadInput
    from dsd.importers.runs import Source, _table

    jobs = [api_job(label) for label in ("job 1 (index 0)", "job 2 (index 1)")]
    rows = [{"model_id": 0, "train_seed": 1}, {"model_id": 1, "train_seed": 2 ** 64}]
    source = Source("nds", "ResNet.json", "0" * 64, tmp_path / "run")
    with pytest.raises(BadInput, match=r"ResNet.json: job 2 \(index 1\): its train_seed 18446744073709551616 does "
                                       r"not fit results.parquet's int64 column"):
        _table(source, rows, runfolder.RESULT_SCHEMA, jobs, "results.parquet")


def api_job(label):
    from dsd.importers.jobs import Job

    return Job(label, nds_spec(resnet56_job()["net"]), "ResNet")


def test_an_out_folder_that_is_not_a_run_is_refused(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    code, _, err = dsd("import", "nds", write_json(tmp_path / "ResNet.json", make_nds_jobs(2, 15)), "--out",
                       tmp_path / "taken")
    assert code == 2 and "exists and is not a run folder" in err
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["notes.txt"]


def test_a_cell_based_job_is_out_of_scope(tmp_path):
    jobs = make_nds_jobs(2, 9)
    jobs[1]["net"] = {"genotype": {"normal": [["sep_conv_3x3", 0]], "reduce": []}, "width": 16, "depth": 8}
    code, _, err = dsd("import", "nds", write_json(tmp_path / "DARTS.json", jobs), "--out", tmp_path / "run")
    assert code == 2 and "job 1001 (index 1)" in err and "cell-based" in err and "out of scope" in err
    assert not (tmp_path / "run").exists()


# --- pycls ---------------------------------------------------------------------------------------------

R56 = {"STEM_TYPE": "res_stem_cifar", "STEM_W": 16, "BLOCK_TYPE": "res_basic_block", "DEPTHS": [9, 9, 9],
       "WIDTHS": [16, 32, 64], "STRIDES": [1, 2, 2]}
REGNETY = {"STEM_TYPE": "simple_stem_in", "STEM_W": 32, "BLOCK_TYPE": "res_bottleneck_block", "DEPTH": 13,
           "W0": 24, "WA": 36.44, "WM": 2.49, "GROUP_W": 8, "BOT_MUL": 1.0, "STRIDE": 2, "SE_ON": True, "SE_R": 0.25}


def anynet_x(rng):
    widths = [int(w) for w in rng.choice([32, 64, 128], 3)]
    return {"STEM_TYPE": "res_stem_cifar", "STEM_W": 16, "BLOCK_TYPE": "res_bottleneck_block",
            "DEPTHS": [int(d) for d in rng.integers(1, 5, 3)], "WIDTHS": widths, "STRIDES": [1, 2, 2],
            "BOT_MULS": [0.5, 1.0, 0.25], "GROUP_WS": [8, 16, 8]}


def expected_spec(cfg) -> ModelSpec:
    """The network of a pycls config, by hand: pycls's bottleneck multiplier is 1 / dsd's b."""
    if cfg["MODEL"]["TYPE"] == "regnet":
        p = cfg["REGNET"]
        d, w = regnet_stages(p["DEPTH"], p["W0"], p["WA"], p["WM"])
        return make_spec(d, w, [1 / p["BOT_MUL"]] * len(d), [p["GROUP_W"]] * len(d), [2] * len(d), stem="simple",
                         block="Y", se_ratio=0.25, regnet={"w0": p["W0"], "wa": p["WA"], "wm": p["WM"]},
                         num_classes=10, resolution=32)
    p = cfg["ANYNET"]
    x = p["BLOCK_TYPE"] == "res_bottleneck_block"
    return ModelSpec(depths=tuple(p["DEPTHS"]), widths=tuple(p["WIDTHS"]),
                     bottleneck_ratios=tuple(1 / m for m in p["BOT_MULS"]) if x else (1.0,) * 3,
                     group_widths=tuple(p["GROUP_WS"]) if x else (1,) * 3, strides=tuple(p["STRIDES"]),
                     stem="cifar", stem_width=p["STEM_W"], block="X" if x else "R", num_classes=10, resolution=32)


def pycls_jobs(epochs=4):
    """Six jobs: ResNet-56 with pycls's own counts, AnyNetX and RegNetY models, one whose logged flops
    disagree, one still training (2 of 4 epochs) and one not started (a config only)."""
    rng = np.random.default_rng(11)
    cfgs = [pycls_cfg(R56, epochs=epochs)] + [pycls_cfg(anynet_x(rng), epochs=epochs) for _ in range(3)]
    cfgs += [pycls_cfg(REGNETY, "regnet", epochs=epochs, lr=0.2), pycls_cfg(anynet_x(rng), epochs=epochs)]
    jobs = {}
    for i, cfg in enumerate(cfgs):
        errors = [round(float(e), 2) for e in np.linspace(70, 10 + 3 * i, epochs)]
        errors[-2] = errors[-1] - 0.5  # the last epoch is not the best one
        jobs[f"{i:06}"] = {"cfg": cfg, "counts": complexity(expected_spec(cfg)), "errors": errors,
                           "losses": [2.0 - 0.1 * e for e in range(epochs)], "epochs": epochs}
    jobs["000002"]["counts"] = {**jobs["000002"]["counts"], "flops": jobs["000002"]["counts"]["flops"] + 5000}
    jobs["000003"]["errors"], jobs["000003"]["losses"] = jobs["000003"]["errors"][:2], jobs["000003"]["losses"][:2]
    jobs["000005"]["log"] = False
    return jobs


@pytest.mark.parametrize("collected", [False, True])
def test_a_pycls_sweep_becomes_a_run_with_its_numbers(tmp_path, collected):
    jobs = pycls_jobs()
    sweep = write_pycls_sweep(tmp_path / "regnet_sweep", jobs, collected=collected)
    code, _, err = dsd("import", "pycls", sweep, "--out", tmp_path / "run")
    assert code == 0, err
    assert "imported 6 models (4 with results, 2 unfinished)" in err
    assert "flops: dsd's counts differ from the source's for 1 of 5 models" in err and "job 000002" in err

    specs = [expected_spec(j["cfg"]) for j in jobs.values()]
    models = runfolder.read_models(tmp_path / "run").to_pandas()
    assert list(models["key"]) == [s.key() for s in specs]
    assert models["flops"].iloc[0] == 125_747_850 and models["params"].iloc[0] == 855_770
    assert models["w0"].iloc[4] == 24 and list(models["sampled_lr"]) == [0.1] * 4 + [0.2, 0.1]
    results = runfolder.read_results(tmp_path / "run").to_pandas()
    finished = [0, 1, 2, 4]
    assert list(results["model_id"]) == finished
    assert list(results["error"]) == [jobs[f"{i:06}"]["errors"][-1] for i in finished]
    assert [list(c) for c in results["loss_curve"]] == [jobs[f"{i:06}"]["losses"] for i in finished]

    errors = [j["errors"][-1] if i in finished else None for i, j in enumerate(jobs.values())]
    statuses = ["done" if i in finished else "untrained" for i in range(6)]
    direct = direct_run(tmp_path / "direct", specs, [complexity(s) for s in specs], errors,
                        [j["errors"] for j in jobs.values()], statuses)
    same_analysis(tmp_path / "run", direct, [e for e in errors if e is not None], stats=["d", "d1", "w1", "w2"])


@pytest.mark.parametrize("change,message", [
    (lambda cfg: cfg["MODEL"].update(TYPE="effnet"), "MODEL.TYPE 'effnet' is not imported"),
    (lambda cfg: cfg["ANYNET"].update(HEAD_W=1024), "HEAD_W 1024: a conv in the head has no dsd equivalent"),
    (lambda cfg: cfg["ANYNET"].update(BLOCK_TYPE="res_bottleneck_linear_block"), "no dsd equivalent"),
    (lambda cfg: cfg["ANYNET"].update(WIDTHS=[16, 32]), "WIDTHS has 2 entries")])
def test_a_pycls_job_without_a_dsd_equivalent_exits_2_naming_it(tmp_path, change, message):
    jobs = pycls_jobs()
    change(jobs["000001"]["cfg"])
    sweep = write_pycls_sweep(tmp_path / "sweep", jobs)
    code, _, err = dsd("import", "pycls", sweep, "--out", tmp_path / "run")
    assert code == 2 and "sweep: job 000001" in err and message in err
    assert not (tmp_path / "run").exists()


def test_a_pycls_seed_past_64_bits_exits_2_naming_the_job_and_writes_nothing(tmp_path):
    jobs = pycls_jobs()
    jobs["000001"]["cfg"]["RNG_SEED"] = 2 ** 63
    sweep = write_pycls_sweep(tmp_path / "sweep", jobs)
    code, _, err = dsd("import", "pycls", sweep, "--out", tmp_path / "run")
    assert code == 2 and "sweep: job 000001" in err and "RNG_SEED is 9223372036854775808" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_the_api_offers_both_imports():
    assert {"import_nds", "import_pycls"} <= set(api.__all__)


def test_a_diverged_job_counts_at_chance_and_a_cut_short_import_is_completed(tmp_path):
    jobs = make_nds_jobs(6, 12)
    jobs[1]["test_ep_top1"][-1] = float("nan")
    made = api.import_nds(write_json(tmp_path / "ResNet.json", jobs), out=tmp_path / "run")
    frame = api.load_runs([made.run], split="space == ResNet")
    assert frame["status"].iloc[1] == "diverged" and frame["err"].iloc[1] == 90.0
    assert set(frame["run"]) == {"run: space == ResNet"}

    (made.run / "results.parquet").unlink()  # as if the import had been killed before its results
    code, _, err = dsd("import", "nds", tmp_path / "ResNet.json", "--out", made.run)
    assert code == 0 and "completed an earlier import of ResNet.json cut short (6 results added)" in err
    assert len(runfolder.read_results(made.run)) == 6


def test_a_jobs_log_wins_over_its_older_sweep_json_entry(tmp_path):
    jobs = pycls_jobs()
    sweep = write_pycls_sweep(tmp_path / "sweep", jobs)
    stale = {**jobs["000001"], "errors": [99.0, 98.0, 97.0, 96.0]}
    write_pycls_sweep(tmp_path / "stale", {"000001": stale}, collected=True)
    (tmp_path / "stale" / "sweep.json").rename(sweep / "sweep.json")
    made = api.import_pycls(sweep, out=tmp_path / "run")
    assert runfolder.read_results(made.run).to_pandas()["error"].iloc[1] == jobs["000001"]["errors"][-1]
