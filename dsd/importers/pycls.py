"""pycls sweeps (facebookresearch/pycls, tools/sweep_*.py): SWEEP_DIR/cfgs/NAME.yaml, one config per job,
logs/NAME/stdout.log as each job trains, and sweep.json once collected (dsd.importers.pycls_logs).

A config's MODEL.TYPE anynet (ANYNET: per-stage DEPTHS, WIDTHS, STRIDES, BOT_MULS, GROUP_WS) or regnet
(REGNET: DEPTH, W0, WA, WM, GROUP_W, BOT_MUL, STRIDE) maps onto a ModelSpec: stems res_stem_cifar,
simple_stem_in, res_stem_in -> cifar, simple, resnet; blocks res_bottleneck_block, res_basic_block,
vanilla_block -> X (Y with SE_ON), R, V; pycls's bottleneck multiplier is 1 / dsd's ratio b. An AnyNet is
taken as written (pycls applies no compatibility step to it), a RegNet through the paper's rule and
compatibility step as dsd samples it. Keys a config leaves out take pycls's defaults.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

from dsd.design.regimes import Regime, get_regime
from dsd.design.regnet import regnet_stages
from dsd.design.spec import ModelSpec, make_spec
from dsd.errors import BadInput
from dsd.importers.jobs import Job, number, numbers
from dsd.importers.pycls_logs import Reader, Record, read_records
from dsd.importers.runs import Source, default_out

STEMS = {"res_stem_cifar": "cifar", "simple_stem_in": "simple", "res_stem_in": "resnet"}
BLOCKS = {"res_bottleneck_block": "X", "res_basic_block": "R", "vanilla_block": "V"}
ACTIVATIONS = {"relu": "relu", "silu": "silu", "swish": "silu"}
DATASETS = {"cifar10": "cifar", "imagenet": "imagenet"}  # TRAIN.DATASET -> dsd regime
COMMON = {"STEM_TYPE": "simple_stem_in", "STEM_W": 32, "BLOCK_TYPE": "res_bottleneck_block", "SE_ON": False,
          "SE_R": 0.25, "HEAD_W": 0}
DEFAULTS = {"ANYNET": COMMON, "REGNET": {**COMMON, "STRIDE": 2, "DEPTH": 10, "W0": 32, "WA": 5.0, "WM": 2.5,
                                         "GROUP_W": 16, "BOT_MUL": 1.0}}
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_pycls(folder: Path) -> tuple[Source, Regime, list[Job]]:
    """Every job of the sweep (a config, a log or a sweep.json entry), in name order; a job whose last
    epoch is not tested yet has no outcome (unfinished)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInput(f"{folder}: no such sweep folder")
    reader = Reader(folder)
    records = read_records(reader)
    cfg_files = {p.stem: p for p in sorted((folder / "cfgs").glob("*.yaml"))}
    names = sorted(set(cfg_files) | set(records))
    if not names:
        raise BadInput(f"{folder}: not a pycls sweep (no cfgs/*.yaml, logs/*/stdout.log or sweep.json)")
    name = folder.resolve().name
    jobs, inputs = [], []
    for job_name in names:
        where = f"{name}: job {job_name}"
        cfg = _load_cfg(reader, cfg_files[job_name]) if job_name in cfg_files else records[job_name].cfg
        if not isinstance(cfg, dict):
            raise BadInput(f"{where}: no config (neither cfgs/{job_name}.yaml nor a cfg record in its log)")
        job, seen = _job(job_name, cfg, records.get(job_name, Record()), name, where)
        jobs.append(job)
        inputs.append(seen)
    source = Source("pycls", name, reader.digest.hexdigest(), default_out("pycls", name))
    return source, _regime(inputs, name), jobs


def _load_cfg(reader: Reader, path: Path) -> dict:
    try:
        cfg = yaml.load(reader.text(path), Loader=LOADER)
    except yaml.YAMLError as e:
        raise BadInput(f"{path}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(cfg, dict):
        raise BadInput(f"{path}: not a pycls config (a mapping)")
    return cfg


def _part(cfg: dict, key: str, where: str) -> dict:
    value = cfg.get(key) or {}
    if not isinstance(value, dict):
        raise BadInput(f"{where}: {key} must be a mapping")
    return value


def _job(name: str, cfg: dict, record: Record, group: str, where: str) -> tuple[Job, tuple]:
    """The job, and its (dataset, resolution, classes) for the run's regime."""
    model, train, optim = (_part(cfg, k, where) for k in ("MODEL", "TRAIN", "OPTIM"))
    kind = str(model.get("TYPE", "")).lower()
    if kind not in ("anynet", "regnet"):
        raise BadInput(f"{where}: MODEL.TYPE {kind!r} is not imported (anynet and regnet are)")
    dataset = str(train.get("DATASET", "")).lower()
    if dataset not in DATASETS:
        raise BadInput(f"{where}: TRAIN.DATASET {dataset!r}: dsd imports {' and '.join(DATASETS)} sweeps")
    activation = ACTIVATIONS.get(str(model.get("ACTIVATION_FUN", "relu")).lower())
    if activation is None:
        raise BadInput(f"{where}: MODEL.ACTIVATION_FUN {model['ACTIVATION_FUN']!r} has no dsd equivalent")
    net = {"in_channels": 3, "activation": activation,
           "num_classes": number(model, "NUM_CLASSES", f"{where}: MODEL", integer=True, default=10),
           "resolution": number(train, "IM_SIZE", f"{where}: TRAIN", integer=True, default=224)}
    part = {**DEFAULTS[kind.upper()], **_part(cfg, kind.upper(), where)}
    spec = (_anynet if kind == "anynet" else _regnet)(part, f"{where}: {kind.upper()}", net)
    settings = {"lr": number(optim, "BASE_LR", where, default=0.1),
                "wd": number(optim, "WEIGHT_DECAY", where, positive=False, default=5e-4),
                "epochs": number(optim, "MAX_EPOCH", where, integer=True, default=200),
                "batch_size": number(train, "BATCH_SIZE", where, integer=True, default=128),
                "warmup_epochs": number(optim, "WARMUP_EPOCHS", where, positive=False, default=0.0),
                "zero_init_residual": bool(_part(cfg, "BN", where).get("ZERO_INIT_FINAL_GAMMA", False)),
                "train_seed": number(cfg, "RNG_SEED", where, integer=True, positive=False, default=1)}
    job = Job(f"job {name}", spec, group, record.counts, settings, record.result())
    return job, (dataset, net["resolution"], net["num_classes"])


def _network(p: dict, where: str) -> tuple[str, str, float]:
    """(stem, block, se_ratio) of an ANYNET or REGNET section."""
    stem, block = STEMS.get(p["STEM_TYPE"]), BLOCKS.get(p["BLOCK_TYPE"])
    if stem is None:
        raise BadInput(f"{where}: STEM_TYPE {p['STEM_TYPE']!r} has no dsd equivalent ({', '.join(STEMS)} do)")
    if block is None:
        raise BadInput(f"{where}: BLOCK_TYPE {p['BLOCK_TYPE']!r} has no dsd equivalent ({', '.join(BLOCKS)} do)")
    if number(p, "HEAD_W", where, integer=True, positive=False):
        raise BadInput(f"{where}: HEAD_W {p['HEAD_W']}: a conv in the head has no dsd equivalent")
    se_ratio = number(p, "SE_R", where) if p["SE_ON"] and block == "X" else 0.0
    return stem, "Y" if se_ratio else block, se_ratio


def _anynet(p: dict, where: str, net: dict) -> ModelSpec:
    stem, block, se_ratio = _network(p, where)
    depths = numbers(p, "DEPTHS", where, integer=True)
    k = len(depths)
    widths = numbers(p, "WIDTHS", where, integer=True, length=k)
    strides = numbers(p, "STRIDES", where, integer=True, length=k)
    if block in ("X", "Y"):
        b = [1 / m for m in numbers(p, "BOT_MULS", where, length=k)]
        g = numbers(p, "GROUP_WS", where, integer=True, length=k)
        _check_groups(widths, b, g, where)
    else:
        b, g = [1.0] * k, [1] * k
    return ModelSpec(depths=tuple(depths), widths=tuple(widths), bottleneck_ratios=tuple(b), group_widths=tuple(g),
                     strides=tuple(strides), stem=stem, stem_width=number(p, "STEM_W", where, integer=True),
                     block=block, se_ratio=se_ratio, **net)


def _check_groups(widths: list[int], ratios: list[float], group_widths: list[int], where: str) -> None:
    """pycls builds a stage's 3x3 conv with w_b // g groups: there must be at least one, dividing w_b."""
    for i, (w, b, g) in enumerate(zip(widths, ratios, group_widths)):
        w_b = int(np.rint(w / b))
        if w_b // g == 0 or w_b % (w_b // g):
            raise BadInput(f"{where}: stage {i + 1}: a bottleneck width of {w_b} makes no group conv of group "
                           f"width {g}")


def _regnet(p: dict, where: str, net: dict) -> ModelSpec:
    stem, block, se_ratio = _network(p, where)
    rule = {k.lower(): number(p, k, where, positive=k != "WA") for k in ("W0", "WA", "WM")}
    if rule["wm"] <= 1:
        raise BadInput(f"{where}: WM {rule['wm']:g} must be above 1")
    depths, widths = regnet_stages(number(p, "DEPTH", where, integer=True), rule["w0"], rule["wa"], rule["wm"])
    k = len(depths)
    bottleneck = block in ("X", "Y")
    b = [1 / number(p, "BOT_MUL", where) if bottleneck else 1.0] * k
    g = [number(p, "GROUP_W", where, integer=True) if bottleneck else 1] * k
    return make_spec(depths, widths, b, g, [number(p, "STRIDE", where, integer=True)] * k, stem=stem,
                     stem_width=number(p, "STEM_W", where, integer=True), block=block, se_ratio=se_ratio,
                     regnet=rule, **net)


def _regime(inputs: list[tuple], sweep: str) -> Regime:
    """The dataset's regime at the sweep's usual resolution and class count (imagenet_192px at 192 px)."""
    datasets = sorted({d for d, _, _ in inputs})
    if len(datasets) > 1:
        raise BadInput(f"{sweep}: the sweep mixes datasets ({', '.join(datasets)}); import one dataset per run")
    base = get_regime(DATASETS[datasets[0]])
    resolution = Counter(r for _, r, _ in inputs).most_common(1)[0][0]
    classes = Counter(c for _, _, c in inputs).most_common(1)[0][0]
    name = base.name if resolution == base.resolution else f"{base.name}_{resolution}px"
    return replace(base, name=name, resolution=resolution, num_classes=classes)
