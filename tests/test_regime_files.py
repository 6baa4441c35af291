"""Regimes as YAML files (`--regime NAME|FILE.yaml`): the paper's resolution study at fixed flops, a run
that carries its whole regime, and bad files refused in one line before anything is written."""
from __future__ import annotations

import json
import shutil
from dataclasses import fields, replace

import pyarrow.parquet as pq
import pytest
import yaml

from dsd.design.regime_files import TRAIN_RULES, load_regime, regime_file_names
from dsd.design.regimes import REGIMES, Protocol, get_regime
from dsd.errors import BadInput
from tests.helpers import REPO, dsd

REGIME_DIR = REPO / "spaces" / "regimes"
BUILTIN = {  # the built-in regimes' numbers, written out: files must not move them
    "imagenet": {"name": "imagenet", "resolution": 224, "in_channels": 3, "num_classes": 1000, "dataset": "imagefolder",
                 "stem": None, "strides": None, "flops": [360e6, 400e6], "params": [0, None], "acts": [0, None],
                 "train": {"epochs": 10, "batch_size": 128, "lr": 0.05, "wd": 5e-5, "momentum": 0.9,
                           "warmup_epochs": 0.0, "warmup_factor": 0.1, "zero_init_residual": False,
                           "train_images": None, "eval_images": None}},
    "cifar": {"name": "cifar", "resolution": 32, "in_channels": 3, "num_classes": 10, "dataset": "cifar10",
              "stem": "cifar", "strides": [1, 2, 2, 2], "flops": [120e6, 130e6], "params": [0, None], "acts": [0, None],
              "train": {"epochs": 10, "batch_size": 128, "lr": 0.1, "wd": 5e-4, "momentum": 0.9, "warmup_epochs": 0.5,
                        "warmup_factor": 0.1, "zero_init_residual": False, "train_images": None, "eval_images": None}},
    "fashion": {"name": "fashion", "resolution": 28, "in_channels": 1, "num_classes": 10, "dataset": "fashion-mnist",
                "stem": "simple", "strides": [1, 2, 2, 2], "flops": [2e6, 4e6], "params": [0, None], "acts": [0, None],
                "train": {"epochs": 3, "batch_size": 64, "lr": 0.05, "wd": 5e-4, "momentum": 0.9, "warmup_epochs": 0.5,
                          "warmup_factor": 0.1, "zero_init_residual": False, "train_images": 8000, "eval_images": 2000}},
}


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_built_in_regimes_keep_their_numbers(name):
    assert get_regime(name).as_dict() == BUILTIN[name]
    assert load_regime(name) is get_regime(name) is REGIMES[name]


def test_every_protocol_field_has_a_rule():
    assert set(TRAIN_RULES) == {f.name for f in fields(Protocol)}


@pytest.mark.parametrize("px", [160, 192, 256])
def test_the_resolution_files_are_imagenet_at_another_resolution_by_name_and_by_path(px):
    name = f"imagenet_{px}px"
    assert name in regime_file_names()
    want = replace(REGIMES["imagenet"], name=name, resolution=px)
    assert load_regime(name) == load_regime(name.upper()) == load_regime(str(REGIME_DIR / f"{name}.yaml")) == want
    assert (REGIME_DIR / f"{name}.yaml").read_text().startswith("# ")  # says what it reproduces


def torch_flops(spec) -> int:
    """Multiply-adds of the built module on one input, counted from torch's own layers (no dsd counting)."""
    import torch

    from dsd.design.model import build_model

    total = []

    def hook(module, inputs, out):
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total.append(out[0].numel() * k + (out[0].numel() if module.bias is not None else 0))
        elif isinstance(module, torch.nn.Linear):
            total.append(module.in_features * module.out_features + module.out_features)

    model = build_model(spec).eval()
    for m in model.modules():
        m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(1, spec.in_channels, spec.resolution, spec.resolution))
    return sum(total)


def test_regnetx_at_160_px_is_counted_at_160_px_within_the_band(tmp_path):
    from dsd.design.spec import spec_from_row

    out = tmp_path / "r160"
    dsd("sample", "--space", "RegNetX", "--regime", "imagenet_160px", "--n", "6", "--out", out, check=True)
    rows = pq.read_table(out / "models.parquet").to_pylist()
    assert len(rows) == 6 and {r["resolution"] for r in rows} == {160}
    assert all(360e6 <= r["flops"] <= 400e6 for r in rows)
    r = rows[0]
    stages = ["--depths", ",".join(map(str, r["depths"])), "--widths", ",".join(map(str, r["widths"])),
              "--group-widths", ",".join(map(str, r["group_widths"])),
              "--bottleneck-ratios", ",".join(map(str, r["bottleneck_ratios"])), "--json"]
    at = {how: json.loads(dsd("describe", *stages, *how, check=True).stdout)["flops"]
          for how in [("--resolution", "160"), ("--regime", "imagenet_160px"), ("--resolution", "224")]}
    assert at[("--resolution", "160")] == at[("--regime", "imagenet_160px")] == r["flops"]
    assert at[("--resolution", "224")] > 400e6  # the same stages at 224 px leave the band
    assert torch_flops(spec_from_row(r)) == r["flops"]


def test_a_run_carries_its_whole_regime_and_resamples_unchanged(tmp_path):
    from dsd.design.sampler import sample
    from dsd.design.spaces import load_space
    from dsd.runfolder import read_regime
    from dsd.training.settings import settings_for

    mine = tmp_path / "mine.yaml"
    shutil.copy(REGIME_DIR / "imagenet_160px.yaml", mine)
    out = tmp_path / "run"
    dsd("sample", "--space", "RegNetX", "--regime", mine, "--n", "5", "--out", out, check=True)
    meta = yaml.safe_load((out / "run.yaml").read_text())
    assert meta["regime"] == {**BUILTIN["imagenet"], "name": "imagenet_160px", "resolution": 160}
    before = snapshot(out)
    for regime in (mine, "imagenet_160px"):  # the file, or the shipped one by name: the same regime
        proc = dsd("sample", "--space", "RegNetX", "--regime", regime, "--n", "5", "--out", out, check=True)
        assert "already sampled with these arguments" in proc.stderr
    assert snapshot(out) == before
    mine.unlink()  # without the file, the run still trains and re-samples from run.yaml alone
    regime = read_regime(out)
    assert regime == load_regime("imagenet_160px")
    assert settings_for(regime).data.resolution == 160 and settings_for(regime).lr == 0.05
    drawn = sample(load_space("RegNetX"), regime, 5, 0).rows
    written = pq.read_table(out / "models.parquet").to_pylist()
    assert [{k: w[k] for k in d} for w, d in zip(written, drawn)] == drawn  # the columns sampling fills


def test_a_file_overrides_only_what_it_names(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "short.yaml").write_text(
        "extends: imagenet_160px\nflops: ':300M'\nparams: '1M:3M'\ntrain: {epochs: 2, lr: 0.1, train_images: 512}\n")
    (tmp_path / "tiny.yaml").write_text("name: tiny\nextends: sub/short.yaml\nstrides: [1, 2]\nstem: cifar\n")
    got = load_regime(str(tmp_path / "tiny.yaml"))
    base = REGIMES["imagenet"]
    assert got == replace(base, name="tiny", resolution=160, stem="cifar", strides=(1, 2), flops=(0.0, 300e6),
                          params=(1e6, 3e6), train=replace(base.train, epochs=2, lr=0.1, train_images=512))
    assert load_regime(str(tmp_path / "sub" / "short.yaml")).name == "short"  # its own name: the file's stem
    (tmp_path / "own.yaml").write_text("name: own\nresolution: 64\nin_channels: 3\nnum_classes: 100\n"
                                       "dataset: synthetic\nflops: 50M\n")
    own = load_regime(str(tmp_path / "own.yaml"))
    assert (own.resolution, own.num_classes, own.flops, own.train, own.stem) == (64, 100, (0.0, 50e6), Protocol(), None)


@pytest.mark.parametrize("text,expected", [
    ("extends: imagenet\nresolutoin: 160\n", "bad.yaml: unknown key 'resolutoin'"),
    ("extends: imagenet\nresolution: -160\n", "bad.yaml: resolution must be a positive integer, got -160"),
    ("extends: imagenet\nflops: '400M:360M'\n", "bad.yaml: flops 400M:360M: low 400M is above high 360M"),
    ("extends: imagenet\nflops: 360M:\n", "bad.yaml: line 2, column 12: YAML syntax error"),
])
def test_a_bad_regime_file_exits_2_naming_the_file_and_key(tmp_path, text, expected):
    (tmp_path / "bad.yaml").write_text(text)
    proc = dsd("sample", "--space", "RegNetX", "--regime", tmp_path / "bad.yaml", "--n", "2", "--out", tmp_path / "out")
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("text,expected", [
    ("extends: imagenet\nflops: lots\n", "flops lots: 'lots' is not a quantity"),
    ("extends: imagenet\nparams: [1, 2]\n", "params must be a range"),
    ("extends: imagenet\nin_channels: 1.5\n", "in_channels must be a positive integer"),
    ("extends: imagenet\nnum_classes: true\n", "num_classes must be a positive integer"),
    ("extends: imagenet\nstrides: [2, 0]\n", "strides must be a list of positive integers"),
    ("extends: imagenet\nstem: weird\n", "stem must be one of simple, cifar, resnet"),
    ("extends: imagenet\ndataset: ''\n", "dataset must be a non-empty string"),
    ("extends: imagenet\nname: cifar\n", "name 'cifar' is a built-in regime's"),
    ("extends: imagenet\ntrain: {epochs: 3, optimizer: adam}\n", "train: unknown key 'optimizer'"),
    ("extends: imagenet\ntrain: {lr: -0.1}\n", "train: lr must be a positive number"),
    ("extends: imagenet\ntrain: {zero_init_residual: 1}\n", "train: zero_init_residual must be true or false"),
    ("extends: imagenet\ntrain: [epochs]\n", "train must be a mapping"),
    ("extends: imagenet\ntrain: {warmup_epochs: 20}\n", "train: warmup_epochs 20 is more than epochs 10"),
    ("extends: fashion\ntrain: {train_images: 10}\n", "train: train_images 10 is less than one batch of 64"),
    ("name: half\nresolution: 32\n", "missing key 'in_channels'"),
    ("extends: mars\n", "extends: unknown regime 'mars'"),
    ("extends: bad.yaml\n", "`extends` makes a cycle: bad.yaml -> bad.yaml"),
])
def test_every_field_is_checked_in_one_line_naming_the_file(tmp_path, text, expected):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(BadInput) as e:
        load_regime(str(tmp_path / "bad.yaml"))
    assert str(e.value).startswith(str(tmp_path / "bad.yaml")) and expected in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_names_and_missing_files_are_refused():
    with pytest.raises(BadInput, match=r"unknown regime 'mars' \(known: imagenet, cifar, fashion; files: imagenet_160px"):
        load_regime("mars")
    with pytest.raises(BadInput, match="regime file nosuch.yaml does not exist"):
        load_regime("nosuch.yaml")


def test_spaces_and_zoo_take_regime_files():
    listed = json.loads(dsd("spaces", "--json", check=True).stdout)
    assert [r["name"] for r in listed["regimes"]] == ["imagenet", "cifar", "fashion"]
    assert [r["name"] for r in listed["regime_files"]] == ["imagenet_160px", "imagenet_192px", "imagenet_256px"]
    assert [r["resolution"] for r in listed["regime_files"]] == [160, 192, 256]
    assert "regime files (spaces/regimes/): imagenet_160px" in dsd("spaces", check=True).stderr
    zoo = {px: json.loads(dsd("zoo", "--models", "RegNetX-400MF", "--regime", rg, "--json", check=True).stdout)
           for px, rg in ((224, "imagenet"), (160, "imagenet_160px"))}
    assert zoo[160]["regime"] == "imagenet_160px"
    assert zoo[160]["models"][0]["flops"] < zoo[224]["models"][0]["flops"]
