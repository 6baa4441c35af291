"""The NDS data ("On Network Design Spaces for Visual Recognition", facebookresearch/nds): one JSON file
per design space, a list of jobs or groups of them ({"top": [...], "mid": [...]} for the re-runs).

A job: job_id, rng_seed, params, flops, net, optim (base_lr, wd, max_ep), min_test_top1, test_ep_top1
(top-1 error in % after each epoch) and train_ep_loss, each of max_ep entries in the published files (a
shorter test_ep_top1 is a job that had not finished: imported untrained). `net` lists per stage ds, ws,
ss, bot_muls and num_gs, where index 0 is the stem (its width and stride) and num_gs counts groups, so a
stage's group width is ws * bot_muls / num_gs. Files whose name ends in _in are ImageNet, the others CIFAR-10.

The cell-based spaces (DARTS, ENAS, NASNet, Amoeba, PNAS) describe a network by a genotype; dsd's
models are stage-based, so those files are refused.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from dsd.design.regimes import Regime, get_regime
from dsd.design.spec import ModelSpec
from dsd.errors import BadInput
from dsd.importers.jobs import Job, curve, finished, number, numbers, section
from dsd.importers.runs import Source, default_out

BLOCKS = {"res_bottleneck_block": "X", "res_basic_block": "R", "double_plain_block": "V"}
STEM_BY_STRIDE = {1: "cifar", 2: "simple", 4: "resnet"}  # the stem's total stride, ss[0]
REGIMES = ("cifar", "imagenet")


def read_nds(path: Path, regime: str | None = None) -> tuple[Source, Regime, list[Job]]:
    """The file's jobs under its regime (cifar, or imagenet for a name ending in _in; `regime` overrides);
    BadInput naming the file and job for the first one that cannot be imported."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BadInput(f"{path}: cannot read it ({e.strerror or e})") from None
    try:
        parsed = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadInput(f"{path}: not JSON ({getattr(e, 'msg', e)}, line {getattr(e, 'lineno', '?')})") from None
    base = _base_regime(path, regime)
    jobs = [_job(job, path.name, group or path.stem, _label(job, group, i), base)
            for group, listed in _groups(parsed, path) for i, job in enumerate(listed)]
    source = Source("nds", path.name, hashlib.sha256(data).hexdigest(), default_out("nds", path.stem))
    return source, base, jobs


def _base_regime(path: Path, regime: str | None) -> Regime:
    name = regime or ("imagenet" if path.stem.endswith("_in") else "cifar")
    if name not in REGIMES:
        raise BadInput(f"--regime {name}: NDS data is {' or '.join(REGIMES)}")
    return get_regime(name)


def _groups(parsed, path: Path) -> list[tuple[str | None, list]]:
    if isinstance(parsed, list):
        return [(None, parsed)]
    if isinstance(parsed, dict) and parsed and all(isinstance(v, list) for v in parsed.values()):
        return list(parsed.items())
    raise BadInput(f"{path}: not NDS data (a list of jobs, or named lists of them such as "
                   f'{{"top": [...], "mid": [...]}})')


def _label(job, group: str | None, i: int) -> str:
    """'job 4711 (index 3)', 'job 4711 (top[3])', or 'job at index 3' when it has no job_id."""
    index = f"{group}[{i}]" if group else f"index {i}"
    job_id = job.get("job_id") if isinstance(job, dict) else None
    return f"job {job_id} ({index})" if job_id is not None else f"job at {index}"


def _job(job, file: str, group: str, label: str, base: Regime) -> Job:
    where = f"{file}: {label}"
    if not isinstance(job, dict):
        raise BadInput(f"{where}: not a job (a mapping)")
    net = section(job, "net", where)
    if "genotype" in net:
        raise BadInput(f"{where}: a cell-based network (net.genotype: the DARTS, ENAS, NASNet, Amoeba and PNAS "
                       f"spaces) is out of scope; dsd imports the stage-based ResNet, ResNeXt and Vanilla spaces")
    spec = _spec(net, f"{where}: net", base)
    optim = section(job, "optim", where)
    settings = {"lr": number(optim, "base_lr", f"{where}: optim"),
                "wd": number(optim, "wd", f"{where}: optim", positive=False),
                "epochs": number(optim, "max_ep", f"{where}: optim", integer=True),
                "train_seed": number(job, "rng_seed", where, integer=True, positive=False, default=None)}
    counts = {k: number(job, k, where, default=None) for k in ("flops", "params")}
    errors = curve(job, "test_ep_top1", where)
    losses = curve(job, "train_ep_loss", where, required=False)
    if len(errors) > settings["epochs"]:
        raise BadInput(f"{where}: test_ep_top1 has {len(errors)} entries, more than the "
                       f"{settings['epochs']} epochs of optim.max_ep")
    if losses and len(losses) != len(errors):
        raise BadInput(f"{where}: train_ep_loss has {len(losses)} entries and test_ep_top1 {len(errors)}; NDS "
                       f"records both once per epoch")
    # Fewer test errors than max_ep: the job stopped before its last epoch (still training when the file was
    # written), so it comes in as an untrained model, as an unfinished pycls job does.
    outcome = finished(errors, losses) if len(errors) == settings["epochs"] else None
    return Job(label, spec, group, {k: v for k, v in counts.items() if v is not None}, settings, outcome)


def _stages(net: dict, key: str, where: str, k: int, integer: bool) -> list:
    """A per-stage list of net (stem first, then k - 1 stages) without its stem entry."""
    values = net.get(key)
    if not isinstance(values, list) or len(values) != k:
        raise BadInput(f"{where}: {key} must list {k} values (the stem's, then one per stage), got {str(values)[:40]}")
    return numbers({key: values[1:]}, key, where, integer=integer)


def _spec(net: dict, where: str, base: Regime) -> ModelSpec:
    block = BLOCKS.get(net.get("block_type"))
    if block is None:
        raise BadInput(f"{where}: block_type {net.get('block_type')!r} is not one of {', '.join(BLOCKS)}")
    widths = numbers(net, "ws", where, integer=True)
    strides = numbers(net, "ss", where, integer=True, length=len(widths))
    if len(widths) < 2:
        raise BadInput(f"{where}: ws lists only the stem; a network needs at least one stage after it")
    depths = _stages(net, "ds", where, len(widths), integer=True)
    stem = STEM_BY_STRIDE.get(strides[0])
    if stem is None:
        raise BadInput(f"{where}: a stem of stride {strides[0]} (ss[0]) has no dsd equivalent "
                       f"(1: cifar, 2: simple, 4: resnet)")
    b, g = _groups_of(net, where, widths) if block == "X" else ([1.0] * len(depths), [1] * len(depths))
    return ModelSpec(depths=tuple(depths), widths=tuple(widths[1:]), bottleneck_ratios=tuple(b),
                     group_widths=tuple(g), strides=tuple(strides[1:]), stem=stem, stem_width=widths[0],
                     block=block, in_channels=base.in_channels, num_classes=base.num_classes,
                     resolution=base.resolution)


def _groups_of(net: dict, where: str, widths: list[int]) -> tuple[list[float], list[int]]:
    """dsd's bottleneck ratios b = 1 / bot_mul and group widths w_b / num_gs of a bottleneck network,
    with dsd's own rounding of the bottleneck width w_b (as the built model and the counts use it)."""
    muls = _stages(net, "bot_muls", where, len(widths), integer=False)
    counts = _stages(net, "num_gs", where, len(widths), integer=True)
    ratios, group_widths = [], []
    for i, (w, mul, n) in enumerate(zip(widths[1:], muls, counts)):
        w_b = int(np.rint(w / (1 / mul)))
        if w_b % n:
            raise BadInput(f"{where}: stage {i + 1}'s bottleneck width {w_b} (ws x bot_muls) does not split "
                           f"into num_gs = {n} groups")
        ratios.append(1 / mul)
        group_widths.append(w_b // n)
    return ratios, group_widths
