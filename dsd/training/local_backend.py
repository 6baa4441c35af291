"""The local backend: one spawned worker process per slot, fed one job at a time over a pipe.

A crash or an out-of-memory kill costs one model, recorded as failed, and the slot gets a fresh worker.
Workers leave by themselves when this process dies, even by SIGKILL (dsd.training.worker).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
from contextlib import contextmanager
from multiprocessing.connection import wait

from dsd.training.jobs import Feed, Job, record_failure
from dsd.training.worker import worker_entry


TERMINATED = (143, -15)  # a worker's exit code after SIGTERM (its handler's, or the signal's)


@contextmanager
def main_module_hidden():
    """While a worker is spawned, hide the parent's __main__ from multiprocessing: the worker needs
    nothing from it (its target lives in dsd), and importing it again fails or recurses when it is
    stdin, a notebook, or a script without an `if __name__ == "__main__"` guard."""
    main = sys.modules["__main__"]
    saved = {k: main.__dict__.pop(k) for k in ("__spec__", "__file__") if k in main.__dict__}
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


class Slot:
    """One worker process bound to a device, and the job it is training."""

    def __init__(self, ctx, device: str, threads: int):
        self.ctx, self.device, self.threads = ctx, device, threads
        self.job: Job | None = None
        self.start()

    def start(self) -> None:
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=worker_entry, args=(child, os.getpid(), self.device, self.threads),
                                     name=f"dsd-{self.device}")
        with main_module_hidden():
            self.proc.start()
        child.close()

    def restart(self) -> None:
        """A fresh worker process in this slot, once the old one has left (after a fatal CUDA error)."""
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.start()

    def give(self, job: Job | None) -> None:
        self.job = job
        if job is not None:
            self.conn.send(job)

    def messages(self) -> list[tuple]:
        """What the worker sent; ("died", exit code) when it is gone before finishing its job."""
        out = []
        try:
            while self.conn.poll():
                out.append(self.conn.recv())
        except (EOFError, OSError):
            pass
        if not self.proc.is_alive() and not any(m[0] == "done" for m in out):
            self.proc.join()
            out.append(("died", self.proc.exitcode))
        return out

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


def run_local(feed: Feed, progress, slots: list[tuple[str, int]]) -> None:
    """Train the feed's jobs on spawned worker processes, one per slot."""
    ctx = mp.get_context("spawn")
    workers = [Slot(ctx, device, threads) for device, threads in slots[:feed.expected]]
    try:
        for w in workers:
            w.give(feed.next())
            progress.started(w.job)
        while any(w.job for w in workers):
            busy = [w for w in workers if w.job]
            wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=1.0)
            for w in busy:
                for kind, *info in w.messages():
                    if kind == "epoch":
                        progress.epoch(*info)
                        continue
                    if kind == "died" and info[0] in TERMINATED:  # the whole task is being stopped (SLURM
                        raise KeyboardInterrupt                       # preemption): not the model's failure
                    if kind == "died":
                        info = [record_failure(w.job, w.device, f"the worker process died (exit code {info[0]})")]
                        w.start()
                    elif info[0].get("retire_worker"):
                        w.restart()
                    feed.finish(w.job)
                    progress.finished(w.job, info[0])
                    w.give(feed.next())
                    progress.started(w.job)
            progress.total = feed.expected
            progress.tick()
    finally:
        for w in workers:
            w.stop()
