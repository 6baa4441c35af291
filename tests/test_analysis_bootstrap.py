"""The empirical bootstrap finds a known best value, is wide where there is none, and is reproducible."""
import numpy as np
import pandas as pd
import pytest

from dsd.analysis.bootstrap import best_indices, best_ranges, model_statistics, trends
from dsd.errors import BadInput
from dsd.analysis.load import load_runs
from synthetic_runs import anynet_rows, regnet_rows, write_run


@pytest.fixture(scope="module")
def frame(tmp_path_factory):
    """AnyNet models whose error is lowest at d1 = 7 (see synthetic_runs.default_error), some not done."""
    root = tmp_path_factory.mktemp("boot")
    rows = anynet_rows(400, np.random.default_rng(5))
    statuses = ["done"] * 400
    for i, s in zip(range(0, 40, 4), ["failed", "diverged", "untrained"] * 4):
        statuses[i] = s
    write_run(root / "xa", rows, statuses=statuses)
    return load_runs([root / "xa"])


def test_interval_contains_known_best_and_is_narrow(frame):
    table = trends(frame, ["d1", "g1"], samples=4000, seed=1).set_index("stat")
    d1 = table.loc["d1"]
    assert d1["lo"] <= 7 <= d1["hi"]
    assert d1["hi"] - d1["lo"] <= 2
    assert d1["median"] == pytest.approx(7, abs=0.5)
    assert d1["best_model"] == pytest.approx(7, abs=1)
    # g1 does not affect the error: the likely range spans most of its values 1..32
    g1 = table.loc["g1"]
    assert g1["hi"] - g1["lo"] >= 15


def test_reproducible_with_seed(frame):
    a = trends(frame, ["d2", "w3"], samples=500, seed=7)
    b = trends(frame, ["d2", "w3"], samples=500, seed=7)
    c = trends(frame, ["d2", "w3"], samples=500, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert not a[["lo", "median", "hi"]].equals(c[["lo", "median", "hi"]])


def test_vectorized_draw_equals_a_loop():
    rng = np.random.default_rng(0)
    errors = rng.uniform(0, 1, 50)
    fast = best_indices(errors, 300, 0.25, np.random.default_rng(4))
    idx = np.random.default_rng(4).integers(0, 50, size=(300, round(0.25 * 50)))
    slow = [row[np.argmin(errors[row])] for row in idx]
    np.testing.assert_array_equal(fast, slow)


def test_best_ranges_quantiles():
    x = pd.DataFrame({"s": np.arange(100.0)})
    errors = np.abs(np.arange(100.0) - 30)  # best at s = 30
    table = best_ranges(x, errors, samples=2000, subsample=0.5, seed=0).iloc[0]
    assert table["lo"] <= 30 <= table["hi"] and table["best_model"] == 30
    draws = x["s"].to_numpy()[best_indices(errors, 2000, 0.5, np.random.default_rng(0))]
    assert table["median"] == pytest.approx(np.median(draws))
    assert table["lo"] == pytest.approx(np.quantile(draws, 0.025))


def test_statistics_names_and_defaults(tmp_path, frame):
    stats = model_statistics(frame)
    for name in ["d1", "d4", "w1", "w4", "b1", "g4", "d", "w_sum", "flops", "params", "acts"]:
        assert name in stats
    assert "w0" not in stats  # AnyNet rows have no RegNet parameters
    np.testing.assert_array_equal(stats["d"], frame["depth"])
    np.testing.assert_array_equal(stats["w1"], [w[0] for w in frame["widths"]])
    write_run(tmp_path / "rx", regnet_rows(30, np.random.default_rng(1)))
    regnet = trends(load_runs([tmp_path / "rx"]), samples=100)
    assert {"w0", "wa", "wm", "d"} <= set(regnet["stat"])
    assert "b1" not in set(regnet["stat"])  # constant (b = 1): left out of the defaults
    assert trends(frame, ["depth"], samples=10)["stat"].tolist() == ["d"]


@pytest.mark.parametrize("kwargs, message", [({"stats": ["nope"]}, "unknown"), ({"samples": 0}, "samples"),
                                             ({"subsample": 0.0}, "subsample"), ({"level": 1.0}, "level")])
def test_bad_settings(frame, kwargs, message):
    with pytest.raises(BadInput, match=message):
        trends(frame, **kwargs)


def test_stage_ratios_are_the_papers_fig7_statistics_and_only_on_request():
    from dsd.analysis.bootstrap import model_statistics, pick_stats

    frame = pd.DataFrame({"depths": [[1, 2, 6], [2, 2, 1]], "widths": [[8, 24, 48], [16, 16, 64]],
                          "bottleneck_ratios": [[1.0] * 3] * 2, "group_widths": [[8] * 3] * 2,
                          "depth": [9, 5], "w0": np.nan, "wa": np.nan, "wm": np.nan,
                          "flops": [1, 2], "params": [1, 2], "acts": [1, 2]})
    stats = model_statistics(frame)
    assert stats["w2/w1"].tolist() == [3.0, 1.0] and stats["w3/w2"].tolist() == [2.0, 4.0]
    assert stats["d2/d1"].tolist() == [2.0, 1.0] and stats["d3/d2"].tolist() == [3.0, 0.5]
    assert not any("/" in s for s in pick_stats(stats, None))
    assert pick_stats(stats, ["w2/w1"]) == ["w2/w1"]
