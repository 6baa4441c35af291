"""Sample-size analyses: KS power by subsample size equal to the documented protocol run with
ks_2samp, near alpha without a difference and near 1 with a planted one; interval widths equal to
best_ranges on nested subsamples."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dsd.analysis.bootstrap import best_ranges, model_statistics
from dsd.analysis.load import load_runs, scored
from dsd.analysis.plots import png_bytes, sample_size_figure
from dsd.analysis.samplesize import (KS_COLUMNS, WIDTH_COLUMNS, default_sizes, ks_by_size, ks_statistics,
                                     separation_sentence, width_by_size)
from dsd.errors import BadInput
from synthetic_runs import anynet_rows, write_run


def memory_frame(runs: dict) -> pd.DataFrame:
    """A frame with just the columns ks_by_size reads: run name -> errors (NaN: a failed model)."""
    rows = [{"run": name, "err": e, "status": "done" if np.isfinite(e) else "failed"}
            for name, errors in runs.items() for e in errors]
    frame = pd.DataFrame(rows)
    frame.attrs = {"runs": {name: {} for name in runs}}
    return frame


@pytest.fixture(scope="module")
def populations():
    """"same1" and "same2" from one distribution, "shift" one standard deviation higher; errors on a
    0.1 grid (ties), a few failed models in "same2"."""
    rng = np.random.default_rng(4)
    same2 = np.round(rng.normal(30, 3, 1200), 1)
    same2[::100] = np.nan
    return memory_frame({"same1": np.round(rng.normal(30, 3, 1000), 1), "same2": same2,
                         "shift": np.round(rng.normal(33, 3, 1000), 1)})


@pytest.fixture(scope="module")
def run_folders(tmp_path_factory):
    """Two AnyNet runs written to disk, error lowest at d1 = 7, some models not done."""
    root = tmp_path_factory.mktemp("size")
    rng = np.random.default_rng(8)
    statuses = ["done"] * 300
    statuses[:6] = ["failed", "diverged", "untrained"] * 2
    write_run(root / "a", anynet_rows(300, rng), statuses=statuses)
    write_run(root / "b", anynet_rows(200, rng))
    return load_runs([root / "a", root / "b"])


def protocol(ea, eb, n, repeats, seed):
    """The subsampling protocol of dsd.analysis.samplesize, written out with ks_2samp."""
    if n == len(ea) == len(eb):
        return [stats.ks_2samp(ea, eb)]
    out = []
    for r in range(repeats):
        rng = np.random.default_rng([seed, r])
        ia = rng.choice(len(ea), n, replace=False)
        ib = rng.choice(len(eb), n, replace=False)
        out.append(stats.ks_2samp(ea[ia], eb[ib]))
    return out


def test_default_sizes():
    assert default_sizes(2000) == [10, 25, 50, 100, 250, 500, 1000, 2000]
    assert default_sizes(1000) == [10, 25, 50, 100, 250, 500, 1000]
    assert default_sizes(120) == [10, 25, 50, 100, 120]
    assert default_sizes(7) == [7]


def test_ks_statistic_equals_scipy_with_ties():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 12, (50, 30)).astype(float), rng.integers(2, 14, (50, 30)).astype(float)
    h = ks_statistics(a, b)
    np.testing.assert_allclose(h / 30, [stats.ks_2samp(x, y).statistic for x, y in zip(a, b)], rtol=1e-12)


def test_ks_by_size_equals_the_protocol(populations):
    models = scored(populations)
    errors = {r: models.loc[models["run"] == r, "err"].to_numpy() for r in ("same1", "same2", "shift")}
    table = ks_by_size(populations, sizes=[10, 40, 1000, 5000], repeats=30, seed=7)
    assert list(table.columns) == KS_COLUMNS
    assert list(zip(table["a"], table["b"]))[::3] == [("same1", "same2"), ("same1", "shift"), ("same2", "shift")]
    assert table["n"].tolist() == [10, 40, 1000] * 3        # 5000 is more than the runs have
    for row in table.itertuples():
        results = protocol(errors[row.a], errors[row.b], row.n, 30, 7)
        assert row.repeats == len(results) == (1 if row.n == 1000 and row.a == "same1" and row.b == "shift" else 30)
        p = np.array([r.pvalue for r in results])
        assert row.d_median == pytest.approx(np.median([r.statistic for r in results]), rel=1e-12)
        assert row.p_median == pytest.approx(np.median(p), rel=1e-9)
        assert row.power == np.mean(p < 0.05)
        assert row.alpha == 0.05


def test_power_near_alpha_without_difference_and_near_one_with_a_shift(populations):
    table = ks_by_size(populations, pairs=[("same1", "same2"), ("same1", "shift")], sizes=[10, 25, 50, 100])
    same = table[table["b"] == "same2"]
    shift = table[table["b"] == "shift"].set_index("n")
    assert (same["power"] <= 0.12).all() and same["power"].mean() <= 0.08
    assert shift.at[100, "power"] >= 0.95 and shift.at[10, "power"] < shift.at[50, "power"]
    assert shift.at[100, "d_median"] == pytest.approx(0.38, abs=0.1)   # 2 Phi(0.5) - 1
    assert separation_sentence(table, "same1", "shift") == (
        "same1 and shift separate (KS p < 0.05 in at least 80% of subsamples) from n = 25 models per run")
    assert separation_sentence(table, "same2", "same1").startswith(
        "same2 and same1 do not separate reliably at any n up to 100 (power 0.")
    assert separation_sentence(table, "same2", "shift") is None


def test_separation_needs_power_from_n_on():
    table = pd.DataFrame({"a": "x", "b": "y", "n": [10, 25, 50, 100], "repeats": 200, "d_median": 0.3,
                          "p_median": 0.01, "power": [0.9, 0.7, 0.85, 0.95], "alpha": 0.05})
    assert separation_sentence(table, "x", "y").endswith("from n = 50 models per run")
    table["power"] = [0.9, 0.7, 0.85, 0.5]
    assert separation_sentence(table, "x", "y") == (
        "x and y do not separate reliably at any n up to 100 (power 0.50 at n = 100)")


def test_bad_settings(populations):
    with pytest.raises(BadInput, match="unknown run"):
        ks_by_size(populations, pairs=[("same1", "nope")])
    with pytest.raises(BadInput, match="repeats"):
        ks_by_size(populations, repeats=0)


def test_width_by_size_equals_best_ranges_on_nested_subsamples(run_folders):
    table = width_by_size(run_folders, sizes=[20, 100, 1000], stats=["d1", "w2"], samples=300, seed=5)
    assert list(table.columns) == WIDTH_COLUMNS
    models = scored(run_folders)
    x = model_statistics(models)[["d1", "w2"]]
    for run, full in (("a", 296), ("b", 200)):             # 2 failed and 2 untrained models in "a"
        mask = (models["run"] == run).to_numpy()
        perm = np.random.default_rng(5).permutation(mask.sum())
        xs, es = x[mask].iloc[perm], models["err"].to_numpy()[mask][perm]
        part = table[table["run"] == run]
        assert part["n"].unique().tolist() == [20, 100]
        whole = best_ranges(xs, es, 300, level=0.95, seed=5)
        for n in (20, 100):
            ref = best_ranges(xs.iloc[:n], es[:n], 300, level=0.95, seed=5)
            rows = part[part["n"] == n]
            np.testing.assert_allclose(rows[["lo", "hi"]], ref[["lo", "hi"]])
            np.testing.assert_allclose(rows["width"], ref["hi"] - ref["lo"])
            np.testing.assert_allclose(rows["full_width"], whole["hi"] - whole["lo"])
        assert full == mask.sum()


def test_width_shrinks_with_n_for_a_planted_optimum(run_folders):
    table = width_by_size(run_folders, stats=["d1"], samples=1000)
    a = table[table["run"] == "a"].set_index("n")
    assert a.index.tolist() == [10, 25, 50, 100, 250, 296]
    assert a.at[296, "width"] == a.at[296, "full_width"] <= 2       # the optimum d1 = 7 is sharp
    assert a.at[10, "width"] > a.at[296, "width"]
    everything = width_by_size(run_folders, samples=100)
    assert {"d1", "w4", "flops"} <= set(everything["stat"])


def test_figure_renders(populations, run_folders):
    ks = ks_by_size(populations, sizes=[10, 50], repeats=20)
    widths = width_by_size(run_folders, stats=["d1", "g1"], samples=200)
    assert png_bytes(sample_size_figure(ks, widths)).startswith(b"\x89PNG")
    assert png_bytes(sample_size_figure(ks.iloc[:0], widths.iloc[:0])).startswith(b"\x89PNG")
