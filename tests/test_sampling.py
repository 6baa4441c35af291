"""Sampling: constraints, reproducibility, prefix stability, uniqueness, declared distributions."""
import itertools
import math
import os
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


def test_the_rule_and_its_stages_equal_their_formulas():
    """quantized_linear_widths looks powers up per exponent and stage_runs finds runs from their starts:
    both must give what the formulas of docs/method.md section 3.1 give, element by element."""
    from dsd.design.regnet import quantized_linear_widths, stage_runs

    rng = np.random.default_rng(5)
    for _ in range(50):
        n, depth = int(rng.integers(1, 200)), int(rng.integers(1, 80))
        w0 = 8.0 * rng.integers(1, 33, (n, 1))
        wa = np.where(rng.random((n, 1)) < 0.1, 0.0, np.exp(rng.uniform(-3, np.log(256), (n, 1))))
        wm = np.exp(rng.uniform(np.log(1.05), np.log(3), (n, 1)))
        s = np.round(np.log((w0 + wa * np.arange(depth)) / w0) / np.log(wm))
        widths = (np.round(w0 * np.power(wm, s) / 8) * 8).astype(np.int64)
        assert np.array_equal(quantized_linear_widths(depth, w0, wa, wm), widths)
        d = rng.integers(0, depth + 1, n)
        for stages in (1, 4):
            depths, stage_widths, runs = stage_runs(widths, d, stages)
            for row, w in enumerate(widths):
                values = [int(v) for v in w[:d[row]]]
                lengths = [len(list(g)) for _, g in itertools.groupby(values)]
                firsts = [k for k, _ in itertools.groupby(values)]
                assert runs[row] == len(lengths)
                assert depths[row].tolist() == (lengths + [0] * stages)[:stages]
                assert stage_widths[row].tolist() == (firsts + [0] * stages)[:stages]


def one_model_at_a_time(space, regime, n: int, seed: int) -> tuple[list, int, int]:
    """The sampling rule of docs/method.md section 3 as a plain loop: model i takes batches of 256, 512,
    ... candidates from its stream until one meets the constraints and is not a duplicate."""
    from dsd.design.sampler import FIRST_BATCH, MAX_BATCH, Sampler, draw, training_values
    from dsd.design.spec import spec_to_row

    def draw_raw(space, rng, batch: int) -> dict:  # one candidate batch of one stream, parameter by parameter
        def shape(p):
            return (batch,) if space.rule is not None else (batch, space.stages) if p.draws_per_stage else (batch, 1)
        return {p.name: draw(p, rng, shape(p)) for p in space.params if p.same_as is None}

    sampler, rows, seen, draws, dups = Sampler(space, regime), [], set(), 0, 0
    for i in range(n):
        rng, batch, found = np.random.default_rng([seed, i]), FIRST_BATCH, None
        while found is None:
            v, in_bands, stats = sampler.evaluate(draw_raw(space, rng, batch))
            used = batch
            for j in np.flatnonzero(in_bands & sampler.within_limits(stats)):
                spec, counts = sampler.spec(v, stats, j)
                if spec.key() in seen:
                    dups += 1
                    continue
                seen.add(spec.key())
                found = {**spec_to_row(spec, i, space.name, seed, counts), **training_values(space, seed, i)}
                used = j + 1
                break
            draws += int(used)
            batch = min(2 * batch, MAX_BATCH)
        rows.append(found)
    return rows, draws, dups


@pytest.mark.parametrize("name, regime", [("AnyNetXA", "imagenet"), ("AnyNetXE", "fashion"), ("RegNetX", "cifar"),
                                          ("RegNetX_C", "fashion"), ("RegNetX_lrwd", "fashion")])
def test_drawing_the_models_together_gives_the_models_of_one_at_a_time(name, regime):
    """sample draws the batches of many models at once; the models, candidates drawn and duplicates
    must be those of sampling one model after the other."""
    from dsd.design.sampler import regime_for

    space = load_space(name)
    rg = regime_for(space, REGIMES[regime])
    got = sample(space, rg, 60, seed=9)
    assert (got.rows, got.draws, got.duplicates) == one_model_at_a_time(space, rg, 60, 9)


def test_duplicates_are_passed_over_as_one_model_at_a_time_does(tmp_path):
    f = tmp_path / "small.yaml"  # 2 * 3 * 4 = 24 architectures
    f.write_text("name: Small\nextends: AnyNetXA\nparameters:\n"
                 "  depth: {per_stage: true, shared: true, distribution: choice, values: [1, 2]}\n"
                 "  width: {per_stage: true, shared: true, distribution: choice, values: [32, 64, 128, 256]}\n"
                 "  bottleneck_ratio: {per_stage: true, shared: true, distribution: choice, values: [1, 2, 4]}\n"
                 "  group_width: {per_stage: true, shared: true, distribution: choice, values: [8]}\n")
    space, open_band = load_space(f), replace(REGIMES["imagenet"], flops=(0, math.inf))
    got = sample(space, open_band, 20, seed=2)
    assert got.duplicates > 0
    assert (got.rows, got.draws, got.duplicates) == one_model_at_a_time(space, open_band, 20, 2)


def test_models_do_not_depend_on_the_cpus_vector_instructions():
    """numpy's AVX-512 exp differs in the last bit from the C library's (which numpy uses without
    AVX-512) for about 1 value in 20: the models, wa, wm and sampled lr / wd included, must be those
    of a CPU without AVX-512."""
    import subprocess
    import sys

    from numpy._core._multiarray_umath import __cpu_features__

    if not __cpu_features__.get("AVX512F"):
        pytest.skip("this CPU has no AVX-512: numpy takes the same path with or without it")
    code = ("from dsd.design.sampler import sample, regime_for\nfrom dsd.design.spaces import load_space\n"
            "from dsd.design.regimes import REGIMES\n"
            "for name in ('RegNetX', 'AnyNetXA', 'spaces/examples/RegNetX_lrwd.yaml'):\n"
            "    space = load_space(name)\n"
            "    print(sample(space, regime_for(space, REGIMES['cifar']), 60, seed=3).rows)\n")
    avx512 = " ".join(f for f, on in __cpu_features__.items() if on and (f.startswith("AVX512") or f == "X86_V4"))
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": avx512}
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=e).stdout
            for e in (os.environ, env)]
    assert "sampled_lr" in runs[0] and runs[0] == runs[1]
