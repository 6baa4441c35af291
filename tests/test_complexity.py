"""Analytic complexity against the published numbers (exact integers) and against built modules."""
import csv
import json

import pytest

from dsd.design.complexity import complexity
from dsd.design.regnet import compatible_widths, quantized_linear_widths, regnet_stages
from dsd.design.spec import make_spec
from tests.helpers import REPO, dsd

REFERENCE = list(csv.DictReader(open(REPO / "tests" / "data" / "regnet_complexity.csv")))


def ints(text):
    return [int(x) for x in text.split("-")] if text else []


@pytest.mark.parametrize("row", REFERENCE, ids=[r["name"] for r in REFERENCE])
def test_describe_reproduces_published_complexity(row):
    common = ["--stem", row["stem"], "--stem-width", row["stem_w"], "--block", row["block"],
              "--strides", row["strides"].replace("-", ","), "--resolution", row["resolution"],
              "--classes", row["classes"], "--se-ratio", row["se_ratio"], "--json"]
    if row["kind"] == "regnet":
        args = ["--depth", row["depth"], "--w0", row["w0"], "--wa", row["wa"], "--wm", row["wm"],
                "--group-width", row["group_w"], "--bottleneck-ratio", row["bot_ratio"]]
    else:
        args = ["--depths", row["stage_depths"].replace("-", ","), "--widths", row["stage_widths"].replace("-", ",")]
    out = json.loads(dsd("describe", *args, *common, check=True).stdout)
    assert out["depths"] == ints(row["stage_depths"])
    assert out["widths"] == ints(row["stage_widths"])
    if row["stage_group_widths"]:
        assert out["group_widths"] == ints(row["stage_group_widths"])
    assert (out["flops"], out["params"], out["acts"]) == (int(row["flops"]), int(row["params"]), int(row["acts"]))


def test_compatibility_step_rounds_half_to_even():
    # RegNetX-400MF: raw widths [24, 64, 152, 392] with g = 16; 392 / 16 = 24.5 rounds to 24
    w, g = compatible_widths([24, 64, 152, 392], [1, 1, 1, 1], [16, 16, 16, 16])
    assert w.tolist() == [32, 64, 160, 384] and g.tolist() == [16, 16, 16, 16]
    # g is capped at the bottleneck width: w = 80, b = 1, g = 120 -> g = 80
    w, g = compatible_widths([80, 240], [1, 1], [120, 120])
    assert w.tolist() == [80, 240] and g.tolist() == [80, 120]


def test_regnet_rule_example_from_the_paper():
    depths, widths = regnet_stages(13, 24, 36.44, 2.49)
    assert (depths, widths) == ([1, 1, 4, 7], [24, 56, 152, 368])
    assert quantized_linear_widths(13, 24, 36.44, 2.49).tolist()[:3] == [24, 56, 152]


def test_counts_are_exact_python_ints_for_large_models():
    spec = make_spec([2, 5, 15, 1], [80, 240, 720, 1920], [1] * 4, [120] * 4, [2] * 4)
    counts = complexity(spec)
    assert counts == {"flops": 7995133416, "params": 39572648, "acts": 14059688}
    assert all(type(v) is int for v in counts.values())


@pytest.mark.parametrize("stem", ["simple", "cifar", "resnet"])
@pytest.mark.parametrize("block", ["X", "Y", "R", "V"])
def test_every_stem_and_block_is_counted(stem, block):
    spec = make_spec([1, 2], [16, 48], [1, 2], [8, 8], [1, 2], stem=stem, block=block,
                     se_ratio=0.25 if block == "Y" else 0, resolution=32, num_classes=10)
    counts = complexity(spec)
    assert counts["flops"] > 0 and counts["params"] > 0 and counts["acts"] > 0
