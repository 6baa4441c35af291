"""The published RegNet zoo: the paper's best RegNetX / RegNetY models by flops regime, with their
RegNet parameters and the paper's ImageNet top-1 error after the full 100-epoch schedule (mean of 5
runs; a reference for long training, not for short design-space studies).

The parameters live in spaces/zoo/regnet_zoo.csv (shipped with the built-in spaces); each model's
stages follow from them by the quantized linear rule (docs/method.md section 3.1) and its group-width
compatibility step (section 1.1), so `dsd describe --model RegNetX-400MF` counts what the paper counts.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache

from dsd.design.regimes import Regime
from dsd.design.regnet import regnet_stages
from dsd.design.spaces import builtin_dir
from dsd.design.spec import ModelSpec, make_spec, network_for
from dsd.errors import BadInput

ZOO_FILE = "zoo/regnet_zoo.csv"


@dataclass(frozen=True)
class ZooModel:
    name: str
    depth: int
    w0: float
    wa: float
    wm: float
    group_width: int
    bottleneck_ratio: float
    se_ratio: float
    published_error: float  # ImageNet top-1 %, 100 epochs


@lru_cache(maxsize=1)
def zoo() -> tuple[ZooModel, ...]:
    """Every zoo model, in the file's order (RegNetX by flops, then RegNetY)."""
    with open(builtin_dir() / ZOO_FILE, newline="") as f:
        return tuple(ZooModel(r["name"], int(r["depth"]), float(r["w0"]), float(r["wa"]), float(r["wm"]),
                              int(r["group_w"]), float(r["bot_ratio"]), float(r["se_ratio"]),
                              float(r["top1_err_100ep"])) for r in csv.DictReader(f))


def zoo_model(name: str) -> ZooModel:
    """A zoo model by name, case-insensitive (regnetx-400mf); BadInput naming the known ones."""
    found = {m.name.lower(): m for m in zoo()}.get(name.strip().lower())
    if found is None:
        raise BadInput(f"unknown zoo model {name!r} (known: {', '.join(m.name for m in zoo())})")
    return found


def zoo_spec(model: ZooModel, regime: Regime) -> ModelSpec:
    """The model's network under a regime: its stages by the RegNet rule, the regime's input, stem and
    strides (at imagenet: the published network; elsewhere the same stages on that regime's input)."""
    depths, widths = regnet_stages(model.depth, model.w0, model.wa, model.wm)
    k = len(depths)
    net = network_for(regime, k, block="Y" if model.se_ratio else "X", se_ratio=model.se_ratio)
    return make_spec(depths, widths, [model.bottleneck_ratio] * k, [model.group_width] * k,
                     regnet={"w0": model.w0, "wa": model.wa, "wm": model.wm}, **net.fields())


def zoo_rows(names: list[str], regime: Regime, repeats: int = 1) -> list[dict]:
    """models.parquet rows of the named zoo models under a regime, `repeats` each side by side (ids
    0, 1, ...: each trains with its own seed); the row's `space` is the model's name."""
    from dsd.design.complexity import complexity
    from dsd.design.spec import spec_to_row

    if repeats < 1:
        raise BadInput(f"--repeats must be >= 1, got {repeats}")
    models = [zoo_model(n) for n in names]
    if not models:
        raise BadInput("--models: no zoo model named")
    rows = []
    for model in models:
        spec = zoo_spec(model, regime)
        counts = complexity(spec)
        rows += [spec_to_row(spec, len(rows) + r, model.name, 0, counts) for r in range(repeats)]
    return rows
