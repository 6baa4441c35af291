"""Rejection sampling of models from a space under a regime's complexity band.

Model i is drawn from its own random stream, seeded by (seed, i): sampling n=600 after n=500 keeps the
first 500 models identical, and model i never depends on how many models are asked for. Candidates are
drawn and counted in vectorized batches (numpy), so a 2% acceptance rate costs little; the first
candidate of model i's stream that meets every constraint and is not a duplicate becomes model i.
The constraints are the regime's complexity bands, then the space's limits (params / acts bounded by
functions of each candidate's own flops, dsd.design.spaces.Limit).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from dsd.design import complexity as cx
from dsd.design.regimes import Regime
from dsd.design.regnet import compatible_widths, quantized_linear_widths, stage_runs
from dsd.design.spaces import Param, Space
from dsd.design.spec import ModelSpec, Network, network_for, spec_to_row
from dsd.errors import BadInput

FIRST_BATCH = 256
MAX_BATCH = 16384
MAX_DRAWS_PER_MODEL = 2_000_000


def space_network(space: Space, regime: Regime) -> Network:
    """A space's network under a regime; a space file that names its own `regime:` was written for that
    input, so under that regime its stem and strides are kept as written."""
    net = space.network
    return network_for(regime, space.stages, stem=net["stem"], strides=net["strides"],
                       stem_width=net["stem_width"], block=net["block"], se_ratio=net["se_ratio"],
                       activation=net["activation"], own=space.regime == regime.name)


def draw(p: Param, rng: np.random.Generator, shape: tuple) -> np.ndarray:
    """Values of one parameter with its declared distribution (see spaces/AnyNetXA.yaml); a fixed
    parameter takes no randomness from rng."""
    if p.distribution == "fixed":
        return np.full(shape, p.value)
    if p.distribution == "choice":
        return np.asarray(p.values)[rng.integers(0, len(p.values), size=shape)]
    q = p.quantum
    if p.distribution == "uniform":
        if q:
            k = rng.integers(math.ceil(p.low / q), math.floor(p.high / q) + 1, size=shape)
            return k * q
        return rng.uniform(p.low, p.high, size=shape)
    x = np.exp(rng.uniform(math.log(p.low), math.log(p.high), size=shape))
    if q:
        return np.clip(np.round(x / q), math.ceil(p.low / q), math.floor(p.high / q)) * q
    return x


def draw_stage_params(space: Space, rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
    """(batch, stages) arrays of depth, width, bottleneck_ratio, group_width for an AnyNet-style space."""
    s = space.stages
    out = {}
    for p in space.params:
        if p.same_as is None:
            values = draw(p, rng, (batch, s) if p.draws_per_stage else (batch, 1))
            out[p.name] = np.broadcast_to(values, (batch, s))
    for name in space.non_decreasing:
        out[name] = np.sort(out[name], axis=1)
    return copy_ties(space, out)


def copy_ties(space: Space, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """values with each tied parameter (`same_as`) set to its target's draws; targets are never tied."""
    values.update({p.name: values[p.same_as] for p in space.params if p.same_as is not None})
    return values


def draw_regnet_params(space: Space, rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
    """RegNet parameters per candidate, then stage depths and widths by the quantized linear rule;
    candidates with a stage count other than the space's get depth 0 (rejected by the caller)."""
    v = copy_ties(space, {p.name: draw(p, rng, (batch,)) for p in space.params if p.same_as is None})
    d = v["depth"].astype(np.int64)
    w = quantized_linear_widths(int(d.max()), v["w0"][:, None], v["wa"][:, None], v["wm"][:, None],
                                space.rule.get("quantum", 8))
    s = space.stages
    depths, widths, runs = stage_runs(w, d, s)
    ok = runs == s
    depths[~ok] = 0
    widths[~ok] = 8
    out = {"depth": depths, "width": widths,
           "bottleneck_ratio": np.broadcast_to(v["bottleneck_ratio"][:, None], (batch, s)),
           "group_width": np.broadcast_to(v["group_width"][:, None], (batch, s))}
    out.update({"w0": v["w0"], "wa": v["wa"], "wm": v["wm"]})
    return out


def in_band(values, band) -> np.ndarray:
    lo, hi = band
    return (values >= lo) & (values <= hi)


class Sampler:
    """Draws candidate batches for one (space, regime) and keeps the ones meeting the constraints."""

    def __init__(self, space: Space, regime: Regime):
        self.space, self.regime = space, regime
        self.net = space_network(space, regime)
        self.regnet = space.rule is not None

    def candidates(self, rng: np.random.Generator, batch: int) -> tuple[dict, np.ndarray, dict]:
        """A batch of candidates (after the compatibility step), which are in the regime's complexity
        bands, and their complexity."""
        v = (draw_regnet_params if self.regnet else draw_stage_params)(self.space, rng, batch)
        depths = v["depth"].astype(np.int64)
        b = v["bottleneck_ratio"].astype(float)
        widths, groups = v["width"].astype(np.int64), v["group_width"].astype(np.int64)
        if self.net.block in ("X", "Y"):
            widths, groups = compatible_widths(widths, b, groups)
        n = self.net
        valid = np.flatnonzero((depths > 0).all(axis=1))  # RegNet draws with the wrong stage count: skip
        c = cx.network(stem_kind=n.stem, stem_width=n.stem_width, block_kind=n.block, se_ratio=n.se_ratio,
                       in_channels=n.in_channels, num_classes=n.num_classes, resolution=n.resolution,
                       depths=depths[valid].T, widths=widths[valid].T, bottleneck_ratios=b[valid].T,
                       group_widths=groups[valid].T, strides=n.strides)
        ok = np.zeros(batch, bool)
        ok[valid] = True
        stats = {}
        for name, counts in (("flops", c.flops), ("params", c.params), ("acts", c.acts)):
            stats[name] = np.zeros(batch, np.int64)
            stats[name][valid] = counts
            ok &= in_band(stats[name], getattr(self.regime, name))
        v.update(depth=depths, width=widths, group_width=groups, bottleneck_ratio=b)
        return v, ok, stats

    def within_limits(self, stats: dict) -> np.ndarray:
        """Which candidates meet every limit of the space, each at its own flops."""
        ok = np.ones(len(stats["flops"]), bool)
        for limit in self.space.limits:
            ok &= limit.holds(stats["flops"], stats[limit.stat])
        return ok

    def spec(self, v: dict, stats: dict, i: int) -> tuple[ModelSpec, dict]:
        regnet = {k: float(v[k][i]) for k in ("w0", "wa", "wm")} if self.regnet else None
        spec = ModelSpec(depths=tuple(v["depth"][i].tolist()), widths=tuple(v["width"][i].tolist()),
                         bottleneck_ratios=tuple(v["bottleneck_ratio"][i].tolist()),
                         group_widths=tuple(v["group_width"][i].tolist()), regnet=regnet, **self.net.fields())
        return spec, {k: int(stats[k][i]) for k in stats}


@dataclass
class Sample:
    rows: list[dict]
    draws: int
    duplicates: int


def check_count(n: int) -> None:
    """How many models to sample: at least one."""
    if n <= 0:
        raise BadInput(f"--n must be positive, got {n}")


def sample(space: Space, regime: Regime, n: int, seed: int = 0,
           max_draws_per_model: int = MAX_DRAWS_PER_MODEL) -> Sample:
    """n models meeting the constraints; model i depends only on (space, regime, seed, i)."""
    check_count(n)
    sampler = Sampler(space, regime)
    rows, seen, draws, dups = [], set(), 0, 0
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        batch, tried, found, limited = FIRST_BATCH, 0, None, 0
        while found is None:
            if tried >= max_draws_per_model:
                raise BadInput(f"found only {i} of {n} models: no candidate for model {i} met the constraints in "
                               f"{tried:,} draws ({draws + tried:,} in all, {dups} duplicates); "
                               + _what_rejects(space, limited))
            v, in_bands, stats = sampler.candidates(rng, batch)
            ok = in_bands & sampler.within_limits(stats)
            limited += int(np.count_nonzero(in_bands & ~ok))
            used = batch
            for j in np.flatnonzero(ok):
                spec, counts = sampler.spec(v, stats, j)
                key = spec.key()
                if key in seen:
                    dups += 1
                    continue
                seen.add(key)
                found, used = {**spec_to_row(spec, i, space.name, seed, counts),
                               **training_values(space, seed, i)}, j + 1
                break
            tried += int(used)
            batch = min(2 * batch, MAX_BATCH)
        draws += tried
        rows.append(found)
    return Sample(rows, draws, dups)


def training_values(space: Space, seed: int, i: int) -> dict:
    """Model i's sampled training settings (sampled_lr, sampled_wd), from a stream of their own, so that
    the architectures are those of the same space without `training:`."""
    rng = np.random.default_rng([seed, i, 1])
    return {f"sampled_{p.name}": float(draw(p, rng, ())) for p in space.training}


def _what_rejects(space: Space, limited: int) -> str:
    """The end of the message for a model no candidate gave: the limits, when they rejected candidates
    that were in the complexity bands, else the bands."""
    if not limited:
        return "widen the complexity band or the space"
    bounds = ", ".join(map(str, space.limits))
    return (f"{limited:,} candidates in the complexity band failed the limits of space {space.name} "
            f"({bounds}; F: the model's GFLOPs): loosen its `limits:` or move the band")


def regime_for(space: Space, regime: Regime) -> Regime:
    """The space file's own complexity ranges (if any) applied over the regime's."""
    return replace(regime, **space.complexity) if space.complexity else regime
