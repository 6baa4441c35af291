"""Rank agreement of early and final errors: equal to scipy, bootstrap equal to scipy on explicit
resamples, and right on curves with a planted answer."""
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dsd.analysis import epochs
from dsd.analysis.epochs import agreement_sentence, bootstrap_values, rank_agreement
from dsd.analysis.load import load_runs
from dsd.analysis.plots import epochs_figure, png_bytes
from synthetic_runs import anynet_rows, write_run

N, E = 150, 6


def planted_curves(rng, n=N):
    """Epochs 1-2 are noise unrelated to the final error, later ones the final error plus shrinking
    noise; errors on a 0.5 grid, so ties occur in every epoch."""
    final = np.round(rng.uniform(20, 40, n) * 2) / 2
    noise = [rng.uniform(20, 60, n), rng.uniform(20, 60, n)]
    close = [final + rng.normal(0, s, n) for s in (3.0, 1.0, 0.3)]
    return np.round(np.column_stack(noise + close) * 2) / 2, final


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Run "p": N done models with full curves plus 4 with a short curve, 3 failed, 3 untrained; run
    "few": 2 usable models only."""
    root = tmp_path_factory.mktemp("epochs")
    rng = np.random.default_rng(11)
    matrix, final = planted_curves(rng)
    curves = [np.r_[m, f] for m, f in zip(matrix, final)] + [[50.0, 40.0, 30.0]] * 4 + [[]] * 6
    statuses = ["done"] * (N + 4) + ["failed"] * 3 + ["untrained"] * 3
    write_run(root / "p", anynet_rows(len(curves), rng), curves=curves, statuses=statuses)
    write_run(root / "few", anynet_rows(3, rng), curves=[[3.0, 2.0], [2.0, 1.0], [1.0]])
    frame = load_runs([root / "p", root / "few"])
    full = np.column_stack([matrix, final])
    return frame, full, rank_agreement(frame, samples=500, seed=3)


def memory_frame(runs: dict) -> pd.DataFrame:
    """A frame with just the columns rank_agreement reads: run name -> (models, epochs) curves."""
    rows = [{"run": name, "status": "done", "error_curve": c, "err": c[-1]}
            for name, curves in runs.items() for c in np.asarray(curves, dtype=float)]
    frame = pd.DataFrame(rows)
    frame.attrs = {"runs": {name: {} for name in runs}}
    return frame


def test_point_estimates_equal_scipy(planted):
    _, full, table = planted
    assert list(table.columns) == epochs.COLUMNS
    assert set(table["run"]) == {"p"}                       # "few" has 2 usable models: no rows
    assert table["epoch"].tolist() == list(range(1, E + 1))
    assert (table["epochs"] == E).all() and (table["n"] == N).all()
    for k, row in table.iterrows():
        assert row["kendall"] == pytest.approx(stats.kendalltau(full[:, k], full[:, -1]).statistic, abs=1e-12)
        assert row["spearman"] == pytest.approx(stats.spearmanr(full[:, k], full[:, -1]).statistic, abs=1e-12)


def test_bootstrap_equals_scipy_on_explicit_resamples(monkeypatch):
    rng = np.random.default_rng(5)
    curves, _ = planted_curves(rng, 40)
    curves[:, 1] = 30.0                                    # a constant epoch
    idx = np.vstack([rng.integers(0, 40, (6, 40)), np.full((1, 40), 7)])  # the last: one model 40 times
    kendall, spearman = bootstrap_values(curves, idx)
    assert kendall.shape == spearman.shape == (7, E - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for r, i in enumerate(idx):
            for k in range(E - 1):
                x, y = curves[i, k], curves[i, -1]
                np.testing.assert_allclose(kendall[r, k], stats.kendalltau(x, y).statistic, rtol=1e-12)
                np.testing.assert_allclose(spearman[r, k], stats.spearmanr(x, y).statistic, rtol=1e-12)
    assert np.isnan(kendall[:, 1]).all() and np.isnan(kendall[-1]).all()
    # above DENSE_MAX models Kendall loops over scipy: same values
    monkeypatch.setattr(epochs, "DENSE_MAX", 10)
    np.testing.assert_allclose(bootstrap_values(curves, idx)[0], kendall, rtol=1e-12)


def test_planted_noise_early_agreement_late(planted):
    *_, table = planted
    first, last = table.iloc[0], table.iloc[-1]
    assert abs(first["kendall"]) < 0.15 and first["kendall_lo"] < 0 < first["kendall_hi"]
    assert last["kendall"] == last["kendall_lo"] == last["kendall_hi"] == 1.0
    assert last["spearman"] == pytest.approx(1.0)
    assert table.iloc[4]["kendall_lo"] > 0.8
    assert (table["kendall_lo"] <= table["kendall"]).all() and (table["kendall"] <= table["kendall_hi"]).all()
    assert (table["spearman_lo"] <= table["spearman"]).all() and (table["spearman"] <= table["spearman_hi"]).all()


def test_reproducible_and_chunking_does_not_change_it(planted, monkeypatch):
    frame, _, table = planted
    pd.testing.assert_frame_equal(rank_agreement(frame, samples=500, seed=3), table)
    monkeypatch.setattr(epochs, "CHUNK_CELLS", 7 * N)     # 7 resamples per chunk, same generator stream
    pd.testing.assert_frame_equal(rank_agreement(frame, samples=500, seed=3), table)
    other = rank_agreement(frame, samples=500, seed=4)
    assert not np.allclose(other["kendall_lo"], table["kendall_lo"])


def test_interval_coverage():
    """Bivariate normal data with rho = 0.6: tau = 2/pi asin(rho), Spearman's rho_s = 6/pi asin(rho/2)."""
    rng = np.random.default_rng(0)
    rho, datasets = 0.6, 100
    runs = {}
    for i in range(datasets):
        y = rng.normal(size=60)
        runs[f"d{i}"] = np.column_stack([rho * y + np.sqrt(1 - rho**2) * rng.normal(size=60), y])
    table = rank_agreement(memory_frame(runs), samples=400, seed=1)
    first = table[table["epoch"] == 1]
    assert len(first) == datasets
    tau, rho_s = 2 / np.pi * np.arcsin(rho), 6 / np.pi * np.arcsin(rho / 2)
    cover_k = np.mean((first["kendall_lo"] <= tau) & (tau <= first["kendall_hi"]))
    cover_s = np.mean((first["spearman_lo"] <= rho_s) & (rho_s <= first["spearman_hi"]))
    assert 0.85 <= cover_k <= 1 and 0.85 <= cover_s <= 1


def test_constant_epoch_is_nan_without_warnings():
    rng = np.random.default_rng(2)
    final = rng.uniform(20, 40, 30)
    curves = np.column_stack([np.full(30, 90.0), final + rng.normal(0, 1, 30), final])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = rank_agreement(memory_frame({"c": curves}), samples=200)
    assert table[["kendall", "kendall_lo", "kendall_hi", "spearman"]].iloc[0].isna().all()
    assert table["kendall"].iloc[1:].notna().all()


def test_runs_without_usable_models_give_no_rows():
    empty = rank_agreement(memory_frame({"two": [[1.0, 2.0], [2.0, 1.0]]}))
    assert empty.empty and list(empty.columns) == epochs.COLUMNS
    assert agreement_sentence(empty, "two") is None


def test_agreement_sentence():
    base = {"run": "r", "epochs": 4, "n": 480, "kendall_hi": 0.9, "spearman": 0.9, "spearman_lo": 0.8,
            "spearman_hi": 0.95, "level": 0.95}
    rows = [(1, 0.5, 0.4), (2, 0.81, 0.74), (3, 0.85, 0.8), (4, 1.0, 1.0)]
    table = pd.DataFrame([{**base, "epoch": k, "kendall": t, "kendall_lo": lo} for k, t, lo in rows])
    assert agreement_sentence(table, "r") == ("the ranking after 3 of 4 epochs agrees with the final one at "
                                              "Kendall tau = 0.85 [0.80, 0.90] (95% bootstrap interval, 480 models)")
    table.loc[2, "kendall_lo"] = 0.79
    assert agreement_sentence(table, "r") == ("the ranking after 3 of 4 epochs agrees with the final one at "
                                              "only Kendall tau = 0.85 [0.79, 0.90] (95% bootstrap interval, "
                                              "480 models)")
    assert agreement_sentence(table, "other") is None


def test_figure_renders(planted):
    *_, table = planted
    assert png_bytes(epochs_figure(table)).startswith(b"\x89PNG")
    assert png_bytes(epochs_figure(table.iloc[:0])).startswith(b"\x89PNG")
