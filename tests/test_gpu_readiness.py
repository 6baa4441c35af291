"""What a GPU run relies on, checked on the CPU (torch's CUDA bits patched where a GPU would be needed):
the compile cache per model, one eval shape, deterministic kernels, an unusable GPU told apart from none,
the torch floor, persistent ImageFolder loaders, channels-last input, bf16 autocast and a GPU worker's
process settings. The CUDA-marked tests of test_train.py take the same paths on a real GPU."""
from __future__ import annotations

import functools
import os
import re
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dsd.design.regimes import get_regime
from dsd.design.spec import make_spec
from dsd.errors import BadInput
from dsd.training import devices, loop
from dsd.training.data import DataRequest, load, locate
from dsd.training.settings import settings_for
from test_train import (Interrupt, hook_first_conv, independent_error, rgb_spec, specs,  # noqa: F401  (fixture)
                        stop_after, write_image_folder)

REPO = Path(__file__).resolve().parent.parent


def fashion_settings(**kw):
    return settings_for(get_regime("fashion"), "synthetic", **{"epochs": 1, "batch_size": 16, **kw})


def tiny_spec(width: int):
    """One X block on the fashion regime's 1x28x28 input; each width makes another model."""
    return make_spec([1], [width], [1], [8], [2], stem="simple", stem_width=8, in_channels=1, num_classes=10,
                     resolution=28)


# ---- item 4: --compile in a long-lived worker -------------------------------------------------------

def test_compile_cache_reset_per_model(monkeypatch):
    """The fifth model a process trains with compile=True still runs every batch through a compiled
    graph, and each model compiles two graphs (training, evaluation): none for a partial eval batch.
    The backend records calls instead of generating code, which keeps compiling on the CPU to seconds."""
    compiles, calls = [], []

    def recording_backend(graph, example_inputs):
        compiles.append(graph)

        def run(*args):
            calls.append(1)
            return graph.forward(*args)
        return run

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=recording_backend))
    settings = fashion_settings(train_images=32, eval_images=24, compile=True)  # 2 steps; eval batches 16 + 8
    data = load(locate(settings.data))
    for model_id in range(5):
        compiles.clear()
        calls.clear()
        row = loop.train_model(tiny_spec(8 * (model_id + 1)), data, settings, model_id=model_id)
        assert row["status"] == "done"
        assert (len(compiles), len(calls)) == (2, 4), f"model {model_id + 1}: {len(compiles)} graphs, {len(calls)} calls"


def test_partial_eval_batch_is_padded_and_masked(monkeypatch, specs, tmp_path):
    """Every eval batch has the full batch size (one shape for a compiled model and for cudnn's
    autotuner), and the padding is not counted: the error is a plain evaluation's of the 40 images."""
    shapes = []
    hook_first_conv(monkeypatch, lambda conv, inputs, output: shapes.append((conv.training, len(inputs[0]))))
    settings = fashion_settings(train_images=32, eval_images=40)  # eval batches of 16, 16 and 8
    data = load(locate(settings.data))
    row = loop.train_model(specs[0], data, settings, model_id=0, weights_path=tmp_path / "w.pt")
    assert [n for training, n in shapes if not training] == [16, 16, 16]
    assert row["error"] == pytest.approx(independent_error(specs[0], tmp_path / "w.pt", data), abs=1e-9)


# ---- item 6: what is reproducible on a GPU -----------------------------------------------------------

def test_deterministic_mode_turns_off_cudnn_autotuning(monkeypatch, specs):
    """deterministic=True: while the model trains, no cudnn autotuning and deterministic kernels only
    (cuBLAS configured for them); the worker's own settings come back afterwards. On the CPU, whose
    kernels are deterministic already, it changes no number."""
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)  # as setup_process leaves a GPU worker
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    settings = fashion_settings(train_images=32, eval_images=32, epochs=2)
    data = load(locate(settings.data))
    seen = []

    def record(epoch, error, loss):
        seen.append((torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
                     torch.are_deterministic_algorithms_enabled()))

    exact = loop.train_model(specs[0], data, replace(settings, deterministic=True), model_id=0, on_epoch=record)
    assert seen == [(False, True, True)] * 2
    assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) == (True, False)
    assert not torch.are_deterministic_algorithms_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    plain = loop.train_model(specs[0], data, settings, model_id=0)
    assert exact["loss_curve"] == plain["loss_curve"] and exact["error_curve"] == plain["error_curve"]


# ---- item 7: the torch build and the driver ----------------------------------------------------------

@pytest.fixture
def gpu_without_usable_torch(tmp_path, monkeypatch):
    """This machine as one with an NVIDIA GPU on driver 550 and torch's CUDA 13.0 build, which needs 580."""
    (tmp_path / "nvidia0").touch()
    (tmp_path / "version").write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 "
                                      "01:44:30 UTC 2024\nGCC version:  gcc version 12.2.0\n")
    monkeypatch.setattr(devices, "NVIDIA_DEVICES", str(tmp_path / "nvidia[0-9]*"))
    monkeypatch.setattr(devices, "NVIDIA_DRIVER", str(tmp_path / "version"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    return tmp_path


def test_auto_device_warns_when_a_gpu_is_present_but_unusable(gpu_without_usable_torch, capsys):
    assert devices.local_device("auto") == "cpu"
    err = capsys.readouterr().err
    assert err.startswith("warning: --device auto:") and len(err.strip().splitlines()) == 1, err
    for part in ("driver 550", "CUDA 13.0", "580", "pip install torch==", "+cu126",
                 "--index-url https://download.pytorch.org/whl/cu126", "using the CPU"):
        assert part in err, (part, err)
    (gpu_without_usable_torch / "nvidia0").unlink()  # no GPU at all: the CPU, quietly
    assert devices.local_device("auto") == "cpu" and capsys.readouterr().err == ""


def test_cuda_device_without_a_usable_gpu_names_the_wheel(gpu_without_usable_torch, monkeypatch, tiny_run, capsys):
    with pytest.raises(BadInput, match=r"--device cuda: no CUDA GPU is visible to torch: .*driver 550.*whl/cu126"):
        devices.local_device("cuda")
    from dsd.cli import main

    monkeypatch.setattr(sys, "argv", ["dsd", "train", str(tiny_run(1)), "--device", "cuda:0"])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--device cuda:0" in err and "CUDA 13.0" in err and "whl/cu126" in err, err


def test_a_usable_driver_with_no_visible_gpu_is_not_blamed_on_the_wheel(gpu_without_usable_torch):
    (gpu_without_usable_torch / "version").write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  "
                                                      "580.65.06  Sun Jul 27 2025\n")
    reason = devices.unusable_gpu()
    assert "CUDA_VISIBLE_DEVICES" in reason and "pip install" not in reason


def test_torch_floor_is_the_first_release_with_fused_sgd():
    """fresh_state asks for SGD(fused=True) on CUDA, which torch has since 2.3.0 (pytorch/pytorch#116585,
    merged in January 2024, after the 2.2 branch); pyproject must not allow an older torch."""
    text = (REPO / "pyproject.toml").read_text()
    floor = re.search(r'"torch>=(\d+)\.(\d+)', text)
    assert floor and (int(floor[1]), int(floor[2])) >= (2, 3), floor


# ---- item 9: ImageFolder loaders ----------------------------------------------------------------------

@pytest.fixture
def made_loaders(monkeypatch):
    """Every DataLoader made from now on."""
    made = []

    class Counted(torch.utils.data.DataLoader):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(torch.utils.data, "DataLoader", Counted)
    return made


def folder_data(root: Path, workers: int):
    """The two-class image folder of test_train (written once), read by `workers` loader processes."""
    if not (root / "train").exists():
        write_image_folder(root)
    return load(locate(DataRequest(f"imagefolder:{root}", 32, 3, 2, loader_workers=workers)))


def folder_settings(root: Path):
    return settings_for(get_regime("cifar"), f"imagefolder:{root}", epochs=3, batch_size=8)


def test_imagefolder_loaders_are_made_once_per_model(made_loaders, tmp_path):
    """Two loaders per model (training, evaluation), whatever its number of epochs, with workers that
    persist from epoch to epoch and end with the model."""
    data = folder_data(tmp_path, workers=2)
    for model_id in (0, 1):
        row = loop.train_model(rgb_spec(num_classes=2), data, folder_settings(tmp_path), model_id=model_id)
        assert row["status"] == "done" and len(row["error_curve"]) == 3
        assert len(made_loaders) == 2 * (model_id + 1)
        assert data.loaders == {}  # closed: the model's worker processes are gone
    assert all(loader.persistent_workers and loader.num_workers == 2 for loader in made_loaders)


def test_imagefolder_epochs_depend_on_the_trainer_seed_only(tmp_path):
    """Each image's augmentation has its own seed, so the curves do not depend on the number of loader
    workers, and a model resumed from a checkpoint (with other workers) ends as the uninterrupted one."""
    settings, spec = folder_settings(tmp_path), rgb_spec(num_classes=2)
    whole = loop.train_model(spec, folder_data(tmp_path, workers=2), settings, model_id=0)
    with pytest.raises(Interrupt):
        loop.train_model(spec, folder_data(tmp_path, workers=0), settings, model_id=0,
                         checkpoint_path=tmp_path / "0.pt", on_epoch=stop_after(1, []))
    resumed = loop.train_model(spec, folder_data(tmp_path, workers=1), settings, model_id=0,
                               checkpoint_path=tmp_path / "0.pt")
    assert resumed["message"] == "resumed from the checkpoint of epoch 1"
    assert resumed["loss_curve"] == whole["loss_curve"] and resumed["error_curve"] == whole["error_curve"]


# ---- item 10: the GPU path, taken ------------------------------------------------------------------------

def rgb_settings(**kw):
    return settings_for(get_regime("cifar"), "synthetic", **{"epochs": 1, "batch_size": 16, "train_images": 32,
                                                            "eval_images": 16, **kw})


def test_channels_last_reaches_the_first_convolution_of_three_channel_input(monkeypatch):
    """With 3 channels (with 1, every NCHW tensor is also channels-last) the first convolution gets
    channels-last input and weights with channels_last on, contiguous NCHW with it off."""
    seen = []
    hook_first_conv(monkeypatch, lambda conv, inputs, output: seen.append(
        (inputs[0].is_contiguous(memory_format=torch.channels_last), inputs[0].is_contiguous(),
         conv.weight.is_contiguous(memory_format=torch.channels_last))))
    data = load(locate(rgb_settings().data))
    assert data.train_x.shape[1] == 3
    loop.train_model(rgb_spec(), data, rgb_settings(channels_last=True), model_id=0)
    assert seen and set(seen) == {(True, False, True)}
    seen.clear()
    loop.train_model(rgb_spec(), data, rgb_settings(channels_last=False), model_id=0)
    assert seen and set(seen) == {(False, True, False)}


def test_bf16_autocast_runs_when_amp_is_on(monkeypatch):
    """--amp runs the convolutions in bf16 in training and evaluation on the devices it is meant for
    (here the CPU stands in for the GPU); the CPU itself stays fp32."""
    seen = []
    hook_first_conv(monkeypatch, lambda conv, inputs, output: seen.append((conv.training, output.dtype)))
    data = load(locate(rgb_settings().data))
    loop.train_model(rgb_spec(), data, rgb_settings(amp=True), model_id=0)
    assert {dtype for _, dtype in seen} == {torch.float32}  # amp is for GPUs only
    seen.clear()
    monkeypatch.setattr(loop, "AMP_DEVICES", ("cuda", "cpu"))
    row = loop.train_model(rgb_spec(), data, rgb_settings(amp=True), model_id=0)
    assert row["status"] == "done" and set(seen) == {(True, torch.bfloat16), (False, torch.bfloat16)}


def test_setup_process_for_a_gpu_worker_turns_on_autotuning_and_tf32(monkeypatch):
    """A GPU worker's process: its own GPU selected (cuda:N), cudnn autotuning and TF32 on; a CPU
    worker's: none of that."""
    flags = ((torch.backends.cudnn, "benchmark"), (torch.backends.cuda.matmul, "allow_tf32"),
             (torch.backends.cudnn, "allow_tf32"))
    saved, threads = [getattr(module, name) for module, name in flags], torch.get_num_threads()
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    try:  # restored by hand: monkeypatch cannot undo torch.backends.cuda.matmul's computed attributes
        for module, name in flags:
            setattr(module, name, False)
        devices.setup_process("cpu", 1)
        assert [getattr(module, name) for module, name in flags] == [False] * 3 and chosen == []
        devices.setup_process("cuda:1", 1)
        assert [getattr(module, name) for module, name in flags] == [True] * 3
        assert chosen == [torch.device("cuda:1")] and torch.get_num_threads() == 1
        devices.setup_process("cuda")  # every GPU of a Ray task's own: none chosen here
        assert chosen == [torch.device("cuda:1")]
    finally:
        for (module, name), value in zip(flags, saved):
            setattr(module, name, value)
        torch.set_num_threads(threads)
