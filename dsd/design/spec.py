"""ModelSpec: the complete, compatibility-adjusted description of one network, and `Network`, its fixed
part under a regime.

A spec is the hand-off point of the pipeline: the sampler and `dsd describe` make specs, `complexity`
counts them, `model` builds torch modules from them, and the run folder stores them as rows of
models.parquet (spec_to_row and spec_from_row, the one translation each way).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from dsd.design.regimes import Regime
from dsd.design.regnet import compatible_widths
from dsd.errors import BadInput

STEMS = ("simple", "cifar", "resnet")
BLOCKS = ("X", "Y", "R", "V")
ACTIVATIONS = ("relu", "silu")  # silu: Swish, x * sigmoid(x), in every place of the ReLU


@dataclass(frozen=True)
class ModelSpec:
    """Stem, per-stage body and head of one network, widths already after the compatibility step."""

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    bottleneck_ratios: tuple[float, ...]
    group_widths: tuple[int, ...]
    strides: tuple[int, ...]
    stem: str = "simple"
    stem_width: int = 32
    block: str = "X"
    se_ratio: float = 0.0
    in_channels: int = 3
    num_classes: int = 1000
    resolution: int = 224
    regnet: dict | None = field(default=None, compare=False)  # w0, wa, wm when made by the RegNet rule
    activation: str = "relu"

    @property
    def depth(self) -> int:
        return int(sum(self.depths))

    def key(self) -> str:
        """A stable hash of the architecture (what the built module depends on); the activation enters
        only when it is not ReLU, so the keys of ReLU networks stay those of files written before it."""
        fields = (self.stem, self.stem_width, self.block, self.se_ratio, self.depths, self.widths,
                  tuple(float(b) for b in self.bottleneck_ratios), self.group_widths, self.strides,
                  self.in_channels, self.num_classes)
        text = repr(fields if self.activation == "relu" else fields + (self.activation,))
        return hashlib.sha1(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Network:
    """The fixed (non-sampled) part of a model: stem, block, strides and the regime's input."""

    stem: str
    stem_width: int
    block: str
    se_ratio: float
    strides: tuple[int, ...]
    resolution: int
    in_channels: int
    num_classes: int
    activation: str = "relu"

    def fields(self) -> dict:
        """The keyword arguments of ModelSpec / make_spec that this network fixes."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def network_for(regime: Regime, stages: int, *, stem: str = "simple", strides=None, stem_width: int = 32,
                block: str = "X", se_ratio: float = 0.0, activation: str = "relu", own: bool = False) -> Network:
    """A network under a regime: the regime's input, and its stem and strides over the given ones
    (stage i takes the regime's i-th stride, else 2; docs/method.md section 3.2).

    own: the network was written for this regime (a space file naming it), so its stem and strides stay."""
    if not own:
        stem = regime.stem or stem
        strides = regime.strides_for(stages, strides)
    return Network(stem=stem, stem_width=int(stem_width), block=block, se_ratio=float(se_ratio),
                   strides=tuple(int(s) for s in strides), resolution=regime.resolution,
                   in_channels=regime.in_channels, num_classes=regime.num_classes, activation=activation)


def make_spec(depths, widths, bottleneck_ratios, group_widths, strides, *, stem="simple", stem_width=32,
              block="X", se_ratio=0.0, in_channels=3, num_classes=1000, resolution=224,
              regnet=None, activation="relu") -> ModelSpec:
    """Validate raw stage lists, apply the group-width compatibility step, and return the spec."""
    n = len(depths)
    lists = {"widths": widths, "bottleneck_ratios": bottleneck_ratios, "group_widths": group_widths,
             "strides": strides}
    for name, values in lists.items():
        if len(values) != n:
            raise BadInput(f"{name} has {len(values)} entries but depths has {n}")
    if n == 0:
        raise BadInput("a network needs at least one stage")
    if stem not in STEMS:
        raise BadInput(f"unknown stem {stem!r} (known: {', '.join(STEMS)})")
    if block not in BLOCKS:
        raise BadInput(f"unknown block {block!r} (known: {', '.join(BLOCKS)})")
    if activation not in ACTIVATIONS:
        raise BadInput(f"unknown activation {activation!r} (known: {', '.join(ACTIVATIONS)})")
    for name, values in [("depths", depths), ("widths", widths), ("strides", strides),
                         ("group_widths", group_widths), ("bottleneck_ratios", bottleneck_ratios)]:
        if any(v <= 0 for v in values):
            raise BadInput(f"{name} must be positive, got {list(values)}")
    if block in ("X", "Y"):
        w, g = compatible_widths(widths, bottleneck_ratios, group_widths)
        widths, group_widths = w.tolist(), g.tolist()
    return ModelSpec(
        depths=tuple(int(d) for d in depths), widths=tuple(int(w) for w in widths),
        bottleneck_ratios=tuple(float(b) for b in bottleneck_ratios),
        group_widths=tuple(int(g) for g in group_widths), strides=tuple(int(s) for s in strides),
        stem=stem, stem_width=int(stem_width), block=block, se_ratio=float(se_ratio),
        in_channels=int(in_channels), num_classes=int(num_classes), resolution=int(resolution),
        regnet=regnet, activation=activation)


def spec_to_row(spec: ModelSpec, model_id: int, space: str, seed: int, counts: dict) -> dict:
    """One row of models.parquet (dsd.runfolder.MODEL_SCHEMA): the spec, its id, space, seed, key and
    complexity counts."""
    r = spec.regnet or {}
    return {"model_id": int(model_id), "space": space, "seed": seed, "key": spec.key(), "stem": spec.stem,
            "stem_width": spec.stem_width, "block": spec.block, "depths": list(spec.depths),
            "widths": list(spec.widths), "bottleneck_ratios": list(spec.bottleneck_ratios),
            "group_widths": list(spec.group_widths), "strides": list(spec.strides),
            "se_ratio": spec.se_ratio, "depth": spec.depth, "w0": r.get("w0"), "wa": r.get("wa"),
            "wm": r.get("wm"), "resolution": spec.resolution, "in_channels": spec.in_channels,
            "num_classes": spec.num_classes, "activation": spec.activation, **counts}


def spec_from_row(row) -> ModelSpec:
    """The spec of one row of models.parquet (a dict or a pandas Series); a row written before the
    activation column (null there) is a ReLU network."""
    regnet = None
    if row.get("w0") is not None and row.get("w0") == row.get("w0"):
        regnet = {"w0": row["w0"], "wa": row["wa"], "wm": row["wm"]}
    activation = row.get("activation")
    return ModelSpec(
        depths=tuple(int(v) for v in row["depths"]), widths=tuple(int(v) for v in row["widths"]),
        bottleneck_ratios=tuple(float(v) for v in row["bottleneck_ratios"]),
        group_widths=tuple(int(v) for v in row["group_widths"]),
        strides=tuple(int(v) for v in row["strides"]), stem=row["stem"],
        stem_width=int(row["stem_width"]), block=row["block"], se_ratio=float(row["se_ratio"]),
        in_channels=int(row["in_channels"]), num_classes=int(row["num_classes"]),
        resolution=int(row["resolution"]), regnet=regnet,
        activation=activation if isinstance(activation, str) else "relu")
