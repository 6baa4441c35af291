"""Sources in the formats `dsd import` reads, written from known numbers, for the tests and bench/scale.py.

    make_nds_jobs(n, seed)        NDS jobs (ResNeXt-style, CIFAR), curves of 100 epochs like the real files
    pycls_cfg(...)                a pycls config of an AnyNet or RegNet, as tools/sweep_setup.py writes one
    write_pycls_sweep(root, jobs) cfgs/NAME.yaml and logs/NAME/stdout.log, or the collected sweep.json
    direct_run(folder, rows, errors, curves)   a run written without the importer, from the same numbers

Each source's flops and params are dsd's counts of the network it describes (counted in batches, which
test_import checks against dsd.design.complexity one model at a time), except where a test changes one
on purpose.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from dsd.importers.counts import batched
from dsd.design.spec import ModelSpec, spec_to_row
from synthetic_runs import write_run

STEM = {"cifar": 1, "simple": 2, "resnet": 4}  # NDS's ss[0]


def nds_spec(net: dict, resolution: int = 32, num_classes: int = 10) -> ModelSpec:
    """The network an NDS `net` describes, worked out by hand: index 0 is the stem; bottleneck width
    w * bot_mul split into num_gs groups."""
    block = {"res_bottleneck_block": "X", "res_basic_block": "R", "double_plain_block": "V"}[net["block_type"]]
    widths = net["ws"][1:]
    if block == "X":
        b = [1 / m for m in net["bot_muls"][1:]]
        g = [int(w * m) // n for w, m, n in zip(widths, net["bot_muls"][1:], net["num_gs"][1:])]
    else:
        b, g = [1.0] * len(widths), [1] * len(widths)
    stem = {v: k for k, v in STEM.items()}[net["ss"][0]]
    return ModelSpec(depths=tuple(net["ds"][1:]), widths=tuple(widths), bottleneck_ratios=tuple(b),
                     group_widths=tuple(g), strides=tuple(net["ss"][1:]), stem=stem, stem_width=net["ws"][0],
                     block=block, num_classes=num_classes, resolution=resolution)


def _curves(rng, final: float, epochs: int) -> tuple[list, list, list]:
    """Test error falling from near chance to `final` (not always its minimum, as in real runs), training
    loss and error falling with it."""
    t = np.linspace(0, 1, epochs)
    test = final + (88 - final) * np.exp(-6 * t) + rng.normal(0, 0.3, epochs)
    test[-1] = final
    loss = 2.3 * np.exp(-4 * t) + 0.02
    return [round(float(v), 3) for v in test], [round(float(v), 4) for v in loss], \
        [round(float(v), 3) for v in test * 0.6]


def _net(rng) -> dict:
    ds = [1] + [int(v) for v in rng.integers(1, 9, 3)]
    ws = [16] + [int(v) for v in rng.choice([16, 32, 64, 128, 256], 3)]
    muls = [1.0] + [float(v) for v in rng.choice([1.0, 0.5, 0.25], 3)]
    groups = [1] + [int(rng.choice([n for n in (1, 2, 4, 8) if int(w * m) % n == 0])) for w, m in zip(ws[1:], muls[1:])]
    return {"block_type": "res_bottleneck_block", "ds": ds, "ws": ws, "ss": [1, 1, 2, 2], "bot_muls": muls,
            "num_gs": groups}


def make_nds_jobs(n: int, seed: int = 0, epochs: int = 100) -> list[dict]:
    """n NDS jobs of a ResNeXt-style CIFAR space: error falls with flops, plus noise."""
    rng = np.random.default_rng(seed)
    nets = [_net(rng) for _ in range(n)]
    flops, params = (batched([nds_spec(net) for net in nets])[k] for k in ("flops", "params"))
    jobs = []
    for i, net in enumerate(nets):
        counts = {"flops": int(flops[i]), "params": int(params[i])}
        final = round(float(4 + 12 * np.exp(-counts["flops"] / 6e7) + rng.normal(0, 0.5)), 3)
        test, loss, train = _curves(rng, final, epochs)
        jobs.append({"job_id": 1000 + i, "rng_seed": 1, "params": counts["params"], "flops": counts["flops"],
                     "net": net, "optim": {"base_lr": 0.1, "wd": 5e-4, "max_ep": epochs, "lr_policy": "cos"},
                     "min_test_top1": min(test), "test_ep_top1": test, "train_ep_loss": loss, "train_ep_top1": train})
    return jobs


def resnet56_job(job_id: int = 56, epochs: int = 100) -> dict:
    """ResNet-56 (CIFAR) as an NDS job, with the complexity pycls's counting rules give it: 3x3 convs,
    BN, 1x1 projection shortcuts where the shape changes, FC head."""
    test, loss, train = _curves(np.random.default_rng(56), 6.2, epochs)
    net = {"block_type": "res_basic_block", "ds": [1, 9, 9, 9], "ws": [16, 16, 32, 64], "ss": [1, 1, 2, 2],
           "bot_muls": [1, 1, 1, 1], "num_gs": [1, 1, 1, 1]}
    return {"job_id": job_id, "rng_seed": 1, "params": 855_770, "flops": 125_747_850, "net": net,
            "optim": {"base_lr": 0.1, "wd": 5e-4, "max_ep": epochs}, "min_test_top1": min(test),
            "test_ep_top1": test, "train_ep_loss": loss, "train_ep_top1": train}


def pycls_cfg(model: dict, kind: str = "anynet", epochs: int = 3, lr: float = 0.1, dataset: str = "cifar10",
              im_size: int = 32) -> dict:
    """A pycls config: MODEL.TYPE kind with the ANYNET / REGNET section `model`, and its training."""
    return {"MODEL": {"TYPE": kind, "NUM_CLASSES": 10}, kind.upper(): model,
            "OPTIM": {"BASE_LR": lr, "MAX_EPOCH": epochs, "WEIGHT_DECAY": 5e-4, "LR_POLICY": "cos"},
            "TRAIN": {"DATASET": dataset, "IM_SIZE": im_size, "BATCH_SIZE": 128},
            "TEST": {"DATASET": dataset, "IM_SIZE": im_size}, "BN": {"ZERO_INIT_FINAL_GAMMA": False}, "RNG_SEED": 1}


def _stats(kind: str, **values) -> str:
    return "[trainer.py:  62]: json_stats: " + json.dumps({"_type": kind, **values}, sort_keys=True)


def pycls_log(cfg: dict, counts: dict, errors: list, losses: list, epochs: int) -> str:
    """A stdout.log as pycls writes it: the config, the complexity, per epoch iteration lines, the
    training epoch and the test epoch (len(errors) < epochs: a job still running)."""
    lines = ["[trainer.py:  41]: Config:", yaml.safe_dump(cfg), _stats("cfg", **cfg), _stats("complexity", **counts)]
    for e, (err, loss) in enumerate(zip(errors, losses), 1):
        lines.append(_stats("train_iter", epoch=f"{e}/{epochs}", iter="10/390", loss=loss + 0.1, top1_err=50.0))
        lines.append(_stats("train_epoch", epoch=f"{e}/{epochs}", loss=loss, top1_err=err * 0.6, lr=0.1, mem=1000))
        lines.append(_stats("test_epoch", epoch=f"{e}/{epochs}", top1_err=err, top5_err=err / 5,
                            min_top1_err=min(errors[:e]), mem=1000))
    return "\n".join(lines) + "\n"


def sweep_entry(name: str, cfg: dict, counts: dict, errors: list, losses: list, epochs: int) -> dict:
    """One job of sweep.json as tools/sweep_collect.py writes it (curves per statistic, epochs as i/m)."""
    index = list(range(1, len(errors) + 1))
    return {"cfg": cfg, "complexity": counts, "log_file": f"sweeps/demo/logs/{name}/stdout.log",
            "err_file": f"sweeps/demo/logs/{name}/stderr.log", "err": "",
            "test_epoch": {"epoch": [f"{e}/{epochs}" for e in index], "epoch_ind": index,
                           "epoch_max": [epochs] * len(index), "top1_err": errors,
                           "min_top1_err": [min(errors[:e]) for e in index]},
            "train_epoch": {"epoch": [f"{e}/{epochs}" for e in index], "loss": losses}}


def write_pycls_sweep(root: Path, jobs: dict, collected: bool = False) -> Path:
    """jobs: {NAME: {"cfg", "counts", "errors", "losses", "epochs", "log": bool}}. Writes cfgs/NAME.yaml
    and, for jobs with a log, logs/NAME/stdout.log, or instead sweep.json when collected."""
    root = Path(root)
    (root / "cfgs").mkdir(parents=True, exist_ok=True)
    entries = []
    for name, job in jobs.items():
        (root / "cfgs" / f"{name}.yaml").write_text(yaml.safe_dump(job["cfg"]))
        if not job.get("log", True):
            continue
        args = (job["cfg"], job["counts"], job["errors"], job["losses"], job["epochs"])
        if collected:
            entries.append(sweep_entry(name, *args))
        else:
            (root / "logs" / name).mkdir(parents=True, exist_ok=True)
            (root / "logs" / name / "stdout.log").write_text(pycls_log(*args))
    if collected:
        (root / "sweep.json").write_text(json.dumps(entries, sort_keys=True))
    return root


def direct_run(folder: Path, specs: list, counts: list[dict], errors: list, curves: list, statuses=None) -> Path:
    """A run of these networks and results written straight from the numbers (no importer); statuses:
    done | untrained per model (default: all done)."""
    rows = [spec_to_row(s, i, "direct", 0, {"acts": 0, **c}) for i, (s, c) in enumerate(zip(specs, counts))]
    return write_run(folder, rows, errors=errors, curves=curves, statuses=statuses,
                     epochs=max(len(c) for c in curves))
