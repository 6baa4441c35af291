"""Devices: the one place that reads `--device`, plans slots on devices, and sets up a trainer process.

Both backends use it: the local one turns --device into worker slots, the Ray one into the resources
its tasks ask for. torch is imported inside the functions that need it, so parsing stays cheap.
"""
from __future__ import annotations

import os
import re
import sys

from dsd.errors import BadInput

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda|cuda:\d+")


def parse_device(text: str) -> str:
    """--device checked for form only (auto, cpu, cuda, cuda:N); no GPU is looked for."""
    if not DEVICE_PATTERN.fullmatch(text or ""):
        raise BadInput(f"--device {text}: expected auto, cpu, cuda or cuda:N")
    return text


def is_gpu(device: str) -> bool:
    return device.startswith("cuda")


# What torch says when a CUDA error has left the process's context unusable (every later call fails);
# out-of-memory is not among them: the context survives it.
FATAL_GPU_ERRORS = ("CUDA error", "device-side assert", "illegal memory access", "CUBLAS_STATUS",
                    "CUDNN_STATUS_EXECUTION_FAILED", "unspecified launch failure")


def is_fatal_gpu_error(error: BaseException) -> bool:
    """Whether an exception means this process's CUDA context is lost (the worker must be replaced)."""
    import torch

    accelerator_error = getattr(torch, "AcceleratorError", None)  # torch >= 2.8 raises it for CUDA errors
    if accelerator_error is not None and isinstance(error, accelerator_error):
        return True
    text = str(error)
    return "out of memory" not in text and any(marker in text for marker in FATAL_GPU_ERRORS)


def gpu_index(device: str) -> int | None:
    """N of cuda:N; None for cuda (every GPU) and for the CPU."""
    return int(device.partition(":")[2]) if device.startswith("cuda:") else None


NVIDIA_DEVICES = "/dev/nvidia[0-9]*"             # the device files of an NVIDIA driver's GPUs
NVIDIA_DRIVER = "/proc/driver/nvidia/version"     # "... Kernel Module  550.54.14 ..."
# the oldest Linux driver (major version) that runs torch builds of a CUDA major version (NVIDIA's
# minor-version compatibility), and the wheel index of such a build
CUDA_DRIVERS = {11: 450, 12: 525, 13: 580}
WHEELS = ((580, "cu130", "CUDA 13.0"), (525, "cu126", "CUDA 12.6"))


def driver_version() -> int | None:
    """The major version of the loaded NVIDIA driver (e.g. 550), None when it cannot be read."""
    try:
        with open(NVIDIA_DRIVER) as f:
            return int(re.search(r"Kernel Module\D*(\d+)\.", f.read()).group(1))
    except (OSError, AttributeError):
        return None


def unusable_gpu() -> str | None:
    """Why this machine's NVIDIA GPU goes unused, with the torch wheel to install; None when torch can
    use it or there is none. Cheap: a glob of /dev and a file read, no subprocess (nvidia-smi)."""
    import glob

    import torch

    if not glob.glob(NVIDIA_DEVICES) or torch.cuda.is_available():
        return None
    driver, cuda = driver_version(), torch.version.cuda
    found = f"this machine has an NVIDIA GPU (driver {driver or 'of unknown version'})"
    needs = CUDA_DRIVERS.get(int(cuda.split(".")[0])) if cuda else None
    if driver and needs and driver >= needs:
        return (f"{found} and torch {torch.__version__} (CUDA {cuda}) supports that driver, yet torch sees no "
                f"GPU: check CUDA_VISIBLE_DEVICES and the permissions of /dev/nvidia*")
    build = (f"torch {torch.__version__} is a CPU-only build" if cuda is None else
             f"torch {torch.__version__} is built for CUDA {cuda}, which needs driver {needs or '?'} or newer")
    wheel = next(((index, name) for least, index, name in WHEELS if driver and driver >= least), None)
    if wheel is None:
        return (f"{found} but {build}: update the driver to {WHEELS[-1][0]} or newer, or install a torch "
                f"build for it (https://pytorch.org/get-started/previous-versions/)")
    return f"{found} but {build}: install the {wheel[1]} build: {pip_install(wheel[0])}"


def pip_install(index: str) -> str:
    """The pip command that swaps this torch (and torchvision) for the same versions built for another
    CUDA; the +cuXXX label is pinned because pip takes a plain ==VERSION as satisfied by the build at hand."""
    from importlib import metadata

    pins = []
    for package in ("torch", "torchvision"):
        try:
            pins.append(f"{package}=={metadata.version(package).split('+')[0]}+{index}")
        except metadata.PackageNotFoundError:
            continue
    return f"pip install {' '.join(pins)} --index-url https://download.pytorch.org/whl/{index}"


def local_device(text: str) -> str:
    """--device on this machine: auto becomes cuda when torch sees a GPU (else cpu, with a warning on
    stderr when a GPU is there that this torch build cannot use); a GPU asked for must be visible to
    torch."""
    import torch

    device = parse_device(text)
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        reason = unusable_gpu()
        if reason:
            print(f"warning: --device auto: {reason}; using the CPU", file=sys.stderr, flush=True)
        return "cpu"
    if is_gpu(device) and not torch.cuda.is_available():
        reason = unusable_gpu()
        raise BadInput(f"--device {device}: no CUDA GPU is visible to torch" + (f": {reason}" if reason else ""))
    index = gpu_index(device)
    if index is not None and index >= torch.cuda.device_count():
        raise BadInput(f"--device {device}: torch sees {torch.cuda.device_count()} GPU(s), cuda:0..")
    return device


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (what SLURM, taskset or a container grant),
    not the machine's count, so that a task given 8 of 64 cores runs 8 threads."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no affinity on this platform (macOS)
        return os.cpu_count() or 1


def slots_for(device: str, models_per_gpu: int = 1, cpu_workers: int = 1) -> list[tuple[str, int]]:
    """(device, CPU threads) per slot: K per GPU (every visible GPU unless one is named), N on the CPU.

    GPUs take turns (cuda:0, cuda:1, ..., cuda:0, ...), so that a sweep with fewer models than slots,
    which uses the first slots, spreads them over every GPU."""
    import torch

    cores = usable_cores()
    if device == "cpu":
        return [("cpu", max(1, cores // cpu_workers))] * cpu_workers
    gpus = [device] if gpu_index(device) is not None else [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    threads = max(1, min(4, cores // (len(gpus) * models_per_gpu)))
    return [(g, threads) for _ in range(models_per_gpu) for g in gpus]


def setup_process(device: str, threads: int | None = None) -> None:
    """Per-process settings of a trainer: CPU threads; cudnn autotuning and TF32 on a GPU."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    if is_gpu(device):
        if gpu_index(device) is not None:
            torch.cuda.set_device(torch.device(device))
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def device_name(device) -> str:
    """What a result row says it was trained on, e.g. "cuda:0 (NVIDIA H100)" or "cpu (2 threads)"."""
    import torch

    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"cpu ({torch.get_num_threads()} threads)"
