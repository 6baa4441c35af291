"""Analytic complexity (flops as multiply-adds, params, acts) by the counting rules of docs/method.md section 2.

One small function per layer and per block, mirroring `dsd.design.model`. Every function works elementwise on
numpy int64 arrays, so the sampler counts a whole batch of candidates at once, and `complexity(spec)`
counts one model through the very same code. Nothing here builds a torch module.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsd.design.spec import ModelSpec


@dataclass(frozen=True)
class Complexity:
    flops: object
    params: object
    acts: object

    def __add__(self, other: "Complexity") -> "Complexity":
        return Complexity(self.flops + other.flops, self.params + other.params, self.acts + other.acts)

    def __mul__(self, k) -> "Complexity":
        return Complexity(self.flops * k, self.params * k, self.acts * k)

    def masked(self, mask) -> "Complexity":
        """Zero wherever mask is false (an optional layer, decided per candidate)."""
        return self * np.asarray(mask, dtype=np.int64)


def out_size(h, stride):
    """Spatial side after a conv or pool with 'same' padding."""
    return (h - 1) // stride + 1


def conv(h, c_in, c_out, k, stride=1, groups=1, bias=False):
    """(h_out, Complexity) of a k x k conv on an h x h input."""
    h = out_size(h, stride)
    hw = h * h
    flops = k * k * c_in * c_out * hw // groups + (c_out * hw if bias else 0)
    params = k * k * c_in * c_out // groups + (c_out if bias else 0)
    return h, Complexity(flops, params, c_out * hw)


def bn(c):
    return Complexity(0, 2 * c, 0)


def fc(c_in, c_out):
    return Complexity(c_in * c_out + c_out, c_in * c_out + c_out, c_out)


def conv_bn(h, c_in, c_out, k, stride=1, groups=1):
    h, cx = conv(h, c_in, c_out, k, stride, groups)
    return h, cx + bn(c_out)


def stem(kind, h, c_in, w):
    """simple: 3x3/2 conv; cifar: 3x3/1 conv; resnet: 7x7/2 conv then a 3x3/2 max-pool (acts counted)."""
    if kind == "simple":
        return conv_bn(h, c_in, w, 3, 2)
    if kind == "cifar":
        return conv_bn(h, c_in, w, 3, 1)
    if kind == "resnet":
        h, cx = conv_bn(h, c_in, w, 7, 2)
        h = out_size(h, 2)
        return h, cx + Complexity(0, 0, w * h * h)
    raise ValueError(f"unknown stem {kind!r}")


def shortcut(h, w_in, w_out, stride):
    """The projection shortcut (1x1 conv + BN) where it exists: w_in != w_out or stride != 1."""
    _, cx = conv_bn(h, w_in, w_out, 1, stride)
    return cx.masked((w_in != w_out) | (stride != 1))


def squeeze_excite(w_b, w_se):
    """SE at 1x1: two 1x1 convs with bias (w_b -> w_se -> w_b)."""
    _, a = conv(1, w_b, w_se, 1, bias=True)
    _, b = conv(1, w_se, w_b, 1, bias=True)
    return a + b


def bottleneck_block(h, w_in, w_out, stride, b, g, se_ratio=0.0):
    """X block (Y block when se_ratio > 0): 1x1, 3x3 group conv, [SE], 1x1, plus shortcut."""
    w_b = np.rint(w_out / b).astype(np.int64)
    _, cx = conv_bn(h, w_in, w_b, 1)
    h_out, c3 = conv_bn(h, w_b, w_b, 3, stride, groups=w_b // g)
    cx = cx + c3
    if se_ratio:
        cx = cx + squeeze_excite(w_b, np.rint(se_ratio * w_in).astype(np.int64))
    _, c1 = conv_bn(h_out, w_b, w_out, 1)
    return h_out, cx + c1 + shortcut(h, w_in, w_out, stride)


def basic_block(h, w_in, w_out, stride, residual=True):
    """R block (residual basic) or, without the shortcut, V block (vanilla)."""
    h_out, cx = conv_bn(h, w_in, w_out, 3, stride)
    _, c2 = conv_bn(h_out, w_out, w_out, 3)
    cx = cx + c2
    return h_out, (cx + shortcut(h, w_in, w_out, stride)) if residual else cx


def block(kind, h, w_in, w_out, stride, b, g, se_ratio):
    if kind in ("X", "Y"):
        return bottleneck_block(h, w_in, w_out, stride, b, g, se_ratio)
    if kind in ("R", "V"):
        return basic_block(h, w_in, w_out, stride, residual=kind == "R")
    raise ValueError(f"unknown block {kind!r}")


def stage(kind, h, w_in, w_out, d, stride, b, g, se_ratio):
    """d blocks: the first with the stage's stride and input width, d - 1 identical ones after it."""
    h, first = block(kind, h, w_in, w_out, stride, b, g, se_ratio)
    _, rest = block(kind, h, w_out, w_out, 1, b, g, se_ratio)
    return h, first + rest * (d - 1)


def network(*, stem_kind, stem_width, block_kind, se_ratio, in_channels, num_classes, resolution,
            depths, widths, bottleneck_ratios, group_widths, strides) -> Complexity:
    """Whole-network complexity; per-stage entries may be scalars or equal-length int64 arrays."""
    h, cx = stem(stem_kind, resolution, in_channels, stem_width)
    w_in = stem_width
    for d, w, b, g, s in zip(depths, widths, bottleneck_ratios, group_widths, strides):
        h, cs = stage(block_kind, h, w_in, w, d, s, b, g, se_ratio)
        cx, w_in = cx + cs, w
    return cx + fc(w_in, num_classes)


def complexity(spec: ModelSpec) -> dict[str, int]:
    """flops, params and acts of one model, as Python ints."""
    arr = [np.asarray(v, dtype=np.int64) for v in (spec.depths, spec.widths, spec.group_widths, spec.strides)]
    cx = network(stem_kind=spec.stem, stem_width=spec.stem_width, block_kind=spec.block,
                 se_ratio=spec.se_ratio, in_channels=spec.in_channels, num_classes=spec.num_classes,
                 resolution=spec.resolution, depths=arr[0], widths=arr[1],
                 bottleneck_ratios=np.asarray(spec.bottleneck_ratios, dtype=float),
                 group_widths=arr[2], strides=arr[3])
    return {"flops": int(cx.flops), "params": int(cx.params), "acts": int(cx.acts)}
