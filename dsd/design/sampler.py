"""Rejection sampling of models from a space under a regime's complexity band.

Model i is drawn from its own random stream, seeded by (seed, i): sampling n=600 after n=500 keeps the
first 500 models identical, and model i never depends on how many models are asked for. Candidates are
drawn and counted in vectorized batches (numpy), so a 2% acceptance rate costs little; the first
candidate of model i's stream that meets every constraint and is not a duplicate becomes model i.
The constraints are the regime's complexity bands, then the space's limits (params / acts bounded by
functions of each candidate's own flops, dsd.design.spaces.Limit).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace

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
SLICE = 16  # the candidates of a batch evaluated first
BLOCK = 1024  # models whose batches are drawn and evaluated together
PREFETCH_BATCH = 2048  # their largest batch done so
ROUND = 1 << 20  # the most candidates drawn for them at once


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
    return _values(p, _randomness(p, rng, shape))


def _randomness(p: Param, rng: np.random.Generator, shape: tuple) -> np.ndarray:
    """What one parameter's values are made of, drawn from rng (zeros for a fixed one: no draws)."""
    if p.distribution == "fixed":
        return np.zeros(shape)
    if p.distribution == "choice":
        return rng.integers(0, len(p.values), size=shape)
    if p.distribution == "uniform" and p.quantum:
        return rng.integers(math.ceil(p.low / p.quantum), math.floor(p.high / p.quantum) + 1, size=shape)
    if p.distribution == "uniform":
        return rng.uniform(p.low, p.high, size=shape)
    return rng.uniform(math.log(p.low), math.log(p.high), size=shape)


def _values(p: Param, r: np.ndarray) -> np.ndarray:
    """One parameter's values from its randomness r, element by element (so many streams' at once)."""
    q = p.quantum
    if p.distribution == "fixed":
        return np.full(r.shape, p.value)
    if p.distribution == "choice":
        return np.asarray(p.values)[r]
    if p.distribution == "uniform":
        return r * q if q else r
    if q:  # round(x / q) clipped to the multiples in range (np.clip's result, without its overhead)
        return np.minimum(np.maximum(np.round(np.exp(r) / q), math.ceil(p.low / q)), math.floor(p.high / q)) * q
    return _exp(r)


def _exp(r: np.ndarray) -> np.ndarray:
    """e ** r by the C library's exp, value by value (about 90 ns each): on a CPU with AVX-512 numpy's exp
    differs from it in the last bit of about 1 value in 20, and a value kept as drawn (no quantum rounds
    it, as wa and wm of RegNet) must not depend on the CPU. (Rounded to a quantum, a last bit matters only
    exactly halfway between two multiples.)"""
    return np.fromiter(map(math.exp, r.ravel().tolist()), float, r.size).reshape(r.shape)


def _shape(space: Space, p: Param, batch: int) -> tuple:
    if space.rule is not None:
        return (batch,)
    return (batch, space.stages) if p.draws_per_stage else (batch, 1)


def stage_params(space: Space, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """(candidates, stages) arrays of depth, width, bottleneck_ratio, group_width of an AnyNet-style space."""
    batch = len(next(iter(raw.values())))
    out = {name: np.broadcast_to(values, (batch, space.stages)) for name, values in raw.items()}
    for name in space.non_decreasing:
        out[name] = np.sort(out[name], axis=1)
    return copy_ties(space, out)


def copy_ties(space: Space, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """values with each tied parameter (`same_as`) set to its target's draws; targets are never tied."""
    values.update({p.name: values[p.same_as] for p in space.params if p.same_as is not None})
    return values


def regnet_params(space: Space, raw: dict[str, np.ndarray], span: int = 8) -> dict[str, np.ndarray]:
    """RegNet parameters per candidate, then stage depths and widths by the quantized linear rule;
    candidates with a stage count other than the space's get depth 0 (rejected by the caller). The rule
    runs on the candidates of depths (k span, (k + 1) span] together, each group up to its own depth."""
    v = copy_ties(space, dict(raw))
    batch, s = len(v["depth"]), space.stages
    d = v["depth"].astype(np.int64)
    depths, widths, runs = np.zeros((batch, s), np.int64), np.zeros((batch, s), np.int64), np.zeros(batch, np.int64)
    group = (d - 1) // span
    for k in np.unique(group):
        rows = np.flatnonzero(group == k)
        w = quantized_linear_widths(int(d[rows].max()), v["w0"][rows, None], v["wa"][rows, None],
                                    v["wm"][rows, None], space.rule.get("quantum", 8))
        depths[rows], widths[rows], runs[rows] = stage_runs(w, d[rows], s)
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
    """Evaluates candidate batches for one (space, regime) and keeps the ones meeting the constraints."""

    def __init__(self, space: Space, regime: Regime):
        self.space, self.regime = space, regime
        self.net = space_network(space, regime)
        self.regnet = space.rule is not None

    def evaluate(self, raw: dict[str, np.ndarray]) -> tuple[dict, np.ndarray, dict]:
        """Candidates from their drawn values (of any number of batches, concatenated): the values after
        the compatibility step, which are in the regime's complexity bands, and their complexity."""
        v = (regnet_params if self.regnet else stage_params)(self.space, raw)
        batch = len(v["depth"])
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
class Part:
    """Candidates lo.. of a batch, evaluated: how many were in the bands but failed the space's limits,
    and, when some met every constraint, their values, complexity and which they are."""

    lo: int
    limited: int
    values: dict | None = None
    stats: dict | None = None
    ok: np.ndarray | None = None


@dataclass
class Batch:
    """A batch of a model's candidates: their drawn values and its parts evaluated so far, in order
    (a batch is evaluated a part at a time, as far as a model needs: the first SLICE candidates, then
    as many again each time)."""

    raw: dict
    size: int
    parts: list = field(default_factory=list)
    done: int = 0

    def next_part(self) -> tuple[int, int]:
        return self.done, min(self.size, max(SLICE, 2 * self.done))


@dataclass
class Stream:
    """A model's random stream and the batches drawn from it so far (sizes FIRST_BATCH, doubling)."""

    rng: np.random.Generator
    batches: list = field(default_factory=list)

    def next_size(self) -> int:
        return min(FIRST_BATCH << len(self.batches), MAX_BATCH)

    def drawn(self) -> int:
        return sum(b.size for b in self.batches)


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
    """n models meeting the constraints; model i depends only on (space, regime, seed, i).

    Model i's candidates come from its own stream in batches of FIRST_BATCH, 2 FIRST_BATCH, ...; the first
    that meets the constraints and is not a duplicate of models 0..i-1 is model i. The batches of BLOCK
    models are drawn and evaluated together (_prefetch); the choice, which duplicates make sequential, is
    then made model after model, evaluating and drawing further where a model still needs it."""
    check_count(n)
    sampler = Sampler(space, regime)
    rows, seen, draws, dups = [], set(), 0, 0
    for start in range(0, n, BLOCK):
        streams = [Stream(np.random.default_rng([seed, i])) for i in range(start, min(n, start + BLOCK))]
        _prefetch(sampler, streams, max_draws_per_model)
        for i, stream in enumerate(streams, start):
            found, tried, limited, passed = _first_model(sampler, stream, seen, max_draws_per_model)
            dups += passed
            if found is None:
                raise BadInput(f"found only {i} of {n} models: no candidate for model {i} met the constraints in "
                               f"{tried:,} draws ({draws + tried:,} in all, {dups} duplicates); "
                               + _what_rejects(space, limited))
            spec, counts = found
            seen.add(spec.key())
            draws += tried
            rows.append({**spec_to_row(spec, i, space.name, seed, counts), **training_values(space, seed, i)})
    return Sample(rows, draws, dups)


def _first_model(sampler: Sampler, stream: Stream, seen: set, max_draws: int) -> tuple:
    """The stream's first candidate that meets the constraints and is not in seen: (its spec and counts,
    or None when max_draws candidates gave none; the candidates that used; how many in the bands the
    space's limits rejected; the duplicates passed over)."""
    tried = limited = passed = 0
    for k in itertools.count():
        if tried >= max_draws:
            return None, tried, limited, passed
        if k == len(stream.batches):
            _draw(sampler.space, [stream])
        batch = stream.batches[k]
        for part in _parts(sampler, batch):
            limited += part.limited
            found, duplicates = _first_new(sampler, part, seen)
            passed += duplicates
            if found is not None:
                spec, counts, j = found
                return (spec, counts), tried + j + 1, limited, passed
        tried += batch.size


def _parts(sampler: Sampler, batch: Batch):
    """The batch's parts in order, the next ones evaluated as they are asked for."""
    for p in itertools.count():
        if p == len(batch.parts):
            if batch.done == batch.size:
                return
            _evaluate(sampler, [batch])
        yield batch.parts[p]


def _prefetch(sampler: Sampler, streams: list[Stream], max_draws: int) -> None:
    """Draw and evaluate the streams' batches together, part after part, while some have no candidate
    meeting the constraints. It stops at batches of PREFETCH_BATCH or ROUND candidates in all (the rest
    is done model by model), which bounds the work wasted on the models after one that fails."""
    waiting = streams
    while waiting:
        waiting = [s for s in waiting if s.drawn() < max_draws]
        if not waiting or waiting[0].next_size() > PREFETCH_BATCH or len(waiting) * waiting[0].next_size() > ROUND:
            return
        _draw(sampler.space, waiting)
        while waiting and waiting[0].batches[-1].done < waiting[0].batches[-1].size:
            _evaluate(sampler, [s.batches[-1] for s in waiting])
            waiting = [s for s in waiting if s.batches[-1].parts[-1].ok is None]


def _draw(space: Space, streams: list[Stream]) -> None:
    """The next batch of each stream, drawn (not yet evaluated): each stream's draws, in the order of
    its parameters, then the values made from the draws of all streams at once. Drawing is the only use
    of the streams, so that what follows (sorting, ties, the RegNet rule) is done for many models at once."""
    sizes = [s.next_size() for s in streams]
    params = [p for p in space.params if p.same_as is None]
    drawn = [[_randomness(p, s.rng, _shape(space, p, size)) for p in params] for s, size in zip(streams, sizes)]
    ends = np.cumsum(sizes)[:-1]
    values = [np.split(_values(p, np.concatenate(column)), ends) for p, column in zip(params, zip(*drawn))]
    for k, (s, size) in enumerate(zip(streams, sizes)):
        s.batches.append(Batch({p.name: v[k] for p, v in zip(params, values)}, size))


def _evaluate(sampler: Sampler, batches: list[Batch], chunk: int = 1 << 16) -> None:
    """The next part of each batch (all at the same place), evaluated together, chunk candidates at a time."""
    lo, hi = batches[0].next_part()
    step = max(1, chunk // (hi - lo))
    for first in range(0, len(batches), step):
        group = batches[first:first + step]
        raw = {k: np.concatenate([b.raw[k][lo:hi] for b in group]) for k in group[0].raw}
        v, in_bands, stats = sampler.evaluate(raw)
        ok = (in_bands & sampler.within_limits(stats)).reshape(len(group), hi - lo)
        limited = (in_bands.reshape(ok.shape) & ~ok).sum(axis=1)
        for row, (b, n_limited) in enumerate(zip(group, limited.tolist())):
            part = Part(lo, n_limited)
            if ok[row].any():
                rows = slice(row * (hi - lo), (row + 1) * (hi - lo))
                part.values, part.stats = {k: x[rows] for k, x in v.items()}, {k: x[rows] for k, x in stats.items()}
                part.ok = np.flatnonzero(ok[row])
            b.parts.append(part)
            b.done = hi


def _first_new(sampler: Sampler, part: Part, seen: set) -> tuple:
    """The part's first candidate meeting the constraints whose architecture is not in seen: (its spec,
    counts and place in the batch, or None) and the duplicates passed over."""
    passed = 0
    for j in [] if part.ok is None else part.ok:
        spec, counts = sampler.spec(part.values, part.stats, j)
        if spec.key() in seen:
            passed += 1
            continue
        return (spec, counts, part.lo + int(j)), passed
    return None, passed


def training_values(space: Space, seed: int, i: int) -> dict:
    """Model i's sampled training settings (sampled_lr, sampled_wd), from a stream of their own, so that
    the architectures are those of the same space without `training:`."""
    if not space.training:
        return {}
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
