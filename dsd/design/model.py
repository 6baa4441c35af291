"""ModelSpec -> torch nn.Module, built as docs/method.md section 1 describes (mirrors dsd.design.complexity).

torch is imported here only; the sampling commands never import this module.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from dsd.design.spec import ModelSpec


ACTIVATION_MODULES = {"relu": nn.ReLU, "silu": nn.SiLU}  # spec.activation -> the module in every ReLU place


def conv_bn(c_in, c_out, k, stride=1, groups=1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out, eps=1e-5, momentum=0.1)]


class Stem(nn.Sequential):
    """simple: 3x3/2; cifar: 3x3/1; resnet: 7x7/2 then 3x3/2 max-pool; each conv followed by BN and the
    activation (ReLU by default)."""

    def __init__(self, kind: str, c_in: int, w: int, act=nn.ReLU):
        k, stride = {"simple": (3, 2), "cifar": (3, 1), "resnet": (7, 2)}[kind]
        layers = conv_bn(c_in, w, k, stride) + [act(inplace=True)]
        if kind == "resnet":
            layers.append(nn.MaxPool2d(3, 2, 1))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, w: int, w_se: int, act=nn.ReLU):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Conv2d(w, w_se, 1, bias=True), act(inplace=True),
                                nn.Conv2d(w_se, w, 1, bias=True), nn.Sigmoid())

    def forward(self, x):
        return x * self.fc(self.pool(x))


class Block(nn.Module):
    """X / Y (bottleneck with group conv, Y adds SE), R (residual basic) or V (vanilla) block; act is
    the activation class (nn.ReLU, or nn.SiLU for Swish)."""

    def __init__(self, kind: str, w_in: int, w_out: int, stride: int, b: float, g: int, se_ratio: float,
                 act=nn.ReLU):
        super().__init__()
        if kind in ("X", "Y"):
            w_b = round(w_out / b)
            layers = conv_bn(w_in, w_b, 1) + [act(inplace=True)]
            layers += conv_bn(w_b, w_b, 3, stride, groups=w_b // g) + [act(inplace=True)]
            if se_ratio:
                layers.append(SqueezeExcite(w_b, round(se_ratio * w_in), act))
            layers += conv_bn(w_b, w_out, 1)
        else:
            layers = conv_bn(w_in, w_out, 3, stride) + [act(inplace=True)] + conv_bn(w_out, w_out, 3)
        self.f = nn.Sequential(*layers)
        self.residual = kind != "V"
        needs_proj = self.residual and (w_in != w_out or stride != 1)
        self.proj = nn.Sequential(*conv_bn(w_in, w_out, 1, stride)) if needs_proj else None
        self.act = act(inplace=True)

    def forward(self, x):
        y = self.f(x)
        if self.residual:
            y = y + (self.proj(x) if self.proj is not None else x)
        return self.act(y)


class Net(nn.Module):
    """Stem, stages of blocks, head (global average pool + FC)."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        act = ACTIVATION_MODULES[spec.activation]
        self.stem = Stem(spec.stem, spec.in_channels, spec.stem_width, act)
        stages, w_in = [], spec.stem_width
        for d, w, b, g, s in zip(spec.depths, spec.widths, spec.bottleneck_ratios, spec.group_widths,
                                 spec.strides):
            blocks = [Block(spec.block, w_in if i == 0 else w, w, s if i == 0 else 1, b, g, spec.se_ratio, act)
                      for i in range(d)]
            stages.append(nn.Sequential(*blocks))
            w_in = w
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w_in, spec.num_classes, bias=True)
        self.apply(init_weights)

    def forward(self, x):
        x = self.pool(self.stages(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


def init_weights(m: nn.Module) -> None:
    """Conv ~ N(0, sqrt(2 / fan_out)), BN gamma 1 beta 0, FC ~ N(0, 0.01) with zero bias."""
    if isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
        m.weight.data.normal_(mean=0.0, std=math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            m.bias.data.zero_()
    elif isinstance(m, nn.BatchNorm2d):
        m.weight.data.fill_(1.0)
        m.bias.data.zero_()
    elif isinstance(m, nn.Linear):
        m.weight.data.normal_(mean=0.0, std=0.01)
        m.bias.data.zero_()


def zero_init_residual(model: nn.Module) -> list[str]:
    """Set the gamma of the last BN of every residual branch (X, Y and R blocks) to 0, so that each such
    block starts as its shortcut and a deep network starts shallow (docs/method.md section 4.1).
    Returns the names of the parameters set to 0."""
    names = []
    for name, block in model.named_modules():
        if isinstance(block, Block) and block.residual:
            block.f[-1].weight.data.zero_()
            names.append(f"{name}.f.{len(block.f) - 1}.weight")
    return names


def build_model(spec: ModelSpec, zero_init: bool = False) -> nn.Module:
    """A fresh, initialised torch module for the spec (seed torch before calling for reproducibility);
    zero_init: residual branches start at 0 (zero_init_residual)."""
    model = Net(spec)
    if zero_init:
        zero_init_residual(model)
    return model
