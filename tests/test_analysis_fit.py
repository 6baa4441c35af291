"""Quantized linear fits recover RegNet-rule widths and fit random AnyNetXA widths clearly worse."""
import numpy as np
import pyarrow.parquet as pq
import pytest

from dsd.runfolder import FITS_FILE
from dsd.analysis.fit import Coarse, block_widths, fit_blocks, fit_model, fit_models, fit_runs, save_fits
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


def reference_fit(j, log_w, max_depth: int) -> dict:
    """The fit by plain evaluation of every grid point (the algorithm fit.py must reproduce bit for bit):
    the coarse grid, its STARTS least (e_fit, point), and two rounds of refinement per start. Each e_fit
    is summed block after block (np.add.accumulate), as fit.py documents."""
    from dsd.analysis.fit import REFINE_POINTS, STARTS, W0_GRID, WA_GRID, WM_GRID

    def grid(w0s, was, wms):
        return [a.ravel() for a in np.meshgrid(w0s, was, wms, indexing="ij")]

    def around(values, value):
        i = int(np.argmin(np.abs(values - value)))
        return np.linspace(values[max(i - 1, 0)], values[min(i + 1, len(values) - 1)], REFINE_POINTS)

    def costs(points, depth):
        w0, wa, wm = (p[:, None] for p in points)
        diff = np.log(quantized_linear_widths(depth, w0, wa, wm))[:, j] - log_w
        return np.add.accumulate(np.abs(diff, out=diff), axis=1)[:, -1] / diff.shape[1]

    def refine(w0, wa, wm):
        w0s = np.unique(np.clip([w0 - 8, w0, w0 + 8], W0_GRID[0], W0_GRID[-1]))
        was, wms = around(WA_GRID, wa), around(WM_GRID, wm)
        for _ in range(2):
            points = grid(w0s, was, wms)
            cost = costs(points, int(j.max()) + 1)
            k = int(np.argmin(cost))
            w0, wa, wm = (float(p[k]) for p in points)
            w0s, was, wms = np.array([w0]), around(was, wa), around(wms, wm)
        return float(cost[k]), (w0, wa, wm)

    points = grid(W0_GRID, WA_GRID, WM_GRID)
    cost = costs(points, max_depth)
    e_fit, (w0, wa, wm) = min(refine(*(p[k] for p in points)) for k in np.lexsort((np.arange(len(cost)), cost))[:STARTS])
    return {"w0": w0, "wa": wa, "wm": wm, "e_fit": e_fit}


def random_models(rng, n: int) -> list[tuple[list, list]]:
    """Stage depths and widths of every kind the fits meet: AnyNet-like (any integer widths, 1 to 5
    stages, blocks 1..80), constant widths, and RegNet-rule ones."""
    models = []
    for i in range(n):
        stages = int(rng.integers(1, 6))
        depths = rng.integers(1, 17, stages)
        if i % 4 == 3:
            row = regnet_rows(1, rng)[0]
            depths, widths = row["depths"], row["widths"]
        elif i % 4 == 2:
            widths = [int(rng.integers(1, 400))] * stages
        else:
            widths = np.round(np.exp(rng.uniform(0, np.log(2000), stages))).astype(int) + 1
        models.append((list(depths), list(widths)))
    return models


def test_fits_equal_a_plain_evaluation_of_every_grid_point():
    """fit.py solves the grids by events and exact sums of the candidates only: its fits must be those
    of evaluating every point (same parameters and e_fit, bit for bit, ties included)."""
    rng = np.random.default_rng(2026)
    models = random_models(rng, 24)
    depth = max(sum(d) for d, _ in models)
    coarse = Coarse(depth)
    fits = fit_models([d for d, _ in models], [w for _, w in models], coarse)
    for (d, w), got in zip(models, fits):
        b = block_widths(d, w)
        assert got == reference_fit(np.arange(len(b)), np.log(b), depth), (d, w)
    pooled = [block_widths(d, w) for d, w in models[:6]]
    j = np.concatenate([np.arange(len(b)) for b in pooled])
    log_w = np.log(np.concatenate(pooled))
    assert fit_blocks(j, log_w, coarse) == reference_fit(j, log_w, depth)


def test_coarse_starts_are_the_least_costs_of_every_point():
    """The pruned coarse search must pick the starts a sum at every coarse point picks (ties to the lower
    point), for models and pooled blocks, and its lower bounds must never exceed a point's cost."""
    from dsd.analysis.fit import STARTS, Blocks, _lower_bounds, coarse_starts

    rng = np.random.default_rng(7)
    models = random_models(rng, 120)
    coarse = Coarse(max(sum(d) for d, _ in models))
    fits = [(np.arange(len(b)), np.log(b)) for b in (block_widths(d, w) for d, w in models)]
    fits += [tuple(np.concatenate(parts) for parts in zip(*fits[k:k + 5])) for k in range(0, 30, 5)]  # pooled
    blocks = Blocks.of(fits)
    bounds, starts = _lower_bounds(coarse.log_pred_by_block, blocks), coarse_starts(blocks, coarse)
    for row, (j, log_w) in enumerate(fits):
        terms = np.abs(coarse.log_pred_by_block[j] - log_w[:, None])
        cost = np.add.accumulate(terms, axis=0)[-1] / len(j)  # every point, block after block
        assert np.all(bounds[row] <= cost * (1 + 1e-12))
        assert list(starts[row]) == list(np.lexsort((np.arange(len(cost)), cost))[:STARTS])
