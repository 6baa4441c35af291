"""Progress of a sweep: models done of total, the models in flight with their epoch, the ETA, the best error.

On a terminal a rich display on stderr; otherwise plain lines (one per finished model, and one every
`every` seconds while none finishes), so that logs of long sweeps show life without flooding.
"""
from __future__ import annotations

import sys
import time


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """Models done of total, the models in flight with their epoch, the ETA and the best error so far."""

    def __init__(self, total: int, stream=None, every: float = 60.0):
        self.total, self.every = total, every
        self.stream = stream or sys.stderr
        self.results: list[dict] = []
        self.current: dict[str, tuple] = {}  # label -> (epoch, epochs, error)
        self.start = self.last_line = time.monotonic()
        self.bar = self._rich() if self.stream.isatty() else None

    def _rich(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

        bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  TextColumn("{task.fields[note]}"), console=Console(file=self.stream))
        self.tasks = {"": bar.add_task("models", total=self.total, note="")}
        bar.start()
        return bar

    @property
    def best(self) -> float | None:
        errors = [r["error"] for r in self.results if r["status"] == "done" and r["error"] is not None]
        return min(errors) if errors else None

    def eta(self) -> str:
        done = len(self.results)
        if not done:
            return "?"
        return _duration((time.monotonic() - self.start) / done * max(0, self.total - done))

    def started(self, job) -> None:
        if job is None:
            return
        self.current[job.label] = (0, job.settings.epochs, None)
        if self.bar:
            self.tasks[job.label] = self.bar.add_task(f"  {job.label}", total=job.settings.epochs, note="")

    def epoch(self, label: str, epoch: int, error: float) -> None:
        self.current[label] = (epoch, self.current.get(label, (0, 0))[1], error)
        if self.bar:
            self.bar.update(self.tasks[label], completed=epoch, note=f"error {error:.2f}%")

    def finished(self, job, summary: dict) -> None:
        self.results.append(summary)
        self.current.pop(job.label, None)
        best = f"best {self.best:.2f}%" if self.best is not None else ""
        if self.bar:
            self.bar.remove_task(self.tasks.pop(job.label))
            self.bar.update(self.tasks[""], completed=len(self.results), total=self.total, note=best)
            return
        what = (f"error {summary['error']:.2f}% ({best})" if summary["status"] == "done"
                else summary["message"] or summary["status"])
        self._line(f"{job.label} {summary['status']}: {what} in {summary['wall_s'] or 0:.1f} s, eta {self.eta()}")

    def tick(self) -> None:
        if self.bar:
            self.bar.update(self.tasks[""], total=self.total)
        elif time.monotonic() - self.last_line >= self.every:
            running = ", ".join(f"{label} (epoch {e}/{n}{f', error {err:.1f}%' if err is not None else ''})"
                                for label, (e, n, err) in self.current.items())
            self._line(f"training {running or 'nothing'}; eta {self.eta()}")

    def _line(self, text: str) -> None:
        print(f"[{len(self.results)}/{self.total}] {text}", file=self.stream, flush=True)
        self.last_line = time.monotonic()

    def close(self) -> None:
        if self.bar:
            self.bar.stop()
