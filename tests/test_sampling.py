"""Sampling: constraints, reproducibility, prefix stability, uniqueness, declared distributions."""
import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from dsd.design.complexity import complexity
from dsd.design.regimes import REGIMES
from dsd.design.regnet import compatible_widths, regnet_stages
from dsd.design.sampler import sample
from dsd.design.spaces import builtin_names, load_space
from dsd.design.spec import spec_from_row

SHARED_B = {"AnyNetXB", "AnyNetXC", "AnyNetXD", "AnyNetXE", "RegNetX", "RegNetY"}
SHARED_G = {"AnyNetXC", "AnyNetXD", "AnyNetXE", "RegNetX", "RegNetY"}
WIDTHS_UP = {"AnyNetXD", "AnyNetXE", "RegNetX", "RegNetY"}
DEPTHS_UP = {"AnyNetXE"}


@pytest.mark.parametrize("regime", list(REGIMES))
@pytest.mark.parametrize("name", builtin_names())
def test_every_sampled_model_meets_its_space_and_regime(name, regime):
    space, rg = load_space(name), REGIMES[regime]
    rows = sample(space, rg, 40, seed=1).rows
    for r in rows:
        assert len(r["depths"]) == space.stages == 4
        if name in SHARED_B:
            assert len(set(r["bottleneck_ratios"])) == 1
        if name in SHARED_G:  # shared g before the compatibility step; after it g = min(g, w / b)
            raw_g = max(r["group_widths"])
            bw = [w / b for w, b in zip(r["widths"], r["bottleneck_ratios"])]
            assert all(g == min(raw_g, v) for g, v in zip(r["group_widths"], bw))
        if name in WIDTHS_UP:
            assert r["widths"] == sorted(r["widths"])
        if name in DEPTHS_UP:
            assert r["depths"] == sorted(r["depths"])
        assert all(1 <= d <= 16 for d in r["depths"]) or name.startswith("RegNet")
        for key in ("flops", "params", "acts"):
            lo, hi = getattr(rg, key)
            assert lo <= r[key] <= hi
        assert complexity(spec_from_row(r)) == {k: r[k] for k in ("flops", "params", "acts")}
        if name.startswith("RegNet"):
            assert r["depth"] < 64 and 8 <= r["w0"] <= 248 and 1.5 <= r["wm"] <= 3.0
            d, w = regnet_stages(r["depth"], r["w0"], r["wa"], r["wm"])
            cw, _ = compatible_widths(w, r["bottleneck_ratios"], [max(r["group_widths"])] * 4)
            assert (d, cw.tolist()) == (r["depths"], r["widths"])


@pytest.mark.parametrize("name", ["AnyNetXA", "AnyNetXE", "RegNetX"])
def test_prefix_stable_and_reproducible(name):
    space, rg = load_space(name), REGIMES["imagenet"]
    a = sample(space, rg, 50, seed=3).rows
    b = sample(space, rg, 100, seed=3).rows
    assert b[:50] == a
    assert sample(space, rg, 50, seed=3).rows == a
    assert sample(space, rg, 50, seed=4).rows != a


def test_no_duplicate_architectures_even_in_a_tiny_space(tmp_path):
    # a space with only 2 * 3 = 6 architectures: asking for 6 must give each once
    f = tmp_path / "tiny.yaml"
    f.write_text("""
name: Tiny
extends: AnyNetXA
parameters:
  depth: {per_stage: true, shared: true, distribution: choice, values: [1, 2]}
  width: {per_stage: true, shared: true, distribution: choice, values: [64]}
  bottleneck_ratio: {per_stage: true, shared: true, distribution: choice, values: [1, 2, 4]}
  group_width: {per_stage: true, shared: true, distribution: choice, values: [8]}
""")
    space = load_space(f)
    open_band = replace(REGIMES["imagenet"], flops=(0, math.inf))
    rows = sample(space, open_band, 6).rows
    assert len({r["key"] for r in rows}) == 6
    assert len({(tuple(r["depths"]), tuple(r["bottleneck_ratios"])) for r in rows}) == 6


def log_uniform_probs(low, high, q):
    """P(value = k q) for x = exp(U(log low, log high)) rounded to a multiple of q, clamped."""
    ks = np.arange(math.ceil(low / q), math.floor(high / q) + 1)
    lo = np.maximum(low, (ks - 0.5) * q)
    hi = np.minimum(high, (ks + 0.5) * q)
    return ks * q, (np.log(hi) - np.log(lo)) / (math.log(high) - math.log(low))


def test_unconstrained_sample_follows_the_declared_distributions():
    space = load_space("AnyNetXA")
    open_band = replace(REGIMES["imagenet"], flops=(0, math.inf))
    rows = sample(space, open_band, 4000, seed=11).rows
    depths = np.array([r["depths"] for r in rows])
    values, probs = log_uniform_probs(1, 16, 1)
    for stage in range(4):
        observed = np.array([(depths[:, stage] == v).sum() for v in values])
        assert stats.chisquare(observed, probs * len(rows)).pvalue > 1e-3
    # choice: the bottleneck ratio is uniform over {1, 2, 4} in every stage
    b = np.array([r["bottleneck_ratios"] for r in rows])
    for stage in range(4):
        observed = np.array([(b[:, stage] == v).sum() for v in (1, 2, 4)])
        assert stats.chisquare(observed).pvalue > 1e-3
    # and the test has power: the declared log-uniform is clearly not uniform over 1..16
    observed = np.array([(depths[:, 0] == v).sum() for v in values])
    assert stats.chisquare(observed).pvalue < 1e-6


def test_regnet_depth_is_uniform_before_the_stage_constraint():
    from dsd.design.sampler import draw

    space = load_space("RegNetX")
    d = draw(space.param("depth"), np.random.default_rng(0), (20000,))
    assert d.min() == 1 and d.max() == 63
    assert stats.chisquare(np.bincount(d.astype(int))[1:]).pvalue > 1e-3


def test_a_regnet_slope_of_zero_is_allowed(tmp_path):
    # PAPER.md section 3 allows wa >= 0: every block then has width w0, which is one stage
    f = tmp_path / "flat.yaml"
    f.write_text("name: Flat\nshort: flat\nextends: RegNetX\nnetwork: {stages: 1, strides: [2]}\n"
                 "parameters:\n  wa: {distribution: choice, values: [0]}\n")
    open_band = replace(REGIMES["imagenet"], flops=(0, math.inf))
    rows = sample(load_space(f), open_band, 3).rows
    assert all(r["wa"] == 0 and len(r["depths"]) == 1 for r in rows)
