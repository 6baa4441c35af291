"""The paper's variants of its spaces: fixed and tied parameters, SiLU, and the example space files."""
import hashlib
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from dsd.design.complexity import complexity
from dsd.design.model import build_model
from dsd.design.regimes import REGIMES
from dsd.design.regnet import compatible_widths
from dsd.design.sampler import regime_for, sample
from dsd.design.spaces import builtin_names, example_names, load_space
from dsd.design.spec import spec_from_row
from dsd.errors import BadInput
from dsd.runfolder import MODEL_SCHEMA, MODELS_FILE, RUN_FILE, read_models
from tests.helpers import REPO, dsd

# sha1 of (key, w0, wa, wm, flops, params, acts) of the first 5 models (seed 0) in every regime, recorded
# with the code before fixed / tied parameters and activations existed: those must not move any draw
BEFORE = {"AnyNetXA": "fd2efcc53492", "AnyNetXB": "bc0407cd410b", "AnyNetXC": "c3490d3a4d95",
          "AnyNetXD": "4dd8f74a9094", "AnyNetXE": "f12b7ef14198", "RegNetX": "19aa114d47aa",
          "RegNetY": "1f67d5fe8ef0", "regnet_se_cifar": "19e3ce93b828"}


def sample_in(name, regime, n, seed=0):
    space = load_space(name)
    return sample(space, regime_for(space, REGIMES[regime]), n, seed=seed).rows


def first_models_digest(name):
    space = load_space(name)
    rows = [r for rg in ([space.regime] if space.regime else REGIMES) for r in sample_in(name, rg, 5)]
    text = repr([(r["key"], r["w0"], r["wa"], r["wm"], r["flops"], r["params"], r["acts"]) for r in rows])
    return hashlib.sha1(text.encode()).hexdigest()[:12]


@pytest.mark.parametrize("name", list(BEFORE))
def test_existing_spaces_sample_the_same_models_as_before(name):
    assert first_models_digest(name) == BEFORE[name]


def test_examples_load_by_name_short_name_and_path_and_stay_out_of_the_builtin_list():
    assert builtin_names() == ["AnyNetXA", "AnyNetXB", "AnyNetXC", "AnyNetXD", "AnyNetXE", "RegNetX", "RegNetY"]
    assert {"RegNetX_wm2", "RegNetX_w0wa", "RegNetX_silu", "AnyNetRA", "regnet_se_cifar"} <= set(example_names())
    by_path = load_space(REPO / "spaces" / "examples" / "RegNetX_wm2.yaml")
    assert load_space("regnetx_WM2") == load_space("regnetx_wm2") == by_path  # file name and short name
    assert load_space("xa").name == "AnyNetXA"  # built-in short names are unchanged


def block_widths_oracle(depth, w0, wa, wm):
    """The quantized linear rule written out again (docs/method.md section 3.1), independent of regnet.py."""
    u = w0 + wa * np.arange(depth)
    s = np.round(np.log(u / w0) / np.log(wm))
    return np.round(w0 * wm ** s / 8) * 8


def check_rule(row):
    """The row's stages, block by block, are the rule's widths after the compatibility step."""
    raw = block_widths_oracle(row["depth"], row["w0"], row["wa"], row["wm"])
    b = np.repeat(row["bottleneck_ratios"], row["depths"])
    g = np.full(len(raw), max(row["group_widths"]))
    expected, _ = compatible_widths(raw.astype(np.int64), b, g)
    assert np.repeat(row["widths"], row["depths"]).tolist() == expected.tolist(), row


@pytest.mark.parametrize("regime", ["fashion", "imagenet"])
def test_wm2_models_follow_the_rule_with_wm_2(regime):
    rows = sample_in("RegNetX_wm2", regime, 40, seed=1)
    for r in rows:
        assert r["wm"] == 2.0 and len(r["depths"]) == 4
        check_rule(r)
        # w0 is a multiple of 8, so the stage widths before the compatibility step are w0 times powers of 2
        ratios = np.log2(np.unique(block_widths_oracle(r["depth"], r["w0"], r["wa"], 2.0)) / r["w0"])
        assert np.array_equal(ratios, np.round(ratios)) and ratios[0] == 0, r
    assert len({r["w0"] for r in rows}) > 2 and len({r["wa"] for r in rows}) > 20  # the rest still varies


@pytest.mark.parametrize("regime", ["fashion", "imagenet"])
def test_w0wa_models_have_u_j_equal_to_wa_times_j_plus_1(regime):
    rows = sample_in("RegNetX_w0wa", regime, 40, seed=1)
    for r in rows:
        assert r["wa"] == r["w0"] and r["w0"] % 8 == 0
        check_rule(r)
    assert len({r["w0"] for r in rows}) > 2 and len({r["wm"] for r in rows}) > 20


def test_a_tie_can_be_undone_by_an_extending_file(tmp_path):
    f = tmp_path / "untied.yaml"
    f.write_text("name: Untied\nextends: RegNetX_w0wa\nparameters:\n  wa: {same_as: null}\n")
    assert load_space(f).free_dims() == load_space("RegNetX").free_dims() == 6
    assert load_space("RegNetX_w0wa").free_dims() == load_space("RegNetX_wm2").free_dims() == 5
    rows = sample(load_space(f), REGIMES["fashion"], 10).rows
    assert sum(r["wa"] != r["w0"] for r in rows) >= 9


def test_a_tied_space_is_prefix_stable_and_reproducible():
    a = sample_in("RegNetX_w0wa", "fashion", 20, seed=5)
    assert sample_in("RegNetX_w0wa", "fashion", 40, seed=5)[:20] == a
    assert sample_in("RegNetX_w0wa", "fashion", 20, seed=6) != a


def module_tree(spec):
    return [(name, type(m)) for name, m in build_model(spec).named_modules()]


@pytest.mark.parametrize("space", ["RegNetY", "AnyNetRA", "AnyNetVA"])  # X blocks with SE, R and V blocks
def test_silu_sits_wherever_relu_was_and_changes_no_count(space):
    for row in sample_in(space, "fashion", 2):
        relu = spec_from_row(row)
        silu = replace(relu, activation="silu")
        plain, swish = module_tree(relu), module_tree(silu)
        assert [name for name, _ in plain] == [name for name, _ in swish]
        assert [nn.SiLU if kind is nn.ReLU else kind for _, kind in plain] == [kind for _, kind in swish]
        assert any(kind is nn.ReLU for _, kind in plain)
        assert complexity(silu) == complexity(relu)
        assert relu.key() == row["key"] != silu.key()  # ReLU keys are those of before; SiLU is another network


def test_the_silu_space_samples_the_relu_spaces_models_with_silu():
    plain, swish = sample_in("RegNetX", "fashion", 10), sample_in("RegNetX_silu", "fashion", 10)
    same = ("depths", "widths", "bottleneck_ratios", "group_widths", "w0", "wa", "wm", "flops", "params", "acts")
    assert [{k: r[k] for k in same} for r in plain] == [{k: r[k] for k in same} for r in swish]
    assert {r["activation"] for r in plain} == {"relu"} and {r["activation"] for r in swish} == {"silu"}
    assert all(spec_from_row(r).activation == "silu" for r in swish)


def test_models_files_written_before_the_activation_column_read_as_relu(tmp_path):
    row = sample_in("RegNetX", "fashion", 1)[0]
    old = pa.schema([f for f in MODEL_SCHEMA if f.name != "activation"])
    pq.write_table(pa.Table.from_pylist([row], schema=old), tmp_path / MODELS_FILE)
    (tmp_path / RUN_FILE).write_text("{}\n")
    read = read_models(tmp_path).to_pylist()[0]
    assert read["activation"] is None and spec_from_row(read) == spec_from_row(row)
    assert spec_from_row(read).activation == "relu" and spec_from_row(read).key() == row["key"]


def basic_blocks(block):
    """R and V blocks have no bottleneck and no groups: their spaces fix b and g at 1."""
    return lambda r: r["block"] == block and set(r["bottleneck_ratios"] + r["group_widths"]) == {1}


EXPECTED = {  # what each variant restricts, checked on every sampled model
    "RegNetX_wm2": lambda r: r["wm"] == 2,
    "RegNetX_w0wa": lambda r: r["wa"] == r["w0"],
    "RegNetX_inverted": lambda r: set(r["bottleneck_ratios"]) <= {0.25, 0.5},
    "RegNetX_depthwise": lambda r: set(r["group_widths"]) == {1},
    "RegNetX_depthwise_silu": lambda r: set(r["group_widths"]) == {1} and r["activation"] == "silu",
    "RegNetX_silu": lambda r: r["activation"] == "silu",
    "RegNetX_5stage": lambda r: len(r["depths"]) == 5,
    "AnyNetXA_5stage": lambda r: len(r["depths"]) == 5,
    "AnyNetXE_5stage": lambda r: len(r["depths"]) == 5 and r["depths"] == sorted(r["depths"]),
    **{f"{kind}{block}{suffix}": basic_blocks(block) for block in "RV"
       for kind, suffix in (("AnyNet", "A"), ("AnyNet", "E"), ("RegNet", ""))},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_variant_samples_20_models_that_build(name):
    space = load_space(name)
    assert space.description and "Reproduces the paper" in (REPO / "spaces" / "examples" / f"{name}.yaml").read_text()
    rows = sample_in(name, "fashion", 20)
    assert len({r["key"] for r in rows}) == 20
    with torch.no_grad():
        for k, row in enumerate(rows):
            assert EXPECTED[name](row), row
            spec = spec_from_row(row)
            model = build_model(spec).eval()
            assert sum(p.numel() for p in model.parameters()) == row["params"] == complexity(spec)["params"]
            if k == 0:
                assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


BAD = {
    "tie_unknown": ("extends: RegNetX\nparameters:\n  wa: {same_as: w9}\n",
                    "bad.yaml: parameter 'wa': same_as names no parameter of this space: 'w9'"),
    "tie_to_tie": ("extends: RegNetX\nparameters:\n  wa: {same_as: w0}\n  wm: {same_as: wa}\n",
                   "bad.yaml: parameter 'wm': same_as 'wa', which is tied itself"),
    "tie_to_itself": ("extends: RegNetX\nparameters:\n  wa: {same_as: wa}\n",
                      "bad.yaml: parameter 'wa': same_as 'wa', which is tied itself"),
    "tie_below_bound": ("extends: RegNetX\nparameters:\n  wm: {same_as: bottleneck_ratio}\n",
                        "bad.yaml: parameter 'wm': same_as 'bottleneck_ratio': its lowest value must be > 1, got 1"),
    "fixed_no_value": ("extends: RegNetX\nparameters:\n  wm: {distribution: fixed}\n",
                       "bad.yaml: parameter 'wm': fixed needs a number `value`, got None"),
    "fixed_not_number": ("extends: AnyNetXA\nparameters:\n  width: {distribution: fixed, value: wide}\n",
                         "bad.yaml: parameter 'width': fixed needs a number `value`, got 'wide'"),
    "fixed_below_bound": ("extends: AnyNetXA\nparameters:\n  group_width: {distribution: fixed, value: 0}\n",
                          "bad.yaml: parameter 'group_width': value must be >= 1, got 0"),
    "order_a_fixed_one": ("extends: AnyNetXD\nparameters:\n  width: {distribution: fixed, value: 64}\n",
                          "bad.yaml: non_decreasing: 'width' is not a per-stage, unshared, drawn parameter"),
    "activation": ("extends: RegNetX\nnetwork: {activation: gelu}\n",
                   "bad.yaml: network: activation must be one of relu, silu, got 'gelu'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_fixed_tied_or_activation_is_one_line_naming_file_and_key(tmp_path, case):
    text, expected = BAD[case]
    f = tmp_path / "bad.yaml"
    f.write_text("name: Bad\n" + text)
    with pytest.raises(BadInput) as e:
        load_space(f)
    assert expected in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_the_cli_refuses_a_bad_tie_and_writes_silu_models(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("name: Bad\n" + BAD["tie_unknown"][0])
    proc = dsd("sample", "--space", f, "--n", "2", "--out", tmp_path / "bad")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "'w9'" in proc.stderr
    dsd("sample", "--space", "RegNetX_silu", "--regime", "fashion", "--n", "3", "--out", tmp_path / "s", check=True)
    assert read_models(tmp_path / "s").column("activation").to_pylist() == ["silu"] * 3
