"""Random-search efficiency: the exact minimum-of-k distribution against a Monte-Carlo simulation."""
import numpy as np
import pytest

from dsd.analysis.load import load_runs
from dsd.analysis.search import min_of_k, sample_sizes, search_efficiency
from synthetic_runs import anynet_rows, write_run


def test_exact_distribution_matches_simulation():
    rng = np.random.default_rng(0)
    errors = np.round(rng.gamma(4, 5, 120), 1)  # with ties
    ks = sample_sizes(len(errors))
    assert ks.tolist() == [1, 2, 4, 8, 16, 32, 64]
    table = min_of_k(errors, ks)
    assert table.loc[0, "mean"] == pytest.approx(errors.mean())
    assert table.loc[0, "std"] == pytest.approx(errors.std())
    for k, row in zip(ks, table.itertuples()):
        sim = errors[rng.integers(0, len(errors), size=(40_000, k))].min(axis=1)
        assert row.mean == pytest.approx(sim.mean(), abs=0.05 * sim.std() + 1e-9)
        assert row.std == pytest.approx(sim.std(), rel=0.05, abs=1e-3)
        for q, value in ((0.25, row.q25), (0.75, row.q75)):  # the smallest value with P(min <= value) >= q
            assert value in errors
            assert np.mean(sim <= value) >= q - 0.01
            assert np.mean(sim < value) <= q + 0.01
    assert np.all(np.diff(table["mean"]) < 0)


def test_per_run_table(tmp_path):
    rows = anynet_rows(50, np.random.default_rng(1))
    write_run(tmp_path / "a", rows, statuses=["done"] * 45 + ["untrained"] * 5)
    write_run(tmp_path / "b", rows)
    table = search_efficiency(load_runs([tmp_path / "a", tmp_path / "b"]))
    assert table[table["run"] == "a"]["k"].max() == 32
    assert list(dict.fromkeys(table["run"])) == ["a", "b"]
