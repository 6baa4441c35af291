"""Flop-regime series: `dsd sample --flops-targets` and the trends across a series' runs."""
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

import dsd as lib
from dsd import runfolder as store
from dsd.analysis.series import flops_label, series_runs
from synthetic_runs import dsd

TARGETS = {"regnetx-200mf": 200e6, "regnetx-400mf": 400e6, "regnetx-1.6gf": 1.6e9}
STATS = ["d", "w4", "wm", "g1", "b1", "flops"]


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def train_fake(run):
    """Results for every model of a run, best near depth 15, so that trends have something to find."""
    rng = np.random.default_rng(7)
    for row in store.read_models(run).to_pylist():
        error = 20 + 0.5 * abs(row["depth"] - 15) + rng.normal(0, 0.5)
        store.write_result(run, {"model_id": row["model_id"], "status": "done", "error": error, "epochs": 1,
                                 "dataset": "synthetic"})
    return run


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """A three-target RegNetX series, 30 models per run, with made-up results."""
    root = tmp_path_factory.mktemp("series") / "runs"
    code, out, err = dsd("sample", "--space", "RegNetX", "--n", 30, "--flops-targets", "1.6G,200M,400M",
                         "--params", ":30M", "--out", root, "--json")
    assert code == 0, err
    return root, json.loads(out)


def test_each_run_holds_its_band(series):
    root, made = series
    assert sorted(p.name for p in root.iterdir()) == sorted(TARGETS)
    assert made["series"] == "regnetx" and made["targets"] == [2e8, 4e8, 1.6e9]
    assert [r["run"] for r in made["runs"]] == [str(root / name) for name in TARGETS]  # in target order
    for name, target in TARGETS.items():
        flops = pq.read_table(root / name / "models.parquet").column("flops").to_numpy()
        params = pq.read_table(root / name / "models.parquet").column("params").to_numpy()
        assert len(flops) == 30 and (flops >= 0.9 * target).all() and (flops <= target).all()
        assert (params <= 30e6).all()  # --params applies to every run
        meta = yaml.safe_load((root / name / "run.yaml").read_text())
        assert meta["name"] == name and meta["regime"]["flops"] == [target * 9 / 10, target]
        assert meta["regime"]["params"] == [0, 30e6] and meta["regime"]["name"] == "imagenet"
        assert meta["series"] == {"name": "regnetx", "targets": [200_000_000, 400_000_000, 1_600_000_000],
                                  "target": int(target)}


def test_sampling_again_changes_nothing(series):
    root, _ = series
    before = snapshot(root)
    code, out, err = dsd("sample", "--space", "RegNetX", "--n", 30, "--flops-targets", "200M,400M,1600M",
                         "--params", ":30M", "--out", root, "--json")
    assert code == 0, err
    assert all(r["unchanged"] for r in json.loads(out)["runs"]) and "next:" not in err
    assert snapshot(root) == before


def test_default_folders_and_the_library(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    made = lib.sample_series("RegNetX", 3, ["800M", 4e8], regime="imagenet", seed=1)
    assert [m.run.as_posix() for m in made] == ["runs/regnetx-400mf", "runs/regnetx-800mf"]
    assert all(m.unchanged for m in lib.sample_series("RegNetX", 3, "400M,800M", seed=1))  # one text, too
    assert [m.regime.flops for m in made] == [(360e6, 400e6), (720e6, 800e6)] and not made[0].unchanged
    assert [flops_label(v) for v in (1.6e9, 2e8, 8e5, 4e9, 500)] == ["1.6GF", "200MF", "800KF", "4GF", "500F"]


@pytest.mark.parametrize("args,expected", [
    (["--flops-targets", "200M,lots"], "--flops-targets: 'lots' is not a quantity"),
    (["--flops-targets", "200M,"], "--flops-targets: '' is not a quantity"),
    (["--flops-targets", "0,200M"], "--flops-targets: a target must be a positive number, got '0'"),
    (["--flops-targets", "1G,1000M"], "'1G' and '1000M' are the same target (1GF)"),
    (["--flops-targets", "200M,400M", "--flops", "400M"], "give --flops (one band) or --flops-targets"),
    (["--flops-targets", "200M", "--space", "NoSuchSpace"], "unknown space"),
    (["--flops-targets", "200M", "--params", "9:1"], "--params 9:1: low 9 is above high 1"),
    (["--flops-targets", "200M", "--n", "0"], "--n must be positive"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, args, expected):
    space = [] if "--space" in args else ["--space", "RegNetX"]
    count = [] if "--n" in args else ["--n", 5]
    code, out, err = dsd("sample", *space, *count, *args, "--out", tmp_path / "runs")
    assert code == 2 and expected in err, err
    assert len(err.strip().splitlines()) == 1 and out == ""
    assert not (tmp_path / "runs").exists()


def test_a_refused_folder_stops_the_whole_series(tmp_path):
    root = tmp_path / "runs"
    assert dsd("sample", "--space", "RegNetX", "--n", 5, "--out", root / "regnetx-400mf")[0] == 0
    before = snapshot(root)
    code, _, err = dsd("sample", "--space", "RegNetX", "--n", 5, "--flops-targets", "200M,400M", "--out", root)
    assert code == 2 and "regnetx-400mf was sampled with other arguments" in err, err
    assert "series" in err and snapshot(root) == before  # 200MF was drawn but not written


def test_trends_across_a_series_equal_trends_of_each_run(series):
    root, _ = series
    runs = [train_fake(root / name) for name in TARGETS]
    together = lib.trends(lib.load_runs(runs), STATS, samples=500)
    alone = pd.concat([lib.trends(lib.load_runs([r]), STATS, samples=500) for r in runs], ignore_index=True)
    pd.testing.assert_frame_equal(together, alone)
    assert list(series_runs(lib.load_runs(runs[::-1]))) == ["regnetx"]
    assert series_runs(lib.load_runs(runs[::-1]))["regnetx"] == TARGETS  # ordered by target


def test_across_figure_only_for_a_series(series, tmp_path):
    root, _ = series
    runs = [train_fake(root / name) for name in TARGETS]
    code, out, err = dsd("trends", *runs, "--stats", "d,w4", "--samples", 200, "--out", tmp_path / "s.png",
                         "--json")
    assert code == 0, err
    assert json.loads(out)["figure_across"] == str(tmp_path / "s_across.png")
    assert (tmp_path / "s_across.png").read_bytes()[:4] == b"\x89PNG"
    code, out, err = dsd("trends", runs[0], train_fake(unrelated(tmp_path)), "--stats", "d,w4", "--samples", 200,
                         "--out", tmp_path / "u.png", "--json")
    assert code == 0, err
    assert json.loads(out)["figure_across"] is None and not (tmp_path / "u_across.png").exists()


def test_the_reports_trends_section_draws_a_series_only(series, tmp_path):
    from dsd.analysis.findings import Evidence
    from dsd.analysis.report import _trends_section

    def section(runs):
        evidence = Evidence(lib.load_runs(runs))
        evidence.trends = lib.trends(evidence.frame, ["d", "w4"], samples=200)  # two panels draw fast
        return _trends_section(evidence)

    root, _ = series
    runs = [train_fake(root / name) for name in TARGETS]
    text = section(runs)
    assert 'alt="trends across runs"' in text and "No figure across runs" not in text
    text = section(runs[:1] + [train_fake(unrelated(tmp_path))])
    assert 'alt="trends across runs"' not in text and "No figure across runs" in text


def unrelated(tmp_path):
    """A RegNetY run in the 200MF band, sampled with --flops: no series."""
    assert dsd("sample", "--space", "RegNetY", "--n", 30, "--flops", "180M:200M", "--out", tmp_path / "y")[0] == 0
    return tmp_path / "y"


def frame_of(metas: dict, split=None):
    frame = pd.DataFrame()
    frame.attrs = {"runs": {name: {"meta": meta} for name, meta in metas.items()}, "split": split}
    return frame


def member(target, name="regnetx", **more):
    return {"series": {"name": name, "targets": [2e8, 4e8], "target": target}, **more}


def test_series_runs_finds_series_only():
    assert series_runs(frame_of({"a": member(4e8), "b": member(2e8), "c": {}})) == {"regnetx": {"b": 2e8, "a": 4e8}}
    assert series_runs(frame_of({"a": member(4e8), "c": {}})) == {}  # one run is no series
    assert series_runs(frame_of({"a": member(4e8), "b": member(4e8)})) == {}  # two series of one name: ambiguous
    copy = member(2e8, copies={"source": "../b"})
    assert series_runs(frame_of({"a": member(4e8), "b-reseed": copy})) == {}  # a reseed copy is not a member
    halves = frame_of({"a: d > 9": member(4e8), "a: not d > 9": member(4e8), "b: d > 9": member(2e8),
                       "b: not d > 9": member(2e8)}, split="d > 9")
    assert series_runs(halves) == {"regnetx: d > 9": {"b: d > 9": 2e8, "a: d > 9": 4e8},
                                   "regnetx: not d > 9": {"b: not d > 9": 2e8, "a: not d > 9": 4e8}}


def test_complexity_exponents_recover_planted_powers_and_equal_a_direct_fit(tmp_path):
    """acts ~ flops^0.5 and params ~ flops^1 planted in a 3-regime series: the fitted exponents find them."""
    import numpy as np
    import yaml

    from dsd.analysis.load import load_runs
    from dsd.analysis.scaling import best_of_runs, complexity_exponents
    from synthetic_runs import anynet_rows, write_run

    rng = np.random.default_rng(0)
    paths = []
    for target in (1e6, 2e6, 4e6):
        rows = anynet_rows(20, rng)
        for r in rows:
            r["flops"] = int(target * rng.uniform(0.9, 1.0))
            r["acts"] = int(3 * r["flops"] ** 0.5 * rng.lognormal(0, 0.02))
            r["params"] = int(0.2 * r["flops"] * rng.lognormal(0, 0.02))
        run = write_run(tmp_path / f"s{int(target)}", rows)
        meta = yaml.safe_load((run / "run.yaml").read_text())
        meta["series"] = {"name": "syn", "targets": [1000000, 2000000, 4000000], "target": int(target)}
        (run / "run.yaml").write_text(yaml.safe_dump(meta))
        paths.append(run)
    frame = load_runs(paths)
    table = complexity_exponents(frame, top=5, samples=500).set_index("stat")
    assert table.loc["acts", "lo"] <= 0.5 <= table.loc["acts", "hi"]
    assert table.loc["params", "lo"] <= 1.0 <= table.loc["params", "hi"]
    best = best_of_runs(frame, [p.name for p in paths], 5)
    direct = np.polyfit(np.log(best["flops"]), np.log(best["acts"]), 1)[0]
    assert table.loc["acts", "exponent"] == pytest.approx(direct)
    assert set(table["models"]) == {15} and set(table["regimes"]) == {3}
    unrelated = load_runs(paths[:1])
    assert complexity_exponents(unrelated).empty
