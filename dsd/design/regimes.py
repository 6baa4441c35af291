"""Regimes: what complexity is measured at, the default complexity band, and the training protocol.

A regime overrides the input side of a space (resolution, channels, classes, stem stride / per-stage
strides where small images need it) so that one space file serves ImageNet, CIFAR-10 and Fashion-MNIST.

Why these bands:
- imagenet: the paper's 360M..400M flops at 224 px (stride-2 stem, stage maps 56, 28, 14, 7).
- cifar: 32 px, stride-1 "cifar" stem, stage strides 1,2,2,2 (maps 32, 16, 8, 4). The body's flops scale
  with the area of the stage maps, (32/56)^2 = 0.327 of ImageNet's, so 360M..400M becomes 118M..131M;
  120M..130M keeps typical models the same shapes (depths, widths) as in the paper's regime.
- fashion: 28 px, 1 channel, stride-2 stem, strides 1,2,2,2 (maps 14, 7, 4, 2); 2M..4M flops keeps
  models narrow and shallow enough to train on two CPU cores within the demo's budget.

The regime's `Protocol` is the one home of the training defaults (docs/method.md section 4): `dsd train`
and the library take every default from it.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, replace

from dsd.errors import BadInput

UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


@dataclass(frozen=True)
class Protocol:
    """The short training schedule of a regime (docs/method.md section 4); `dsd train` options override it."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    wd: float = 5e-4
    momentum: float = 0.9
    warmup_epochs: float = 0.0        # linear lr warm-up over this many epochs (may be fractional)
    warmup_factor: float = 0.1        # the warm-up's starting fraction of the schedule's lr
    zero_init_residual: bool = False  # last BN gamma of each residual branch starts at 0
    train_images: int | None = None   # a fixed subset of the training split (None: all of it)
    eval_images: int | None = None    # a fixed subset of the evaluation split


@dataclass(frozen=True)
class Regime:
    name: str
    resolution: int
    in_channels: int
    num_classes: int
    dataset: str
    stem: str | None = None            # overrides the space's stem type (None: keep the space's)
    strides: tuple[int, ...] | None = None  # overrides the space's per-stage strides
    flops: tuple[float, float] = (0, math.inf)
    params: tuple[float, float] = (0, math.inf)
    acts: tuple[float, float] = (0, math.inf)
    train: Protocol = field(default_factory=Protocol)  # stored under `train:` in run.yaml

    def strides_for(self, stages: int, written: tuple[int, ...] | None = None) -> tuple[int, ...]:
        """Per-stage strides under this regime: its i-th stride, else 2 (else `written`, when given,
        for a regime without strides of its own)."""
        if not self.strides:
            return tuple(written) if written else (2,) * stages
        return tuple(self.strides[i] if i < len(self.strides) else 2 for i in range(stages))

    def as_dict(self) -> dict:
        d = asdict(self)
        for k in ("flops", "params", "acts"):
            d[k] = [None if math.isinf(v) else v for v in d[k]]
        d["strides"] = list(self.strides) if self.strides else None
        return d


# Chosen by bench/fidelity.py (README, "Fidelity"): on two CPU cores, 5 spaces x 30 models in about an
# hour, with the paper's orderings where the data can show them; the 0.5-epoch warm-up keeps deep
# models (AnyNetXE) from starting by diverging. cifar takes the same warm-up (5% of its 10 epochs);
# imagenet keeps the paper's protocol exactly.
FASHION_PROTOCOL = Protocol(epochs=3, batch_size=64, lr=0.05, warmup_epochs=0.5, train_images=8000,
                            eval_images=2000)

REGIMES = {
    "imagenet": Regime("imagenet", 224, 3, 1000, "imagefolder", flops=(360e6, 400e6),
                       train=Protocol(lr=0.05, wd=5e-5)),
    "cifar": Regime("cifar", 32, 3, 10, "cifar10", stem="cifar", strides=(1, 2, 2, 2), flops=(120e6, 130e6),
                    train=Protocol(warmup_epochs=0.5)),
    "fashion": Regime("fashion", 28, 1, 10, "fashion-mnist", stem="simple", strides=(1, 2, 2, 2),
                      flops=(2e6, 4e6), train=FASHION_PROTOCOL),
}


def get_regime(name: str) -> Regime:
    if name not in REGIMES:
        raise BadInput(f"unknown regime {name!r} (known: {', '.join(REGIMES)})")
    return REGIMES[name]


def parse_quantity(text: str) -> float:
    """'400M' -> 4e8, '1.5G' -> 1.5e9, '2e6' -> 2e6."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgGtT]?)\s*", text)
    if not m:
        raise BadInput(f"{text!r} is not a quantity (examples: 400M, 1.5G, 2e6)")
    return float(m.group(1)) * UNITS[m.group(2).upper()]


def parse_range(text: str, label: str) -> tuple[float, float]:
    """'360M:400M', ':2M' (at most), '1G:' (at least), or one value '400M' (at most).

    label says where the text came from in messages (an option, or a space file's key)."""
    lo, sep, hi = text.partition(":")
    try:
        if not sep:
            return 0.0, parse_quantity(lo)
        low = parse_quantity(lo) if lo.strip() else 0.0
        high = parse_quantity(hi) if hi.strip() else math.inf
    except BadInput as e:
        raise BadInput(f"{label} {text}: {e}") from None
    if low > high:
        raise BadInput(f"{label} {text}: low {lo} is above high {hi}")
    return low, high


def with_overrides(regime: Regime, flops: str | None = None, params: str | None = None,
                   acts: str | None = None) -> Regime:
    """The regime with --flops / --params / --acts ranges applied."""
    changes = {k: parse_range(v, f"--{k}") for k, v in (("flops", flops), ("params", params), ("acts", acts)) if v}
    return replace(regime, **changes)


def regime_from_dict(d: dict) -> Regime:
    """Inverse of Regime.as_dict (reads run.yaml)."""
    d = dict(d)
    for k in ("flops", "params", "acts"):
        lo, hi = d.get(k) or (0, None)
        d[k] = (lo or 0, math.inf if hi is None else hi)
    d["strides"] = tuple(d["strides"]) if d.get("strides") else None
    try:
        d["train"] = Protocol(**(d.get("train") or {}))
        return Regime(**d)
    except TypeError as e:
        raise BadInput(f"run.yaml: not a regime description ({e})") from None
