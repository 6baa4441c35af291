"""EDF, summary statistics and KS tests against independent numpy / scipy computations."""
import numpy as np
import pytest
from scipy import stats

from dsd.analysis.edf import bin_edges, edf, edf_curves, edf_table, normalized_weights, weighted_ks
from dsd.errors import BadInput
from dsd.analysis.load import chance_error, load_runs
from synthetic_runs import NUM_CLASSES, anynet_rows, write_run


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("edf")
    rng = np.random.default_rng(3)
    rows = anynet_rows(60, rng)
    e1 = rng.uniform(10, 40, 60)
    s1 = ["done"] * 60
    s1[0], s1[1], s1[2], s1[3] = "diverged", "failed", "untrained", "diverged"
    e2 = rng.normal(22, 4, 60)
    write_run(root / "a", rows, errors=e1, statuses=s1)
    write_run(root / "b", rows, errors=e2)
    return root, e1, s1, e2


def _reference_errors(e, statuses):
    chance = 100 * (1 - 1 / NUM_CLASSES)
    return np.array([chance if s == "diverged" else v for v, s in zip(e, statuses) if s in ("done", "diverged")])


def test_edf_matches_definition():
    rng = np.random.default_rng(0)
    e = rng.integers(0, 20, 50).astype(float)  # ties on purpose: F counts strictly smaller errors
    at = np.linspace(-1, 21, 97)
    expected = np.array([(e < x).mean() for x in at])
    np.testing.assert_allclose(edf(e, at), expected)
    np.testing.assert_allclose(edf(e, e), [(e < x).mean() for x in e])


def test_table_and_ks_match_numpy_and_scipy(two_runs):
    root, e1, s1, e2 = two_runs
    frame = load_runs([root / "a", root / "b"])
    table = edf_table(frame).set_index("run")
    ref1 = _reference_errors(e1, s1)
    assert table.at["a", "n"] == len(ref1) == 58
    counts = table.loc["a", ["done", "diverged", "failed", "untrained"]].tolist()
    assert counts == [56, 2, 1, 1]
    assert table.at["a", "min"] == pytest.approx(ref1.min())
    assert table.at["a", "mean"] == pytest.approx(ref1.mean())
    assert table.at["a", "median"] == pytest.approx(np.median(ref1))
    assert table.at["b", "median"] == pytest.approx(np.median(e2))
    ks = stats.ks_2samp(ref1, e2)
    assert table.at["b", "ks_d"] == pytest.approx(ks.statistic)
    assert table.at["b", "ks_p"] == pytest.approx(ks.pvalue)
    assert table.at["a", "ks_d"] is None or np.isnan(table.at["a", "ks_d"])
    # the EDF curve reaches 1 and its steps are at the sorted errors
    x, y = edf_curves(frame)["a"]
    np.testing.assert_allclose(x, np.sort(ref1))
    np.testing.assert_allclose(y, np.arange(1, len(ref1) + 1) / len(ref1))


def test_diverged_count_at_chance(two_runs):
    root, *_ = two_runs
    frame = load_runs([root / "a"])
    diverged = frame[frame["status"] == "diverged"]
    assert len(diverged) == 2
    np.testing.assert_allclose(diverged["err"], chance_error(NUM_CLASSES))
    assert frame.loc[frame["status"].isin(["failed", "untrained"]), "err"].isna().all()


def test_normalized_weights_equal_mass_per_occupied_bin():
    rng = np.random.default_rng(1)
    flops = np.concatenate([rng.uniform(0, 10, 80), rng.uniform(30, 40, 7)])  # bins 4..6 of 0..40 empty
    edges = bin_edges(flops, 8, 0, 40)
    w = normalized_weights(flops, edges)
    assert w.sum() == pytest.approx(1.0)
    index = np.clip(np.digitize(flops, edges) - 1, 0, 7)
    totals = np.bincount(index, weights=w, minlength=8)
    occupied = totals[totals > 0]
    assert len(occupied) == len(np.unique(index))
    np.testing.assert_allclose(occupied, 1 / len(occupied))
    # the sparse high-flops bins weigh as much as the crowded ones
    assert w[-1] > 5 * w[0]


def test_normalized_table_uses_weights(two_runs):
    root, *_ = two_runs
    frame = load_runs([root / "a", root / "b"])
    plain = edf_table(frame).set_index("run")
    norm = edf_table(frame, "flops", 4).set_index("run")
    models = frame[frame["err"].notna() & (frame["run"] == "b")]
    edges = bin_edges(frame.loc[frame["err"].notna(), "flops"], 4)
    w = normalized_weights(models["flops"], edges)
    assert norm.at["b", "mean"] == pytest.approx(np.sum(w * models["err"]))
    assert norm.at["b", "mean"] != pytest.approx(plain.at["b", "mean"])
    assert 0 <= norm.at["b", "ks_d"] <= 1 and 0 <= norm.at["b", "ks_p"] <= 1
    with pytest.raises(BadInput, match="normalize"):
        edf_table(frame, "depth")


def test_weighted_ks_with_equal_weights_is_the_plain_statistic():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, 200), rng.normal(0.3, 1, 150)
    d, p = weighted_ks(a, np.full(200, 1 / 200), b, np.full(150, 1 / 150))
    ref = stats.ks_2samp(a, b, method="asymp")
    assert d == pytest.approx(ref.statistic)
    assert p == pytest.approx(ref.pvalue)
