"""Built torch modules match the analytic counts; our RegNets match torchvision's parameter counts."""
import numpy as np
import pytest
import torch

from dsd.design.complexity import complexity
from dsd.design.model import build_model
from dsd.design.regimes import REGIMES
from dsd.design.regnet import regnet_stages
from dsd.design.sampler import sample
from dsd.design.spaces import builtin_names, load_space
from dsd.design.spec import make_spec, spec_from_row


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_200_random_models_params_and_forward_shapes():
    """Across all built-in spaces and the three regimes: analytic params == built params, and the
    forward pass gives (batch, classes) at the regime's resolution and channels."""
    with torch.no_grad():
        checked = check_sampled_models()
    assert checked >= 200


def check_sampled_models() -> int:
    checked = 0
    for name in builtin_names():
        space = load_space(name)
        for regime in REGIMES.values():
            rows = sample(space, regime, 10, seed=7).rows
            for k, row in enumerate(rows):
                spec = spec_from_row(row)
                model = build_model(spec).eval()
                assert n_params(model) == row["params"] == complexity(spec)["params"], (name, regime.name, row)
                if k < 2:  # forward passes are the slow part: two per space and regime
                    x = torch.zeros(2, regime.in_channels, regime.resolution, regime.resolution)
                    assert model(x).shape == (2, regime.num_classes)
                checked += 1
    return checked


def test_forward_at_imagenet_resolution():
    spec = make_spec(*regnet_stages(13, 24, 36.44, 2.49), [1] * 4, [8] * 4, [2] * 4)
    with torch.no_grad():
        assert build_model(spec)(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)


def test_init_follows_the_paper():
    torch.manual_seed(0)
    spec = make_spec([1, 1], [64, 128], [1, 1], [8, 8], [2, 2], num_classes=10)
    model = build_model(spec)
    conv = model.stem[0]
    std = float(conv.weight.detach().std())
    assert abs(std - np.sqrt(2.0 / (3 * 3 * conv.out_channels))) < 0.03
    assert float(model.fc.weight.detach().std()) == pytest.approx(0.01, rel=0.2)
    assert float(model.fc.bias.detach().abs().sum()) == 0.0


# (torchvision builder, d, w0, wa, wm, g, se ratio): the published RegNet parameters
TORCHVISION = [
    ("regnet_x_800mf", 16, 56, 35.73, 2.28, 16, 0),
    ("regnet_x_1_6gf", 18, 80, 34.01, 2.25, 24, 0),
    ("regnet_x_3_2gf", 25, 88, 26.31, 2.25, 48, 0),
    ("regnet_x_8gf", 23, 80, 49.56, 2.88, 120, 0),
    ("regnet_x_16gf", 22, 216, 55.59, 2.1, 128, 0),
    ("regnet_x_32gf", 23, 320, 69.86, 2.0, 168, 0),
    ("regnet_y_400mf", 16, 48, 27.89, 2.09, 8, 0.25),
    ("regnet_y_1_6gf", 27, 48, 20.71, 2.65, 24, 0.25),
    ("regnet_y_3_2gf", 21, 80, 42.63, 2.66, 24, 0.25),
    ("regnet_y_16gf", 18, 200, 106.23, 2.48, 112, 0.25),
    ("regnet_y_32gf", 20, 232, 115.89, 2.53, 232, 0.25),
]


@pytest.mark.parametrize("builder,d,w0,wa,wm,g,se", TORCHVISION, ids=[t[0] for t in TORCHVISION])
def test_torchvision_regnets_have_our_parameter_counts(builder, d, w0, wa, wm, g, se):
    import torchvision

    depths, widths = regnet_stages(d, w0, wa, wm)
    spec = make_spec(depths, widths, [1] * 4, [g] * 4, [2] * 4, block="Y" if se else "X", se_ratio=se)
    theirs = n_params(getattr(torchvision.models, builder)())
    assert complexity(spec)["params"] == theirs


@pytest.mark.parametrize("builder,d,w0,wa,wm,g,se,ours,theirs", [
    ("regnet_x_400mf", 22, 24, 24.48, 2.54, 16, 0, [32, 64, 160, 384], [32, 64, 160, 400]),
    ("regnet_y_800mf", 14, 56, 38.84, 2.4, 16, 0.25, [64, 128, 320, 768], [64, 144, 320, 784]),
    ("regnet_y_8gf", 17, 192, 76.82, 2.19, 56, 0.25, [168, 448, 896, 2016], [224, 448, 896, 2016]),
])
def test_torchvision_rounds_these_three_differently(builder, d, w0, wa, wm, g, se, ours, theirs):
    """What the README says about x_400mf, y_800mf and y_8gf: only the compatibility rounding differs."""
    import torchvision

    depths, widths = regnet_stages(d, w0, wa, wm)
    spec = make_spec(depths, widths, [1] * 4, [g] * 4, [2] * 4, block="Y" if se else "X", se_ratio=se)
    model = getattr(torchvision.models, builder)()
    tv_widths = [stage[0].f.c[0].out_channels for stage in model.trunk_output]
    assert list(spec.widths) == ours and tv_widths == theirs
    # with torchvision's widths our count is exact again
    same = make_spec(depths, theirs, [1] * 4, [g] * 4, [2] * 4, block=spec.block, se_ratio=se)
    assert complexity(same)["params"] == n_params(model)
