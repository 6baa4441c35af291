"""Training speed: dsd's trainer against the DataLoader loop a user would write, in one run, as a ratio.

Same model, same device, same images, same optimizer and schedule. The baseline is the usual
torchvision recipe: a Dataset that returns PIL images (as torchvision's FashionMNIST / CIFAR10 do),
RandomCrop(padding) + RandomHorizontalFlip + ToTensor + Normalize, a DataLoader with worker processes,
and a plain loop. A second baseline row adds dsd's model-side settings (channels-last; bf16 autocast on a
GPU) to the DataLoader loop, so the table separates the data path from the rest. The last table is the
aggregate throughput of K models trained at once, one process each, as dsd's slots run them (K = 1, 2,
4, 8 on a GPU; 1, 2 on the CPU, splitting its cores). A last table gives the cost of the checkpoint
written after every epoch, for models of three sizes.

Run: python bench/train.py [--device cpu|cuda] [--images N] [--epochs E]. Prints markdown tables.
Data: Fashion-MNIST (CPU) or CIFAR-10 (GPU) when found, else the synthetic set of the same shape.
"""
from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import platform
import shutil
import tempfile
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from dsd.design.complexity import complexity
from dsd.design.model import build_model
from dsd.design.regimes import Protocol
from dsd.design.spec import make_spec
from dsd.errors import BadInput
from dsd.training.checkpoints import save_state
from dsd.training.data import DataRequest, load, locate
from dsd.training.devices import setup_process
from dsd.training.loop import train_model
from dsd.training.settings import TrainSettings

# a RegNetX of the fashion regime (2.5M flops) for the CPU, a CIFAR-10 model of about 100M flops for a GPU
CPU_MODEL = dict(depths=[1, 1, 3, 1], widths=[16, 32, 128, 288], bottleneck_ratios=[2] * 4,
                 group_widths=[8, 16, 16, 16], strides=[1, 2, 2, 2], stem="simple", in_channels=1,
                 num_classes=10, resolution=28)
GPU_MODEL = dict(depths=[1, 3, 7, 4], widths=[40, 80, 176, 448], bottleneck_ratios=[1] * 4,
                 group_widths=[16] * 4, strides=[1, 2, 2, 2], stem="cifar", in_channels=3, num_classes=10,
                 resolution=32)
REGNETX_400MF = dict(depths=[1, 2, 7, 12], widths=[32, 64, 160, 384], bottleneck_ratios=[1] * 4,
                     group_widths=[16] * 4, strides=[2, 2, 2, 2], stem="simple", in_channels=3,
                     num_classes=1000, resolution=224)


class PILDataset(torch.utils.data.Dataset):
    """What torchvision's FashionMNIST / CIFAR10 do per item: a PIL image through the transforms."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images = images.permute(0, 2, 3, 1).squeeze(-1).numpy() if images.shape[1] == 1 else \
            images.permute(0, 2, 3, 1).numpy()
        self.labels, self.transform = labels.tolist(), transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def dataloader_loop(spec, data, settings: TrainSettings, device: str, workers: int, tuned: bool) -> float:
    """Images per second of the usual loop (tuned: channels-last, and bf16 autocast on a GPU)."""
    mean, std = (data.mean / 255).tolist(), (data.std / 255).tolist()
    tf = transforms.Compose([transforms.RandomCrop(data.train_x.shape[-1], padding=data.pad),
                             transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                             transforms.Normalize(mean, std)])
    loader = torch.utils.data.DataLoader(PILDataset(data.train_x, data.train_y, tf), settings.batch_size,
                                         shuffle=True, drop_last=True, num_workers=workers,
                                         pin_memory=device.startswith("cuda"))
    torch.manual_seed(0)
    fmt = torch.channels_last if tuned else torch.contiguous_format
    model = build_model(spec).to(device, memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=0.9, weight_decay=settings.wd)
    total = settings.epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / total)))
    amp = tuned and device.startswith("cuda")
    model.train()
    sync(device)
    start = time.perf_counter()
    for _ in range(settings.epochs):
        for x, y in loader:
            x = x.to(device, non_blocking=True).contiguous(memory_format=fmt)
            y = y.to(device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16) if amp else nullcontext():
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    sync(device)
    return total * settings.batch_size / (time.perf_counter() - start)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def dsd_trainer(spec, data, settings: TrainSettings, device: str) -> float:
    return train_model(spec, data.to(device), settings, device=device)["images_per_s"]


def concurrent_worker(k_index, device, threads, spec, req, settings, barrier, queue):
    setup_process(device, threads)
    data = load(req).to(device)
    train_model(spec, data, replace(settings, epochs=1), device=device)  # warm-up
    barrier.wait()
    start = time.time()
    row = train_model(spec, data, settings, model_id=k_index, device=device)
    queue.put((start, time.time(), row["epochs"] * (data.train_size // settings.batch_size) * settings.batch_size))


def concurrent(spec, req, settings, device: str, k: int) -> float:
    """Aggregate images per second of k models trained at once, one process each (as dsd's slots do)."""
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(k), ctx.Queue()
    threads = 1 if device.startswith("cuda") else max(1, (os.cpu_count() or 1) // k)
    procs = [ctx.Process(target=concurrent_worker, args=(i, device, threads, spec, req, settings, barrier, queue))
             for i in range(k)]
    for p in procs:
        p.start()
    spans = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(n for _, _, n in spans) / (max(e for _, e, _ in spans) - min(s for s, _, _ in spans))


def checkpoint_cost(device: str) -> None:
    """Time to write one epoch's checkpoint (weights and momentum, as dsd.training.checkpoints saves them)."""
    print("\n| checkpoint after each epoch | params | file | write |")
    print("|---|---:|---:|---:|")
    folder = Path(tempfile.mkdtemp())
    for name, kw in (("fashion model (CPU table)", CPU_MODEL), ("CIFAR model (GPU table)", GPU_MODEL),
                     ("RegNetX-400MF", REGNETX_400MF)):
        model = build_model(make_spec(**kw)).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        model(torch.randn(2, kw["in_channels"], kw["resolution"], kw["resolution"], device=device)).sum().backward()
        opt.step()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            save_state(folder / "c.pt", {"model": model.state_dict(), "optimizer": opt.state_dict()})
            times.append(time.perf_counter() - start)
        size = (folder / "c.pt").stat().st_size
        print(f"| {name} | {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M | {size / 1e6:.1f} MB "
              f"| {min(times) * 1000:.0f} ms |")
    shutil.rmtree(folder)


def request(device: str, images: int) -> DataRequest:
    """Fashion-MNIST on the CPU, CIFAR-10 on a GPU, each falling back to synthetic data of its shape."""
    name, (c, side) = ("cifar10", (3, 32)) if device.startswith("cuda") else ("fashion-mnist", (1, 28))
    req = DataRequest(name, side, c, 10, download=False, train_images=images, eval_images=1000)
    try:
        return locate(req)
    except BadInput:
        return DataRequest("synthetic", side, c, 10, train_images=images, eval_images=1000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--images", type=int, default=None, help="train images (default: 10000 CPU, 50000 GPU)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the cores, at most 8)")
    ap.add_argument("--concurrent", default=None, help="K values of the last table (default: 1,2,4,8 on a GPU, "
                                                       "1,2 on the CPU)")
    args = ap.parse_args()
    gpu = args.device.startswith("cuda")
    images = args.images or (50000 if gpu else 10000)
    cores = os.cpu_count() or 1
    workers = args.workers if args.workers is not None else min(8, cores)
    setup_process(args.device, None if gpu else cores)
    spec = make_spec(**(GPU_MODEL if gpu else CPU_MODEL))
    req = request(args.device, images)
    data = load(req)
    base = Protocol()  # no warm-up, no zero-init: the schedule of the DataLoader loop below
    settings = TrainSettings(req, epochs=args.epochs, batch_size=128, lr=0.05, wd=5e-4, momentum=base.momentum,
                             warmup_epochs=base.warmup_epochs, warmup_factor=base.warmup_factor,
                             zero_init_residual=base.zero_init_residual)
    where = torch.cuda.get_device_name() if gpu else f"{platform.processor() or platform.machine()}, {cores} cores"
    print(f"device: {args.device} ({where}); torch {torch.__version__}; {torch.get_num_threads()} torch threads")
    print(f"model: {spec.depths} x {spec.widths}, {complexity(spec)['flops'] / 1e6:.1f}M flops; data: {req.dataset}, "
          f"{data.train_size} train images x {args.epochs} epoch(s), batch {settings.batch_size}\n")

    warm = replace(settings, epochs=1)
    dsd_trainer(spec, data, warm, args.device)  # warm-up (oneDNN / cudnn autotuning)
    rows = [(f"DataLoader loop, {w} workers", dataloader_loop(spec, data, settings, args.device, w, False))
            for w in sorted({0, workers})]
    tuned = "channels-last, bf16" if gpu else "channels-last"
    rows.append((f"DataLoader loop, {workers} workers, {tuned}",
                 dataloader_loop(spec, data, settings, args.device, workers, True)))
    rows.append(("dsd trainer (device-resident uint8, batched augmentation)",
                 dsd_trainer(spec, data, settings, args.device)))
    best_baseline = max(v for name, v in rows[:-1] if "channels" not in name)
    print("| trainer | images / s | dsd's speed-up |")
    print("|---|---:|---:|")
    for name, value in rows:
        print(f"| {name} | {value:,.0f} | {rows[-1][1] / value:.2f}x |")
    print(f"\ndsd vs the best plain DataLoader loop: {rows[-1][1] / best_baseline:.2f}x")

    where = "per GPU" if gpu else f"on the CPU ({cores} cores split between them)"
    print(f"\n| models at once {where} | images / s, all models | per model | vs K = 1 |")
    print("|---:|---:|---:|---:|")
    base = None
    for k in map(int, (args.concurrent or ("1,2,4,8" if gpu else "1,2")).split(",")):
        total = concurrent(spec, req, settings, args.device, k)
        base = base or total
        print(f"| {k} | {total:,.0f} | {total / k:,.0f} | {total / base:.2f}x |", flush=True)
    checkpoint_cost(args.device)

if __name__ == "__main__":
    main()
