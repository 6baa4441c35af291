"""The trainer and the data sets, in-process: augmentation, subsets, the protocol, seeds, failure paths."""
from __future__ import annotations

import gzip
import math
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from dsd.training import data as dsd_data
from dsd import runfolder as store
from dsd.training.data import DataRequest, crop_flip, load, locate, read_idx, subset_indices
from dsd.errors import BadInput
from dsd.design.model import build_model
from dsd.design.regimes import get_regime
from dsd.design.spec import spec_from_row
from dsd.training.checkpoints import fingerprint
from dsd.training import loop as dsd_loop
from dsd.training.loop import train_model, train_seed
from dsd.training.settings import settings_for

FASHION_INSTALLED = dsd_data.DEBIAN_FASHION.is_dir()


def synthetic_settings(**kw):
    args = {"epochs": 3, "batch_size": 32, "train_images": 512, "eval_images": 256, **kw}
    return settings_for(get_regime("fashion"), "synthetic", **args)


@pytest.fixture(scope="module")
def specs(tmp_path_factory):
    from conftest import sample_run

    run = sample_run(tmp_path_factory.mktemp("specs") / "run", n=3)
    return [spec_from_row(r) for r in store.read_models(run).to_pylist()]


@pytest.fixture(scope="module")
def synthetic():
    torch.set_num_threads(2)
    return load(locate(synthetic_settings().data))


def test_crop_flip_is_a_per_image_shifted_window_of_the_padded_image():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 2, 6, 5), dtype=torch.uint8, generator=g)
    out = crop_flip(x, 2, True, g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert out.is_contiguous(memory_format=torch.channels_last)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    shifts, flips = set(), 0
    for i in range(len(x)):
        windows = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (False, True)
                   if torch.equal(out[i], (lambda w: w.flip(2) if f else w)(padded[i, :, dy:dy + 6, dx:dx + 5]))]
        assert windows, f"image {i} is not a crop of its padded input"
        shifts.add(windows[0][:2])
        flips += windows[0][2]
    assert len(shifts) > 5 and 10 < flips < 54  # offsets and flips really vary per image


def test_crop_flip_without_padding_only_flips():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (32, 1, 4, 4), dtype=torch.uint8, generator=g)
    out = crop_flip(x, 0, True, g)
    assert all(torch.equal(o, i) or torch.equal(o, i.flip(2)) for o, i in zip(out, x))
    assert crop_flip(x, 0, False, g) is x


def test_subsets_are_fixed_and_recorded(specs, synthetic):
    assert torch.equal(subset_indices(1000, 100), subset_indices(1000, 100))
    assert subset_indices(1000, None) is None and subset_indices(10, 50) is None
    assert (synthetic.train_size, synthetic.eval_size) == (512, 256)
    again = load(locate(synthetic_settings().data))
    assert torch.equal(again.train_x, synthetic.train_x) and torch.equal(again.eval_y, synthetic.eval_y)


def test_read_idx_reads_gzipped_idx_files(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\0\0\x08\x03" + struct.pack(">3i", 2, 3, 4) + arr.tobytes())
    assert np.array_equal(read_idx(path), arr)
    (tmp_path / "bad").write_bytes(b"\1\2\3\4")
    with pytest.raises(BadInput):
        read_idx(tmp_path / "bad")


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(dsd_data, "DEBIAN_FASHION", tmp_path / "none")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("DSD_DATA_DIR", raising=False)
    req = DataRequest("fashion-mnist", 28, 1, 10, data_dir=str(tmp_path), download=False)
    with pytest.raises(BadInput, match="apt-get install dataset-fashion-mnist"):
        locate(req)


class FakeDownload:
    """torchvision.datasets.FashionMNIST without a network: writes the raw files, or part of them and fails."""
    online = True

    def __init__(self, root, train, download):
        raw = Path(root) / "FashionMNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        if not self.online:
            (raw / "part.gz").write_bytes(b"x")
            raise OSError("network unreachable")
        for name in dsd_data.FASHION_FILES["train" if train else "eval"]:
            (raw / f"{name}.gz").write_bytes(b"idx")


@pytest.fixture
def no_fashion_anywhere(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeDownload)
    monkeypatch.setattr(dsd_data, "DEBIAN_FASHION", tmp_path / "none")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("DSD_DATA_DIR", raising=False)
    return tmp_path


def test_a_failed_download_leaves_nothing_behind(no_fashion_anywhere, monkeypatch):
    tmp_path = no_fashion_anywhere
    monkeypatch.setattr(FakeDownload, "online", False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("kept")
    (tmp_path / "link").symlink_to(tmp_path / "unmounted")  # a broken link is not the download's to remove
    for folder in (tmp_path / "new" / "sub", tmp_path / "mine", tmp_path / "link"):
        with pytest.raises(BadInput, match="network unreachable"):
            locate(DataRequest("fashion-mnist", 28, 1, 10, data_dir=str(folder)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "mine"]
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_a_download_lands_complete_in_the_data_dir(no_fashion_anywhere):
    tmp_path = no_fashion_anywhere
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("kept")
    found = locate(DataRequest("fashion-mnist", 28, 1, 10, data_dir=str(tmp_path / "data"))).data_dir
    assert Path(found) == tmp_path / "data" / "FashionMNIST" / "raw"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["FashionMNIST", "notes.txt"]  # no staging


def test_data_that_does_not_fit_the_models_is_refused():
    with pytest.raises(BadInput, match="1x28x28"):
        locate(DataRequest("fashion-mnist", 32, 3, 10))
    with pytest.raises(BadInput, match="unknown dataset"):
        locate(DataRequest("mnist", 28, 1, 10))
    with pytest.raises(BadInput, match="imagefolder"):
        locate(DataRequest("imagefolder:/nonexistent", 224, 3, 1000))


def test_settings_follow_the_regime_and_scale_lr_with_batch_size():
    s = settings_for(get_regime("cifar"))
    assert (s.epochs, s.batch_size, s.lr, s.wd, s.momentum) == (10, 128, 0.1, 5e-4, 0.9)
    assert s.data.dataset == "cifar10" and (s.data.in_channels, s.data.resolution) == (3, 32)
    assert settings_for(get_regime("imagenet")).lr == 0.05
    assert settings_for(get_regime("cifar"), batch_size=256).lr == pytest.approx(0.2)
    assert settings_for(get_regime("cifar"), batch_size=256, lr=0.3).lr == 0.3
    with pytest.raises(BadInput):
        settings_for(get_regime("cifar"), epochs=0)


@pytest.mark.parametrize("flag", ["channels_last", "deterministic"])
def test_fingerprint_includes_the_flags_that_change_the_numbers(specs, synthetic, flag):
    from dataclasses import replace

    settings, cpu = synthetic_settings(), torch.device("cpu")
    assert fingerprint(specs[0], settings, synthetic, cpu) != \
        fingerprint(specs[0], replace(settings, **{flag: not getattr(settings, flag)}), synthetic, cpu)


def independent_error(spec, weights_path, data) -> float:
    """Top-1 error of saved weights, evaluated with a plain loop written here, not dsd's."""
    model = build_model(spec)
    model.load_state_dict(torch.load(weights_path))
    model.eval()
    x = (data.eval_x.float() - data.mean.view(1, -1, 1, 1)) / data.std.view(1, -1, 1, 1)
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 100]).argmax(1) for i in range(0, len(x), 100)])
    return 100.0 * (pred != data.eval_y).double().mean().item()


def test_a_result_row_is_complete_and_matches_an_independent_evaluation(specs, synthetic, tmp_path):
    settings = synthetic_settings()
    epochs_seen = []
    row = train_model(specs[0], synthetic, settings, model_id=7, weights_path=tmp_path / "w.pt",
                      on_epoch=lambda e, err, loss: epochs_seen.append(e))
    pa.Table.from_pylist([row], schema=store.RESULT_SCHEMA)  # every column has the schema's type
    assert set(row) == set(store.RESULT_SCHEMA.names)
    assert row["status"] == "done" and row["epochs"] == 3 and epochs_seen == [1, 2, 3]
    assert len(row["error_curve"]) == len(row["loss_curve"]) == 3
    assert row["error"] == row["error_curve"][-1] and row["best_error"] == min(row["error_curve"])
    assert row["train_seed"] == train_seed(0, 7) and row["train_images"] == 512 and row["eval_images"] == 256
    assert row["deterministic"] is settings.deterministic is False
    assert row["error"] < 85  # learns: chance is 90%
    assert row["loss_curve"][-1] < row["loss_curve"][0]
    assert row["images_per_s"] > 0 and row["wall_s"] > 0 and row["device"].startswith("cpu")
    assert row["error"] == pytest.approx(independent_error(specs[0], tmp_path / "w.pt", synthetic), abs=1e-9)


def test_same_seed_same_curves_other_seed_other_curves(specs, synthetic):
    settings = synthetic_settings(epochs=1)
    a, b = (train_model(specs[1], synthetic, settings, model_id=3) for _ in range(2))
    c = train_model(specs[1], synthetic, settings, model_id=4)
    assert a["error_curve"] == b["error_curve"] and a["loss_curve"] == b["loss_curve"]
    assert c["loss_curve"] != a["loss_curve"]


class Interrupt(Exception):
    pass


def stop_after(epoch: int, seen: list):
    def on_epoch(e, error, loss):
        seen.append(e)
        if e == epoch:
            raise Interrupt
    return on_epoch


def test_an_interrupted_model_resumes_from_its_checkpoint_and_ends_as_if_never_stopped(specs, synthetic, tmp_path):
    settings, checkpoint = synthetic_settings(epochs=3), tmp_path / "checkpoints" / "2.pt"
    whole = train_model(specs[2], synthetic, settings, model_id=2)
    seen = []
    with pytest.raises(Interrupt):
        train_model(specs[2], synthetic, settings, model_id=2, checkpoint_path=checkpoint, on_epoch=stop_after(2, seen))
    assert seen == [1, 2] and checkpoint.is_file()
    resumed = train_model(specs[2], synthetic, settings, model_id=2, checkpoint_path=checkpoint,
                          on_epoch=stop_after(0, seen))
    assert seen == [1, 2, 3]  # only the last epoch ran again
    assert resumed["error_curve"] == whole["error_curve"] and resumed["loss_curve"] == whole["loss_curve"]
    assert resumed["error"] == whole["error"] and resumed["epochs"] == 3
    assert resumed["message"] == "resumed from the checkpoint of epoch 2" and whole["message"] == ""


def test_a_checkpoint_made_under_other_settings_is_not_resumed(specs, synthetic, tmp_path):
    checkpoint = tmp_path / "1.pt"
    with pytest.raises(Interrupt):
        train_model(specs[1], synthetic, synthetic_settings(epochs=3), model_id=1, checkpoint_path=checkpoint,
                    on_epoch=stop_after(1, []))
    seen = []
    row = train_model(specs[1], synthetic, synthetic_settings(epochs=2), model_id=1, checkpoint_path=checkpoint,
                      on_epoch=stop_after(0, seen))
    assert seen == [1, 2] and row["message"] == ""  # epochs changed the schedule: trained afresh
    checkpoint.write_bytes(b"not a checkpoint")
    seen.clear()
    train_model(specs[1], synthetic, synthetic_settings(epochs=2), model_id=1, checkpoint_path=checkpoint,
                on_epoch=stop_after(0, seen))
    assert seen == [1, 2]


def test_a_checkpoint_that_does_not_fit_is_dropped_for_a_fresh_start(specs, synthetic, tmp_path):
    settings, checkpoint = synthetic_settings(epochs=2), tmp_path / "0.pt"
    whole = train_model(specs[0], synthetic, settings, model_id=0)
    with pytest.raises(Interrupt):
        train_model(specs[0], synthetic, settings, model_id=0, checkpoint_path=checkpoint, on_epoch=stop_after(1, []))
    state = torch.load(checkpoint, weights_only=True)
    state["generator"] = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's state: does not fit the CPU's
    torch.save(state, checkpoint)
    seen = []
    row = train_model(specs[0], synthetic, settings, model_id=0, checkpoint_path=checkpoint,
                      on_epoch=stop_after(0, seen))
    assert seen == [1, 2] and row["message"] == "" and row["loss_curve"] == whole["loss_curve"]
    assert fingerprint(specs[0], settings, synthetic, torch.device("cpu")) != \
        fingerprint(specs[0], settings, synthetic, torch.device("cuda"))


def test_nan_loss_is_diverged_and_a_raise_propagates(specs, synthetic, monkeypatch):
    monkeypatch.setenv("DSD_FAULTS", "1:nan,2:raise")
    row = train_model(specs[0], synthetic, synthetic_settings(), model_id=1)
    assert row["status"] == "diverged" and row["error"] is None and row["epochs"] == 0
    assert math.isnan(row["train_loss"]) and "epoch 1" in row["message"]
    with pytest.raises(RuntimeError, match="fault injected"):
        train_model(specs[0], synthetic, synthetic_settings(), model_id=2)


@pytest.mark.skipif(not FASHION_INSTALLED, reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_is_read_from_the_debian_package():
    req = locate(DataRequest("fashion-mnist", 28, 1, 10, download=False, train_images=3000, eval_images=500))
    data = load(req)
    assert (data.train_size, data.eval_size) == (3000, 500)
    assert data.train_x.dtype == torch.uint8 and tuple(data.train_x.shape[1:]) == (1, 28, 28)
    assert set(data.train_y.tolist()) == set(range(10))
    assert 60 < float(data.mean) < 90 and 70 < float(data.std) < 110  # Fashion-MNIST's known statistics


@pytest.mark.slow
def test_compiled_training_checkpoints_and_saves_the_plain_module(specs, synthetic, tmp_path):
    """--compile: torch.compile (inductor, on the CPU here) trains, resumes, and leaves loadable weights."""
    settings = synthetic_settings(epochs=2, compile=True)
    with pytest.raises(Interrupt):
        train_model(specs[0], synthetic, settings, model_id=0, checkpoint_path=tmp_path / "0.pt",
                    on_epoch=stop_after(1, []))
    row = train_model(specs[0], synthetic, settings, model_id=0, checkpoint_path=tmp_path / "0.pt",
                      weights_path=tmp_path / "w.pt")
    assert row["status"] == "done" and row["message"] == "resumed from the checkpoint of epoch 1"
    assert row["loss_curve"][1] < row["loss_curve"][0]
    build_model(specs[0]).load_state_dict(torch.load(tmp_path / "w.pt"))  # no torch.compile key prefixes


def write_image_folder(root: Path, train: int = 12, val: int = 4) -> Path:
    """ImageNet's layout with two classes (reddish and bluish noise), `train` and `val` images each."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("val", val)):
        for k, color in enumerate(((200, 40, 40), (40, 40, 200))):
            (root / split / f"class{k}").mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(rng.normal(color, 30, (40, 48, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / f"class{k}" / f"{i}.png")
    return root


def rgb_spec(num_classes: int = 10):
    """A small 3-channel CIFAR-stem model: the layout questions (channels-last) only show with C > 1."""
    from dsd.design.spec import make_spec

    return make_spec([1, 1], [16, 32], [1, 1], [8, 8], [1, 2], stem="cifar", stem_width=16, in_channels=3,
                     num_classes=num_classes, resolution=32)


def hook_first_conv(monkeypatch, hook):
    """Every model train_model builds calls hook(conv, inputs, output) after its first convolution."""
    build = dsd_loop.build_model

    def build_and_hook(*args, **kwargs):
        model = build(*args, **kwargs)
        next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).register_forward_hook(hook)
        return model

    monkeypatch.setattr(dsd_loop, "build_model", build_and_hook)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_path_device_data_autocast_channels_last(monkeypatch):
    """On a GPU: the 3-channel data lives there as uint8, and the model's first convolution runs there on
    channels-last input and weights under bf16 autocast, in training and in evaluation."""
    settings = settings_for(get_regime("cifar"), "synthetic", epochs=3, batch_size=32, train_images=512,
                            eval_images=256)
    data = load(locate(settings.data)).to("cuda")
    assert data.train_x.is_cuda and data.train_x.dtype == torch.uint8 and data.train_x.shape[1] == 3
    x, _ = next(data.train_batches(32, torch.Generator(device="cuda").manual_seed(0)))
    assert x.is_cuda and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    seen = []
    hook_first_conv(monkeypatch, lambda conv, inputs, output: seen.append(
        (conv.training, conv.weight.device.type, inputs[0].device.type, output.dtype,
         inputs[0].is_contiguous(memory_format=torch.channels_last) and not inputs[0].is_contiguous(),
         conv.weight.is_contiguous(memory_format=torch.channels_last))))
    row = train_model(rgb_spec(), data, settings, model_id=0, device="cuda")
    assert row["status"] == "done" and row["device"].startswith("cuda:0 (") and row["error"] < 85
    assert set(seen) == {(training, "cuda", "cuda", torch.bfloat16, True, True) for training in (True, False)}


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_checkpoint_restores_the_cuda_generator_and_fused_optimizer(specs, tmp_path):
    """Interrupted after epoch 1 of 3 on the GPU and resumed, a model retraces the uninterrupted run at
    every epoch, bit for bit: with deterministic kernels (deterministic=True: no cudnn autotuning) one
    GPU computes the same numbers every time, so any difference would be state the checkpoint lost (the
    CUDA generator, the fused optimizer's momentum, the schedule). bf16 autocast stays on, as trained."""
    settings = replace(synthetic_settings(epochs=3), deterministic=True)
    data = load(locate(settings.data)).to("cuda")
    whole = train_model(specs[0], data, settings, model_id=0, device="cuda")
    seen = []
    with pytest.raises(Interrupt):
        train_model(specs[0], data, settings, model_id=0, device="cuda", checkpoint_path=tmp_path / "0.pt",
                    on_epoch=stop_after(1, seen))
    saved = torch.load(tmp_path / "0.pt", weights_only=True)
    assert len(saved["generator"]) == len(torch.Generator(device="cuda").get_state()) \
        != len(torch.Generator().get_state())  # the CUDA generator's state was saved, not a CPU one's
    assert all(group["fused"] for group in saved["optimizer"]["param_groups"])
    resumed = train_model(specs[0], data, settings, model_id=0, device="cuda", checkpoint_path=tmp_path / "0.pt",
                          on_epoch=stop_after(0, seen))
    assert seen == [1, 2, 3] and resumed["message"] == "resumed from the checkpoint of epoch 1"
    assert resumed["device"].startswith("cuda:0 (") and whole["device"] == resumed["device"]
    for epoch in range(3):
        assert (resumed["loss_curve"][epoch], resumed["error_curve"][epoch]) == \
            (whole["loss_curve"][epoch], whole["error_curve"][epoch]), f"epoch {epoch + 1}"


def test_imagefolder_trains_through_a_dataloader_with_workers(tmp_path):
    from dsd.training.data import FolderData

    write_image_folder(tmp_path)
    with pytest.raises(BadInput, match="2 class folders"):
        locate(DataRequest(f"imagefolder:{tmp_path}", 32, 3, 10))
    req = locate(DataRequest(f"imagefolder:{tmp_path}", 32, 3, 2, loader_workers=2))
    data = load(req)
    assert isinstance(data, FolderData) and (data.train_size, data.eval_size) == (24, 8)
    x, y = next(data.train_batches(8, torch.Generator().manual_seed(0)))
    assert x.dtype == torch.uint8 and tuple(x.shape) == (8, 3, 32, 32) and set(y.tolist()) <= {0, 1}
    settings = settings_for(get_regime("cifar"), f"imagefolder:{tmp_path}", epochs=2, batch_size=8)
    row = train_model(rgb_spec(num_classes=2), data, settings, model_id=0)
    assert row["status"] == "done" and (row["train_images"], row["eval_images"]) == (24, 8)
    assert len(row["error_curve"]) == 2
