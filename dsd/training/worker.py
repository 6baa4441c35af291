"""What runs inside a local worker process: first its lifeline to the parent, then the job loop.

A spawned worker imports this module (no torch here) and runs `worker_entry`: from then on the kernel
sends it SIGTERM when the parent dies (Linux's parent-death signal), a watcher thread does the same
where that is not available, and SIGTERM unwinds the worker (so write_atomic removes its temp files)
or, if unwinding stalls, ends it hard. Only then are torch and the training code imported.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
HARD_EXIT_S = 1.5     # how long SIGTERM may take to unwind before the worker ends without unwinding


def parent_death_signal() -> bool:
    """Ask the kernel for SIGTERM when the parent dies; False where there is no prctl (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def exit_with_parent(parent: int, poll_s: float = 0.25) -> None:
    """Leave when process `parent` is no longer this one's parent (even after a SIGKILL), unwinding."""

    leaving = threading.Event()

    def leave(*_):
        if leaving.is_set():  # the kernel's signal and the watcher's: unwind once
            return
        leaving.set()
        threading.Thread(target=lambda: (time.sleep(HARD_EXIT_S), os._exit(143)), daemon=True).start()
        sys.exit(143)

    signal.signal(signal.SIGTERM, leave)
    parent_death_signal()
    if os.getppid() != parent:  # it died before the signal was asked for
        sys.exit(143)

    def watch():
        while os.getppid() == parent:
            time.sleep(poll_s)
        if not leaving.is_set():
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()


def worker_entry(conn, parent: int, device: str, threads: int) -> None:
    """The target of a spawned worker process (dsd.training.local_backend.Slot): lifeline, then work."""
    exit_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    serve(conn, device, threads)


def serve(conn, device: str, threads: int) -> None:
    """Receive jobs, train them, report epochs and results, until told to stop."""
    from dsd.training.devices import setup_process
    from dsd.training.jobs import run_job

    setup_process(device, threads)

    def report(*message):
        try:
            conn.send(message)
        except OSError:  # the parent is gone: leave now, before writing anything more
            sys.exit(143)

    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        summary = run_job(job, device, lambda epoch, error, loss: report("epoch", job.label, epoch, error))
        report("done", summary)
        if summary["retire_worker"]:  # a fatal CUDA error: this context is lost, a fresh worker takes over
            return
