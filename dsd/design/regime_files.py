"""Regime files: a regime written as YAML, like a space, so that a study's input (the paper's "the same
flops at 160, 192, 224 and 256 px") is a small file rather than code.

    # spaces/regimes/imagenet_160px.yaml
    name: imagenet_160px
    extends: imagenet        # a built-in regime, a regime file's name, or a path (relative to this file)
    resolution: 160

Keys: name (default: the file's stem), extends, resolution, in_channels, num_classes, dataset, stem,
strides (null: the space's), flops / params / acts (ranges as for --flops: "360M:400M", ":2M", "1G:")
and `train:`, the Protocol's fields. A file overrides only what it names (under `train:` too); one
without `extends` gives resolution, in_channels, num_classes and dataset. The files of spaces/regimes/
load by name like the built-in regimes (a built-in wins a clash). This lives apart from regimes.py
because it reads files the way spaces.py does, and spaces.py already depends on regimes.py.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from dsd.design.regimes import REGIMES, Protocol, Regime, parse_range
from dsd.design.spaces import _read_yaml, builtin_dir, yaml_file
from dsd.design.spec import STEMS
from dsd.errors import BadInput

REGIMES_DIR = "regimes"  # under the built-in space folder
NEEDED = ("resolution", "in_channels", "num_classes", "dataset")  # what a file without `extends` must give
BANDS = ("flops", "params", "acts")
KEYS = ("name", "extends", *NEEDED, "stem", "strides", *BANDS, "train")


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# Each `train:` field: (test, what the value must be, the type stored); the bounds include those `dsd
# train` checks its options against, so a file cannot hold a protocol that training would refuse.
POSITIVE_INT = (lambda v: _int(v) and v >= 1, "a positive integer", int)
IMAGES = (lambda v: v is None or (_int(v) and v >= 1), "a positive integer or null (all images)", lambda v: v)
TRAIN_RULES = {
    "epochs": POSITIVE_INT,
    "batch_size": POSITIVE_INT,
    "lr": (lambda v: _number(v) and v > 0, "a positive number", float),
    "wd": (lambda v: _number(v) and v >= 0, "a number >= 0", float),
    "momentum": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)", float),
    "warmup_epochs": (lambda v: _number(v) and v >= 0, "a number >= 0", float),
    "warmup_factor": (lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1]", float),
    "zero_init_residual": (lambda v: isinstance(v, bool), "true or false", bool),
    "train_images": IMAGES,
    "eval_images": IMAGES,
}


def regime_file_names() -> list[str]:
    """The regime files shipped in spaces/regimes/, by name (their file stems)."""
    return sorted(p.stem for p in (builtin_dir() / REGIMES_DIR).glob("*.yaml"))


def load_regime(ref: str | Path) -> Regime:
    """A built-in regime by name, a file of spaces/regimes/ by name (case-insensitive), or a regime
    .yaml file: what --regime takes everywhere."""
    if ref in REGIMES:
        return REGIMES[ref]
    return _load_file(_regime_file(str(ref)))


def _regime_file(ref: str, relative_to: Path | None = None) -> Path:
    """The file a regime name or path means (relative_to: the folder of a file that extends it)."""
    named = {n.lower(): builtin_dir() / REGIMES_DIR / f"{n}.yaml" for n in regime_file_names()}
    found = yaml_file(ref, named, relative_to, "regime")
    if found is None:
        raise BadInput(f"unknown regime {ref!r} (known: {', '.join(REGIMES)}; files: "
                       f"{', '.join(regime_file_names())}; or a path to a .yaml file)")
    return found


def _load_file(path: Path, seen: tuple = ()) -> Regime:
    """The regime a file describes, over the one it extends; every problem is one line naming the file
    and the key. seen: the resolved files extending this one (to refuse a cycle)."""
    if path.resolve() in seen:
        raise BadInput(f"{path}: `extends` makes a cycle: "
                       f"{' -> '.join(p.name for p in seen + (path.resolve(),))}")
    data = _read_yaml(path)
    unknown = sorted(set(data) - set(KEYS), key=str)
    if unknown:
        raise BadInput(f"{path}: unknown key {unknown[0]!r} (allowed: {', '.join(KEYS)})")
    changes = {k: _field(path, k, v) for k, v in {"name": path.stem, **data}.items() if k not in ("extends", "train")}
    if "extends" in data:
        base = _parent(path, data["extends"], seen + (path.resolve(),))
    else:
        missing = [k for k in NEEDED if k not in data]
        if missing:
            raise BadInput(f"{path}: missing key {missing[0]!r} (give it, or `extends: imagenet` to inherit it)")
        base = Regime(**{k: changes[k] for k in ("name", *NEEDED)})
    regime = replace(base, **changes, train=_protocol(path, data.get("train"), base.train))
    _check_schedule(path, regime.train)
    return regime


def _parent(path: Path, ref, seen: tuple) -> Regime:
    """The regime a file extends: a built-in, a regime file's name, or a path relative to the file."""
    if not isinstance(ref, str) or not ref.strip():
        raise BadInput(f"{path}: extends must name a regime or a regime file, got {ref!r}")
    if ref in REGIMES:
        return REGIMES[ref]
    try:
        parent = _regime_file(ref, path.parent)
    except BadInput as e:
        raise BadInput(f"{path}: extends: {e}") from None
    return _load_file(parent, seen)


def _field(path: Path, key: str, v):
    """One top-level field, checked, as the Regime stores it."""
    def refuse(must: str):
        raise BadInput(f"{path}: {key} must be {must}, got {v!r}")

    if key in BANDS:
        if not (isinstance(v, str) or _number(v)):
            refuse('a range such as "360M:400M", ":2M" or "1G:" (quoted)')
        return parse_range(str(v), f"{path}: {key}")
    if key == "strides":
        if v is not None and not (isinstance(v, list) and v and all(_int(s) and s >= 1 for s in v)):
            refuse("a list of positive integers, or null (the space's)")
        return tuple(v) if v else None
    if key == "stem":
        if v is not None and v not in STEMS:
            refuse(f"one of {', '.join(STEMS)}, or null (the space's)")
        return v
    if key in ("name", "dataset"):
        if not isinstance(v, str) or not v.strip():
            refuse("a non-empty string")
        if key == "name" and v in REGIMES:
            raise BadInput(f"{path}: name {v!r} is a built-in regime's; give the file's regime its own name")
        return v
    if not (_int(v) and v >= 1):  # resolution, in_channels, num_classes
        refuse("a positive integer")
    return v


def _protocol(path: Path, train, base: Protocol) -> Protocol:
    """The base protocol with the fields a `train:` block names."""
    if train is None:
        return base
    if not isinstance(train, dict):
        raise BadInput(f"{path}: train must be a mapping of protocol fields ({', '.join(TRAIN_RULES)})")
    changes = {}
    for key, v in train.items():
        if key not in TRAIN_RULES:
            raise BadInput(f"{path}: train: unknown key {key!r} (allowed: {', '.join(TRAIN_RULES)})")
        test, must, kind = TRAIN_RULES[key]
        if not test(v):
            raise BadInput(f"{path}: train: {key} must be {must}, got {v!r}")
        changes[key] = kind(v)
    return replace(base, **changes)


def _check_schedule(path: Path, p: Protocol) -> None:
    """The protocol's fields that must agree with each other, as `dsd train` checks them."""
    if p.warmup_epochs > p.epochs:
        raise BadInput(f"{path}: train: warmup_epochs {p.warmup_epochs:g} is more than epochs {p.epochs}")
    if p.train_images is not None and p.train_images < p.batch_size:
        raise BadInput(f"{path}: train: train_images {p.train_images} is less than one batch of {p.batch_size}")
