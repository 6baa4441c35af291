"""Design spaces: YAML files -> validated `Space` objects.

A space file names the network (stem, block, stages, strides, SE ratio), its free parameters with their
distributions, optional ordering constraints and, for RegNet spaces, the quantized linear rule. `extends:`
merges a file over another space (mappings merge key by key, everything else is replaced), which is how
AnyNetXB..E and RegNetY are written as one-line refinements. See spaces/AnyNetXA.yaml for the schema.

Restricting a space (the paper's wm = 2, w0 = wa, g = 1) needs two more forms of parameter:
- fixed, `wm: {distribution: fixed, value: 2}`: every model takes that value (the parameter adds no free
  dimension); low / high / values inherited through `extends` are ignored, as `choice` ignores low / high.
- tied, `wa: {same_as: w0}`: every model takes w0's value(s); its own distribution keys (inherited) are
  ignored, and `same_as: null` in an extending file unties it. It must name a parameter of the space that
  is not tied itself, whose lowest value the tied parameter can take.
Fixed and tied parameters draw nothing from the random stream, so adding them to a new space leaves
the draws of every other space as they were. `network: {activation: relu | silu}` (default relu)
puts SiLU (Swish) in every place of the ReLU; it changes no complexity count.

Limits bound params and acts by a function of each model's own flops F (in GFLOPs, 1e9 multiply-adds),
so that one file serves every regime and flops band (the paper's RegNetX_C, spaces/examples/RegNetX_C.yaml):
    limits:
      params: {max: {const: 3M, coef: 5.5M, power: 1}}   # params <= 3M + 5.5M * F
      acts:   {max: {coef: 6.5M, power: 0.5}}           # acts <= 6.5M * sqrt(F)
A bound is `max` or `min` of const + coef * F ** power: const and coef default to 0 (one is needed), power
to 1; each is a number >= 0, or a quantity such as 5.5M or 3.0e6 (which YAML reads as text), never
evaluated. `null` (at a bound, a stat, or `limits`) drops what an extended file set. The sampler applies
them to each candidate, at its own flops, after the regime's complexity bands; `extends` inherits them.

The paper's variant spaces live in spaces/examples/ (example_names): they load by name or short name
like the built-ins (a built-in wins a clash), but `dsd spaces` lists only the built-ins.
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from dsd.design.regimes import parse_quantity, parse_range
from dsd.design.spec import ACTIVATIONS, BLOCKS, STEMS
from dsd.errors import BadInput

TOP_KEYS = {"training", "name", "short", "description", "extends", "network", "parameters", "non_decreasing", "rule",
            "regime", "complexity", "limits"}
NETWORK_KEYS = {"stem", "stem_width", "block", "stages", "strides", "se_ratio", "activation"}
PARAM_KEYS = {"distribution", "low", "high", "quantum", "values", "value", "per_stage", "shared", "same_as"}
DISTRIBUTIONS = ("uniform", "log_uniform", "choice", "fixed")
TIED = "tied"  # the distribution of a `same_as` parameter: it copies another one's draw
STAGE_PARAMS = ("depth", "width", "bottleneck_ratio", "group_width")
REGNET_PARAMS = ("depth", "w0", "wa", "wm", "bottleneck_ratio", "group_width")
RULES = ("quantized_linear",)
# The smallest value a parameter can take, and whether that bound itself is allowed: depths, widths and
# group widths count channels or blocks, b > 0, and the RegNet rule needs w0 > 0, wa >= 0, wm > 1
# (docs/method.md section 3.1).
LOWER_BOUNDS = {"depth": (1, True), "width": (1, True), "group_width": (1, True), "bottleneck_ratio": (0, False),
                "w0": (0, False), "wa": (0, True), "wm": (1, False), "lr": (0, False), "wd": (0, True)}
TRAINING_PARAMS = ("lr", "wd")  # training settings a space can sample per model (`training:`)
# `short` names the default run folder runs/SHORT, so it must stay one plain folder name inside runs/.
SHORT_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
EXAMPLES_DIR = "examples"  # under the built-in folder
LIMIT_STATS, LIMIT_SIDES, LIMIT_TERMS = ("params", "acts"), ("max", "min"), ("const", "coef", "power")


@dataclass(frozen=True)
class Param:
    name: str
    distribution: str
    low: float | None = None
    high: float | None = None
    quantum: float | None = None
    values: tuple | None = None
    per_stage: bool = False
    shared: bool = False
    value: float | None = None  # of a fixed parameter
    same_as: str | None = None  # of a tied one: the parameter it copies

    @property
    def draws_per_stage(self) -> bool:
        """One value drawn per stage (as opposed to one for the whole network, or none: fixed, tied)."""
        return self.per_stage and not self.shared and self.distribution not in ("fixed", TIED)

    def lowest(self) -> float | None:
        """The smallest value the declaration allows (None when tied: its target's is)."""
        if self.distribution == "choice":
            return min(self.values)
        return self.value if self.distribution == "fixed" else self.low

    def support_size(self) -> float:
        """Number of distinct values (inf for a continuous parameter); 1 when fixed or tied (no freedom)."""
        if self.distribution in ("fixed", TIED):
            return 1
        if self.distribution == "choice":
            return len(set(self.values))
        if not self.quantum:
            return math.inf
        return math.floor(self.high / self.quantum) - math.ceil(self.low / self.quantum) + 1


@dataclass(frozen=True)
class Limit:
    """stat <= (max) or >= (min) const + coef * F ** power, F the model's own flops in GFLOPs: a bound that
    scales with the model, as the paper's RegNetX_C bounds params and acts, whatever the flops band."""
    stat: str
    side: str
    const: float = 0.0
    coef: float = 0.0
    power: float = 1.0

    def holds(self, flops, values) -> np.ndarray:
        """Elementwise: does each model (its flops, its params or acts) meet the bound?"""
        bound = self.const + self.coef * np.power(np.asarray(flops, dtype=float) / 1e9, self.power)
        return values <= bound if self.side == "max" else values >= bound

    def __str__(self) -> str:
        return f"{self.stat} {'<=' if self.side == 'max' else '>='} {self.const:g} + {self.coef:g} * F^{self.power:g}"


@dataclass(frozen=True)
class Space:
    name: str
    short: str
    description: str
    network: dict
    params: tuple[Param, ...]
    non_decreasing: tuple[str, ...] = ()
    rule: dict | None = None
    regime: str | None = None
    complexity: dict | None = None  # flops / params / acts -> (low, high), parsed from the file's ranges
    limits: tuple[Limit, ...] = ()  # params / acts bounded by functions of each model's own flops
    training: tuple[Param, ...] = ()  # lr / wd drawn per model (the appendix's study), not architecture
    source: dict | None = None  # the resolved (merged) mapping, as stored in run.yaml

    @property
    def stages(self) -> int:
        return int(self.network["stages"])

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)

    def free_dims(self) -> int:
        """Number of free parameters (a per-stage parameter counts once per stage)."""
        return sum((self.stages if p.draws_per_stage else 1) for p in self.params if p.support_size() > 1)

    def size(self) -> float:
        """Number of distinct parameter settings (inf when a parameter is continuous)."""
        total = 1.0
        for p in self.params:
            m = p.support_size()
            if p.draws_per_stage:
                k = self.stages
                # non-decreasing k-tuples from m values: C(m + k - 1, k)
                total *= math.comb(int(m) + k - 1, k) if p.name in self.non_decreasing and m < math.inf else m ** k
            else:
                total *= m
        return total

    def continuous(self) -> list[str]:
        return [p.name for p in self.params if p.support_size() == math.inf]


def builtin_dir() -> Path:
    """Where the built-in space files are: spaces/ of a checkout, else the installed package's copy.

    pyproject.toml ships spaces/ as the package `dsd.builtin_spaces`; in a checkout (or an editable
    install run from it) that package name is not importable, so the folder is used directly.
    """
    checkout = Path(__file__).resolve().parents[2] / "spaces"
    if (checkout / "AnyNetXA.yaml").is_file():
        return checkout
    return Path(str(resources.files("dsd.builtin_spaces")))


def builtin_names() -> list[str]:
    return sorted(p.stem for p in builtin_dir().glob("*.yaml"))


def example_names() -> list[str]:
    """The spaces of spaces/examples/ (the paper's variants of RegNetX and AnyNet, a user space): loadable
    by name like the built-ins, but not built-ins (the built-in list stays the paper's main line)."""
    return sorted(p.stem for p in (builtin_dir() / EXAMPLES_DIR).glob("*.yaml"))


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise BadInput(f"{path}:{where}: YAML syntax error: {problem}") from None
    except OSError as e:
        raise BadInput(f"{path}: cannot read ({e.strerror})") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: not a YAML mapping (a space or regime file is one)")
    return data


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class _BuiltinFiles:
    """Built-in and example space files by lower-case name and by short name: a built-in wins over an
    example, a file name over a short name. Reading every file for its short name is the slow part, so it
    is done only for a name that is no file's, once per process."""

    def get(self, name: str) -> Path | None:
        for folder, names in ((builtin_dir(), builtin_names()), (builtin_dir() / EXAMPLES_DIR, example_names())):
            files = {n.lower(): folder / f"{n}.yaml" for n in names}
            found = files.get(name) or self._shorts(tuple(files.values())).get(name)
            if found:
                return found
        return None

    @staticmethod
    @functools.lru_cache(maxsize=None)
    def _shorts(files: tuple[Path, ...]) -> dict[str, Path]:
        return {_read_yaml(p).get("short", "").lower(): p for p in files}


def yaml_file(ref: str, named: dict, relative_to: Path | None, kind: str) -> Path | None:
    """The file a space or regime reference means: a name of `named` (lower-cased keys), else a YAML
    path (relative_to: the folder of a file that extends it, tried first); None for a name nothing
    matches, so the caller names what is known; BadInput for a YAML path that does not exist."""
    found = named.get(str(ref).lower())
    if found is not None:
        return found
    for candidate in ([relative_to / ref] if relative_to else []) + [Path(ref)]:
        if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
            return candidate
    if Path(ref).suffix in (".yaml", ".yml"):
        raise BadInput(f"{kind} file {ref} does not exist")
    return None


def _resolve_file(ref: str, relative_to: Path | None = None) -> Path:
    """A built-in name (case-insensitive, or its short name) or a path to a YAML file."""
    found = yaml_file(ref, _BuiltinFiles(), relative_to, "space")
    if found is None:
        raise BadInput(f"unknown space {ref!r} (known: {', '.join(builtin_names())}; examples: "
                       f"{', '.join(example_names())}; or a path to a .yaml file)")
    return found


def _load_mapping(path: Path, seen: tuple = ()) -> dict:
    """The file's mapping merged over its `extends` chain; seen: the resolved files extending it."""
    if path.resolve() in seen:
        cycle = " -> ".join(p.name for p in seen + (path.resolve(),))
        raise BadInput(f"{path}: `extends` makes a cycle: {cycle}")
    data = _read_yaml(path)
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise BadInput(f"{path}: unknown key {sorted(unknown)[0]!r} (allowed: {', '.join(sorted(TOP_KEYS))})")
    if data.get("extends"):
        try:
            parent = _resolve_file(str(data["extends"]), path.parent)
        except BadInput as e:
            raise BadInput(f"{path}: extends: {e}") from None
        base = _load_mapping(parent, seen + (path.resolve(),))
        for own in ("extends", "short"):  # a space names its own run folder; it does not inherit its parent's
            base.pop(own, None)
        data = _merge(base, {k: v for k, v in data.items() if k != "extends"})
    return data


def load_space(ref: str | Path) -> Space:
    """Load, merge (`extends`) and validate a space given by built-in name or file path."""
    path = _resolve_file(str(ref))
    return space_from_mapping(_load_mapping(path), where=str(path))


def check_lowest(name: str, lowest: float, label: str) -> None:
    """Refuse a parameter value below what the parameter can take (LOWER_BOUNDS); label names its source."""
    bound, allowed = LOWER_BOUNDS[name]
    if lowest < bound or (lowest == bound and not allowed):
        raise BadInput(f"{label} must be {'>=' if allowed else '>'} {bound}, got {lowest:g}")


def _param(name: str, d: dict, where: str, regnet: bool) -> Param:
    """One parameter's declaration; a tie's target is checked against the others by _check_ties."""
    if not isinstance(d, dict):
        raise BadInput(f"{where}: parameter {name!r} must be a mapping")
    unknown = set(d) - PARAM_KEYS
    if unknown:
        raise BadInput(f"{where}: parameter {name!r}: unknown key {sorted(unknown)[0]!r} "
                       f"(allowed: {', '.join(sorted(PARAM_KEYS))})")
    per_stage = bool(d.get("per_stage", False))
    if regnet and per_stage:
        raise BadInput(f"{where}: parameter {name!r}: RegNet parameters are not per stage")
    flags = {"per_stage": per_stage, "shared": bool(d.get("shared", False))}
    if d.get("same_as") is not None:
        return Param(name, TIED, same_as=d["same_as"], **flags)
    dist = d.get("distribution")
    if dist not in DISTRIBUTIONS:
        raise BadInput(f"{where}: parameter {name!r}: distribution must be one of {', '.join(DISTRIBUTIONS)}, got {dist!r}")
    if dist == "fixed":
        value = d.get("value")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise BadInput(f"{where}: parameter {name!r}: fixed needs a number `value`, got {value!r}")
        check_lowest(name, value, f"{where}: parameter {name!r}: value")
        return Param(name, dist, value=value, **flags)
    if dist == "choice":
        values = d.get("values")
        if not isinstance(values, list) or not values or not all(isinstance(v, (int, float)) for v in values):
            raise BadInput(f"{where}: parameter {name!r}: choice needs a non-empty list of numbers in `values`")
        check_lowest(name, min(values), f"{where}: parameter {name!r}: values")
        return Param(name, dist, values=tuple(values), **flags)
    low, high, q = d.get("low"), d.get("high"), d.get("quantum")
    for key, v in (("low", low), ("high", high)):
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise BadInput(f"{where}: parameter {name!r}: {dist} needs a number `{key}`, got {v!r}")
    if low > high:
        raise BadInput(f"{where}: parameter {name!r}: low {low} is above high {high}")
    if dist == "log_uniform" and low <= 0:
        raise BadInput(f"{where}: parameter {name!r}: log_uniform needs low > 0, got {low}")
    check_lowest(name, low, f"{where}: parameter {name!r}: low")
    if q is not None and (not isinstance(q, (int, float)) or q <= 0):
        raise BadInput(f"{where}: parameter {name!r}: quantum must be a positive number, got {q!r}")
    if q and math.floor(high / q) < math.ceil(low / q):
        raise BadInput(f"{where}: parameter {name!r}: no multiple of {q} lies in [{low}, {high}]")
    return Param(name, dist, float(low), float(high), q, **flags)


def _network(net, where: str) -> dict:
    """The validated `network:` mapping with its defaults filled in."""
    if not isinstance(net, dict):
        raise BadInput(f"{where}: `network` must be a mapping")
    unknown = set(net) - NETWORK_KEYS
    if unknown:
        raise BadInput(f"{where}: network: unknown key {sorted(unknown)[0]!r} (allowed: {', '.join(sorted(NETWORK_KEYS))})")
    net = {"stem": "simple", "stem_width": 32, "block": "X", "se_ratio": 0.0, "activation": "relu", **net}
    for key, known in (("stem", STEMS), ("block", BLOCKS), ("activation", ACTIVATIONS)):
        if net[key] not in known:
            raise BadInput(f"{where}: network: {key} must be one of {', '.join(known)}, got {net[key]!r}")
    stages = net.get("stages")
    if not isinstance(stages, int) or not 1 <= stages <= 8:
        raise BadInput(f"{where}: network: stages must be an integer 1..8, got {stages!r}")
    strides = net.get("strides") or [2] * stages
    if not isinstance(strides, list) or len(strides) != stages or not all(isinstance(s, int) and s >= 1 for s in strides):
        raise BadInput(f"{where}: network: strides must be {stages} positive integers, got {strides!r}")
    net["strides"] = list(strides)
    if not isinstance(net["stem_width"], int) or net["stem_width"] < 1:
        raise BadInput(f"{where}: network: stem_width must be a positive integer")
    if not isinstance(net["se_ratio"], (int, float)) or not 0 <= net["se_ratio"] < 1:
        raise BadInput(f"{where}: network: se_ratio must be in [0, 1)")
    return net


def _complexity(complexity, where: str) -> dict | None:
    """The file's own flops / params / acts ranges, parsed."""
    if complexity is None:
        return None
    bad = set(complexity) - {"flops", "params", "acts"} if isinstance(complexity, dict) else {"?"}
    if bad:
        raise BadInput(f"{where}: complexity: only flops, params, acts ranges are allowed")
    return {k: parse_range(str(v), f"{where}: complexity: {k}") for k, v in complexity.items()}


def _limits(limits, where: str) -> tuple[Limit, ...]:
    """The file's `limits:` (see the module docstring), parsed; null drops a bound or a stat."""
    if limits is None:
        return ()
    if not isinstance(limits, dict):
        raise BadInput(f"{where}: limits must be a mapping of params / acts to {{max: ..., min: ...}}")
    out = []
    for stat, sides in limits.items():
        if stat not in LIMIT_STATS:
            raise BadInput(f"{where}: limits: unknown key {stat!r} (allowed: {', '.join(LIMIT_STATS)}; "
                           f"flops ranges go under `complexity`)")
        if sides is not None and not isinstance(sides, dict):
            raise BadInput(f"{where}: limits: {stat} must be a mapping of max / min to a bound")
        for side, terms in (sides or {}).items():
            if side not in LIMIT_SIDES:
                raise BadInput(f"{where}: limits: {stat}: unknown key {side!r} (allowed: {', '.join(LIMIT_SIDES)})")
            if terms is not None:
                out.append(_limit(stat, side, terms, f"{where}: limits: {stat}: {side}"))
    return tuple(out)


def _limit(stat: str, side: str, terms, label: str) -> Limit:
    """One bound const + coef * F ** power; label names the file and key in messages."""
    unknown = [k for k in terms if k not in LIMIT_TERMS] if isinstance(terms, dict) else []
    if unknown:
        raise BadInput(f"{label}: unknown key {unknown[0]!r} (allowed: {', '.join(LIMIT_TERMS)})")
    if not isinstance(terms, dict) or not ("const" in terms or "coef" in terms):
        raise BadInput(f"{label} must be a mapping of const and / or coef (power optional), as in "
                       f"{{const: 3M, coef: 5.5M, power: 1}}; got {terms!r}")
    return Limit(stat, side, **{k: _term(v, f"{label}: {k}") for k, v in terms.items()})


def _term(value, label: str) -> float:
    """A limit's number: >= 0 and finite, written as a number or a quantity such as 5.5M."""
    if isinstance(value, str):
        try:
            value = parse_quantity(value)
        except BadInput as e:
            raise BadInput(f"{label}: {e}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise BadInput(f"{label} must be a number >= 0 (or a quantity such as 5.5M), got {value!r}")
    return float(value)


def _training(training, where: str) -> tuple[Param, ...]:
    """`training: {lr: DIST, wd: DIST}`: settings drawn per model like parameters (not per stage, not tied);
    each model's values go to models.parquet and `dsd train` uses them."""
    if training is None:
        return ()
    if not isinstance(training, dict):
        raise BadInput(f"{where}: training must be a mapping of {' and '.join(TRAINING_PARAMS)} to distributions")
    unknown = [k for k in training if k not in TRAINING_PARAMS]
    if unknown:
        raise BadInput(f"{where}: training: unknown setting {unknown[0]!r} (allowed: {', '.join(TRAINING_PARAMS)})")
    parsed = tuple(_param(name, d, f"{where}: training", False) for name, d in training.items())
    for p in parsed:
        if p.per_stage or p.distribution == TIED:
            raise BadInput(f"{where}: training: {p.name!r} is drawn once per model (no per_stage, no same_as)")
    return parsed


def _short(data: dict, where: str) -> str:
    short = str(data.get("short") or re.sub(r"[^a-z0-9._-]+", "-", str(data["name"]).lower()).strip("-."))
    if not SHORT_NAME.fullmatch(short):
        raise BadInput(f"{where}: short {short!r} is not a plain folder name "
                       f"(letters, digits, '-', '_', '.'; not starting with '.')")
    return short


def _check_ties(params: tuple[Param, ...], where: str) -> None:
    """Each `same_as` names an untied parameter of the space whose values the tied one can take."""
    by_name = {p.name: p for p in params}
    for p in params:
        if p.same_as is None:
            continue
        target = by_name.get(p.same_as) if isinstance(p.same_as, str) else None
        label = f"{where}: parameter {p.name!r}: same_as"
        if target is None:
            raise BadInput(f"{label} names no parameter of this space: {p.same_as!r} (known: {', '.join(by_name)})")
        if target.same_as is not None:
            raise BadInput(f"{label} {target.name!r}, which is tied itself; name the parameter it follows")
        check_lowest(p.name, target.lowest(), f"{label} {target.name!r}: its lowest value")


def space_from_mapping(data: dict, where: str = "space") -> Space:
    """Validate a merged space mapping; every problem is a one-line BadInput naming the file and key."""
    for key in ("name", "network", "parameters"):
        if key not in data:
            raise BadInput(f"{where}: missing key {key!r}")
    net = _network(data["network"], where)
    rule = data.get("rule")
    if rule is not None and (not isinstance(rule, dict) or rule.get("type") not in RULES):
        raise BadInput(f"{where}: rule: type must be one of {', '.join(RULES)}")
    if rule is not None and (not isinstance(rule.get("quantum", 8), int) or rule.get("quantum", 8) < 1):
        raise BadInput(f"{where}: rule: quantum must be a positive integer")
    regnet = rule is not None
    expected = REGNET_PARAMS if regnet else STAGE_PARAMS
    params = data["parameters"]
    if not isinstance(params, dict):
        raise BadInput(f"{where}: `parameters` must be a mapping")
    for name in params:
        if name not in expected:
            raise BadInput(f"{where}: unknown parameter {name!r} (allowed: {', '.join(expected)})")
    missing = [n for n in expected if n not in params]
    if missing:
        raise BadInput(f"{where}: missing parameter {missing[0]!r}")
    parsed = tuple(_param(n, params[n], where, regnet) for n in expected)
    _check_ties(parsed, where)

    order = data.get("non_decreasing") or []
    if not isinstance(order, list):
        raise BadInput(f"{where}: non_decreasing must be a list of per-stage parameter names")
    for name in order:
        if regnet or name not in params or not _param(name, params[name], where, regnet).draws_per_stage:
            raise BadInput(f"{where}: non_decreasing: {name!r} is not a per-stage, unshared, drawn parameter")
    if data.get("regime") is not None and not isinstance(data["regime"], str):
        raise BadInput(f"{where}: regime must be a regime name")
    return Space(name=str(data["name"]), short=_short(data, where), description=str(data.get("description", "")),
                 network=net, params=parsed, non_decreasing=tuple(order), rule=rule, regime=data.get("regime"),
                 complexity=_complexity(data.get("complexity"), where), limits=_limits(data.get("limits"), where),
                 training=_training(data.get("training"), where), source=data)
