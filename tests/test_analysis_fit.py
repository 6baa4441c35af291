"""Quantized linear fits recover RegNet-rule widths and fit random AnyNetXA widths clearly worse."""
import numpy as np
import pyarrow.parquet as pq
import pytest

from dsd.runfolder import FITS_FILE
from dsd.analysis.fit import Coarse, block_widths, fit_model, fit_runs, save_fits
from dsd.analysis.load import load_runs
from dsd.design.regnet import quantized_linear_widths
from synthetic_runs import anynet_rows, regnet_rows, write_run


@pytest.fixture(scope="module")
def coarse():
    return Coarse(64)


def test_recovers_regnet_widths(coarse):
    rows = regnet_rows(40, np.random.default_rng(11))
    fits = [fit_model(r["depths"], r["widths"], coarse) for r in rows]
    e_fit = np.array([f["e_fit"] for f in fits])
    assert np.median(e_fit) == 0.0
    assert e_fit.max() < 0.05
    exact = [np.array_equal(quantized_linear_widths(r["depth"], f["w0"], f["wa"], f["wm"]),
                            block_widths(r["depths"], r["widths"])) for r, f in zip(rows, fits)]
    assert np.mean(exact) >= 0.9
    # e_fit is the mean |log(pred / w)| of the reported parameters
    r, f = rows[0], fits[0]
    pred = quantized_linear_widths(r["depth"], f["w0"], f["wa"], f["wm"])
    assert f["e_fit"] == pytest.approx(np.mean(np.abs(np.log(pred / block_widths(r["depths"], r["widths"])))))


def test_anynet_xa_fits_worse(coarse):
    rng = np.random.default_rng(12)
    xa = [fit_model(r["depths"], r["widths"], coarse)["e_fit"] for r in anynet_rows(40, rng)]
    rx = [fit_model(r["depths"], r["widths"], coarse)["e_fit"] for r in regnet_rows(40, rng)]
    assert np.mean(xa) > 0.2
    assert np.mean(xa) > 10 * np.mean(rx) + 0.1


def test_known_linear_population(coarse):
    """Widths exactly w_j = 48 (j + 1) (the best AnyNetXE models of the paper) give that line back."""
    j = np.arange(16)
    fit = fit_model([1] * 16, 48 * (j + 1), coarse)
    assert fit["e_fit"] < 0.1


def test_fit_runs_stores_fits(tmp_path):
    rng = np.random.default_rng(13)
    rows = regnet_rows(30, rng)
    statuses = ["done"] * 25 + ["untrained"] * 3 + ["failed", "diverged"]
    write_run(tmp_path / "rx", rows, statuses=statuses)
    frame = load_runs([tmp_path / "rx"])
    top = fit_runs(frame, top=5)
    models = top[top["scope"] == "model"]
    assert models["rank"].tolist() == [1, 2, 3, 4, 5]
    assert models["error"].is_monotonic_increasing
    pop = top[top["scope"] == "population"].iloc[0]
    assert pop["e_fit"] >= 0 and np.isfinite(pop["linear_wa"])
    everything = fit_runs(frame, top=None)
    assert (everything["scope"] == "model").sum() == 30  # untrained and failed models are fitted too
    [path] = save_fits(everything, frame)
    assert path == tmp_path / "rx" / FITS_FILE
    stored = pq.read_table(path).to_pandas()
    assert len(stored) == 31
    assert stored.loc[stored["scope"] == "model", "e_fit"].max() < 0.05
