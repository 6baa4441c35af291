"""What a pycls sweep recorded about each job: its logs/NAME/stdout.log, or its entry in the collected
sweep.json when the log is gone (a log, being newer, wins).

pycls logs its statistics as lines `json_stats: {"_type": "test_epoch", "epoch": "3/10", "top1_err":
..., ...}` (test_epoch: top-1 error in %; train_epoch: loss; cfg: the whole config; complexity: flops,
params, acts; before typed records the complexity line had no _type). tools/sweep_collect.py gathers
them into sweep.json, one entry per log: {"cfg": {...}, "complexity": {...}, "test_epoch": {"epoch":
[...], "top1_err": [...], ...}, "train_epoch": {...}, "log_file": ".../logs/NAME/stdout.log", ...}.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from dsd.errors import BadInput
from dsd.importers.counts import KINDS
from dsd.importers.jobs import finished, number

TAG = "json_stats: "
CURVES = {"test_epoch": "top1_err", "train_epoch": "loss"}  # record type -> the value kept per epoch


class Reader:
    """Reads a sweep's files in a fixed order and hashes what it reads: the same bytes, the same import."""

    def __init__(self, root: Path):
        self.root, self.digest = Path(root), hashlib.sha256()

    def text(self, path: Path) -> str:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise BadInput(f"{path}: cannot read it ({e.strerror or e})") from None
        self.digest.update(f"{path.relative_to(self.root)}\0{len(data)}\0".encode() + data)
        try:
            return data.decode()
        except UnicodeDecodeError:
            raise BadInput(f"{path}: not text (UTF-8)") from None


@dataclass
class Record:
    """One job's statistics: config, counts, test error and training loss by epoch, the schedule's length."""

    cfg: dict | None = None
    counts: dict = field(default_factory=dict)
    curves: dict = field(default_factory=lambda: {kind: {} for kind in CURVES})
    epochs: int | None = None

    def result(self) -> dict | None:
        """The result columns once the last epoch was tested, else None (unfinished)."""
        tests = self.curves["test_epoch"]
        if not tests or self.epochs is None or max(tests) < self.epochs:
            return None
        losses = self.curves["train_epoch"]
        return finished([tests[e] for e in sorted(tests)], [losses[e] for e in sorted(losses)])


def read_records(reader: Reader) -> dict[str, Record]:
    """{job name (its log folder's name): Record}, from sweep.json and then the logs."""
    records = {}
    sweep = reader.root / "sweep.json"
    if sweep.is_file():
        records.update(_from_sweep(reader, sweep))
    for log in sorted((reader.root / "logs").glob("*/stdout.log")):
        records[log.parent.name] = _from_log(reader, log)
    return records


def _from_log(reader: Reader, path: Path) -> Record:
    record = Record()
    for n, line in enumerate(reader.text(path).splitlines(), 1):
        at = line.find(TAG)
        if at < 0:
            continue
        try:
            stats = json.loads(line[at + len(TAG):])
        except ValueError:
            raise BadInput(f"{path}: line {n}: its json_stats are not JSON") from None
        _add(record, stats, f"{path}: line {n}")
    return record


def _from_sweep(reader: Reader, path: Path) -> dict[str, Record]:
    try:
        entries = json.loads(reader.text(path))
    except ValueError as e:
        raise BadInput(f"{path}: not JSON ({e})") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise BadInput(f"{path}: not a collected pycls sweep (a list of jobs)")
    records = {}
    for i, entry in enumerate(entries):
        log = entry.get("log_file")
        name = Path(log).parent.name if isinstance(log, str) else f"sweep.json[{i}]"
        where = f"{path}: job {name}"
        record = Record(cfg=entry.get("cfg"))
        _add(record, {"_type": "complexity", **(entry.get("complexity") or {})}, where)
        for kind, key in CURVES.items():
            stats = entry.get(kind) or {}
            for epoch, value in zip(stats.get("epoch") or [], stats.get(key) or []):
                _add(record, {"_type": kind, "epoch": epoch, key: value}, where)
        records[name] = record
    return records


def _add(record: Record, stats, where: str) -> None:
    """Fold one json_stats record in: the first cfg and complexity, and per epoch the last value logged
    (a resumed job logs an epoch again)."""
    if not isinstance(stats, dict):
        raise BadInput(f"{where}: json_stats must be a mapping")
    kind = stats.get("_type") or ("complexity" if {"flops", "params"} <= set(stats) else None)
    if kind == "cfg" and record.cfg is None:
        record.cfg = {k: v for k, v in stats.items() if k != "_type"}
    elif kind == "complexity" and not record.counts:
        record.counts = {k: number(stats, k, where) for k in KINDS if k in stats}
    elif kind in CURVES:
        epoch, record.epochs = _epoch(stats.get("epoch"), where)
        value = stats.get(CURVES[kind])
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadInput(f"{where}: {kind} {CURVES[kind]} is {value!r}, not a number")
        record.curves[kind][epoch] = float(value)


def _epoch(text, where: str) -> tuple[int, int]:
    """'3/10' -> (3, 10)."""
    done, _, total = str(text).partition("/")
    if not (done.isdigit() and total.isdigit()):
        raise BadInput(f"{where}: epoch {text!r} is not of the form 3/10")
    return int(done), int(total)
