"""Limits relative to a model's own flops (the paper's RegNetX_C): syntax, sampling, errors."""
import math

import pytest

from dsd.design.complexity import complexity
from dsd.design.regimes import REGIMES, with_overrides
from dsd.design.sampler import regime_for, sample
from dsd.design.spaces import Limit, builtin_names, example_names, load_space
from dsd.design.spec import spec_from_row
from dsd.errors import BadInput
from tests.helpers import dsd

# (regime, flops band): the paper's 400MF at 224 px, a 1.6GF band of the same file, and CIFAR's band
REGIMES_TRIED = [("imagenet", "360M:400M"), ("imagenet", "1.44G:1.6G"), ("cifar", None)]


def regime(name, flops=None):
    return with_overrides(REGIMES[name], flops=flops)


def space_file(tmp_path, text, name="limits.yaml"):
    f = tmp_path / name
    f.write_text(text)
    return f


def meets_regnetx_c_limits(row):
    """The official sweep's limits, written out again: params <= 3M + 5.5M F, acts <= 6.5M sqrt(F)."""
    f = row["flops"] / 1e9
    return row["params"] <= 3e6 + 5.5e6 * f and row["acts"] <= 6.5e6 * math.sqrt(f)


@pytest.mark.parametrize("name,flops", REGIMES_TRIED)
def test_every_regnetx_c_model_meets_the_limits_at_its_own_flops(name, flops):
    space = load_space("RegNetX_C")
    rg = regime_for(space, regime(name, flops))
    rows = sample(space, rg, 100, seed=2).rows
    for r in rows:
        assert complexity(spec_from_row(r)) == {k: r[k] for k in ("flops", "params", "acts")}  # honest columns
        assert rg.flops[0] <= r["flops"] <= rg.flops[1]
        assert meets_regnetx_c_limits(r), r
        assert r["depth"] <= 40 and set(r["bottleneck_ratios"]) == {1.0} and r["wm"] >= 2, r
    assert len({r["depth"] for r in rows}) > 5 and len({r["wm"] for r in rows}) > 50  # the rest still varies


@pytest.mark.parametrize("name,flops", REGIMES_TRIED)
def test_the_limits_bind(tmp_path, name, flops):
    """Without its limits the same space gives models that break them: the limits are what keeps them out."""
    unlimited = load_space(space_file(tmp_path, "name: Unlimited\nextends: RegNetX_C\nlimits: null\n"))
    assert unlimited.limits == ()
    rows = sample(unlimited, regime(name, flops), 100, seed=2).rows
    assert sum(not meets_regnetx_c_limits(r) for r in rows) >= 5


def test_regnetx_c_is_regnetx_with_b_1_d_40_wm_2_and_two_limits():
    c, x = load_space("RegNetX_C"), load_space("RegNetX")
    assert load_space("regnetx_c") == c and c.short == "regnetx_c" and "RegNetX_C" in example_names()
    assert (c.param("bottleneck_ratio").distribution, c.param("bottleneck_ratio").value) == ("fixed", 1)
    assert (c.param("depth").low, c.param("depth").high) == (1, 40)
    assert (c.param("wm").low, c.param("wm").high) == (2, 3)
    assert c.limits == (Limit("params", "max", 3e6, 5.5e6, 1.0), Limit("acts", "max", 0.0, 6.5e6, 0.5))
    assert [p for p in c.params if p.name not in ("bottleneck_ratio", "depth", "wm")] == \
           [p for p in x.params if p.name not in ("bottleneck_ratio", "depth", "wm")]


def test_other_spaces_have_no_limits():
    assert all(load_space(n).limits == () for n in builtin_names() + example_names() if n != "RegNetX_C")


def test_limits_that_never_bind_leave_every_model_as_it_was(tmp_path):
    f = space_file(tmp_path, "name: Loose\nextends: RegNetX\n"
                             "limits: {params: {max: {const: 1T}}, acts: {min: {coef: 0}}}\n")
    for name in ("fashion", "imagenet"):
        loose, plain = (sample(load_space(s), REGIMES[name], 30).rows for s in (f, "RegNetX"))
        assert [r["key"] for r in loose] == [r["key"] for r in plain]


def test_a_min_bound_and_an_extending_file(tmp_path):
    f = space_file(tmp_path, "name: Heavy\nextends: RegNetX_C\n"
                             "limits:\n  params: {max: {coef: 9M}, min: {coef: 4.5M}}\n  acts: null\n")
    space = load_space(f)
    assert space.limits == (Limit("params", "max", 3e6, 9e6, 1.0), Limit("params", "min", 0.0, 4.5e6, 1.0))
    for r in sample(space, regime("imagenet", "360M:400M"), 50, seed=1).rows:
        assert 4.5e6 * r["flops"] / 1e9 <= r["params"] <= 3e6 + 9e6 * r["flops"] / 1e9, r


def test_regnetx_c_is_prefix_stable_and_reproducible():
    space, rg = load_space("RegNetX_C"), regime("imagenet", "360M:400M")
    a = sample(space, rg, 20, seed=4).rows
    assert sample(space, rg, 40, seed=4).rows[:20] == a
    assert sample(space, rg, 20, seed=5).rows != a


BAD_LIMITS = {
    "limits: [1]": "limits must be a mapping",
    "limits: {flops: {max: {const: 1G}}}": "limits: unknown key 'flops'",
    "limits: {params: 3M}": "limits: params must be a mapping of max / min",
    "limits: {params: {below: {const: 3M}}}": "limits: params: unknown key 'below'",
    "limits: {params: {max: {const: 3M, exponent: 2}}}": "limits: params: max: unknown key 'exponent'",
    "limits: {params: {max: {power: 2, exponent: 2}}}": "limits: params: max: unknown key 'exponent'",
    "limits: {params: {max: {}}}": "limits: params: max must be a mapping of const and / or coef",
    "limits: {params: {max: {power: 2}}}": "limits: params: max must be a mapping of const and / or coef",
    "limits: {params: {max: 3M}}": "limits: params: max must be a mapping of const and / or coef",
    "limits: {acts: {max: {coef: lots}}}": "limits: acts: max: coef: 'lots' is not a quantity",
    "limits: {acts: {max: {coef: [1]}}}": "limits: acts: max: coef must be a number >= 0",
    "limits: {acts: {max: {coef: true}}}": "limits: acts: max: coef must be a number >= 0",
    "limits: {acts: {max: {const: -1}}}": "limits: acts: max: const must be a number >= 0 (or a quantity such as 5.5M), "
                                          "got -1",
    "limits: {acts: {max: {coef: 1M, power: -0.5}}}": "limits: acts: max: power must be a number >= 0",
    "limits: {acts: {max: {coef: .nan}}}": "limits: acts: max: coef must be a number >= 0",
    "limits: {acts: {max: {coef: .inf}}}": "limits: acts: max: coef must be a number >= 0",
}


@pytest.mark.parametrize("text", list(BAD_LIMITS))
def test_bad_limits_name_the_file_and_key(tmp_path, text):
    f = space_file(tmp_path, f"name: Bad\nextends: RegNetX\n{text}\n", "bad.yaml")  # nothing to merge with
    with pytest.raises(BadInput) as e:
        load_space(f)
    message = str(e.value)
    assert f"bad.yaml: {BAD_LIMITS[text]}" in message and "\n" not in message, message


def test_limits_no_candidate_meets_end_with_a_message_naming_them(tmp_path):
    f = space_file(tmp_path, "name: Tight\nextends: RegNetX_C\nlimits: {params: {max: {const: 1, coef: 0}}}\n")
    with pytest.raises(BadInput, match=r"found only 0 of 2 models: .* failed the limits of space Tight "
                                       r"\(params <= 1 \+ 0 \* F\^1, acts <= 0 \+ 6\.5e\+06 \* F\^0\.5;"):
        sample(load_space(f), REGIMES["fashion"], 2, max_draws_per_model=5000)
    with pytest.raises(BadInput, match="widen the complexity band or the space") as e:  # the band, not the limits
        sample(load_space("RegNetX_C"), regime("fashion", "1:2"), 2, max_draws_per_model=5000)
    assert "limits" not in str(e.value)


def test_an_unsatisfiable_limit_exits_2_saying_why(tmp_path):
    f = space_file(tmp_path, "name: Tight\nextends: RegNetX_C\nlimits: {params: {max: {const: 1, coef: 0}}}\n")
    proc = dsd("sample", "--space", f, "--n", "2", "--regime", "fashion", "--out", tmp_path / "out")
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "found only 0 of 2 models" in proc.stderr and "params <= 1 + 0 * F^1" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()
