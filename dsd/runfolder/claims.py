"""Claims: which process trains which model of a run.

Nothing done twice, across processes and hosts that share a run folder: RUN/claims/ID is published
atomically (a complete file hard-linked into place, which fails if one exists) before a model starts,
and removed after its result is written. It names host, pid and a heartbeat time that the claiming
process refreshes every HEARTBEAT_S. A claim whose owner is gone (same host and the pid is not
running, or a heartbeat older than STALE_S on any host) is taken over. No torch here: `dsd status`
starts fast.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path

from dsd.runfolder.files import CLAIMS_DIR

HEARTBEAT_S = 30.0
STALE_S = 600.0       # a heartbeat this old means the owner is gone, whatever host it ran on


def claim_path(run, model_id: int | str) -> Path:
    """RUN/claims/ID for a model; a word instead of an id names a claim on the whole run ("compact")."""
    return Path(run) / CLAIMS_DIR / (model_id if isinstance(model_id, str) else str(int(model_id)))


def _me() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "heartbeat": time.time()}


def _publish(path: Path, exclusive: bool = True) -> bool:
    """Write our claim to path in one step: a hard link (fails if path exists) or a rename (replaces)."""
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_me()))
    try:
        if not exclusive:
            os.replace(tmp, path)
            return True
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def pid_running(pid: int) -> bool:
    """Whether a process with this pid runs on this host (a zombie does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def owner_alive(text: str) -> bool:
    try:
        info = json.loads(text)
        fresh = time.time() - float(info["heartbeat"]) < STALE_S
        return fresh and (info["host"] != socket.gethostname() or pid_running(int(info["pid"])))
    except (ValueError, KeyError, TypeError):
        return False


def is_mine(text: str | None) -> bool:
    try:
        info = json.loads(text or "")
        return info["host"] == socket.gethostname() and info["pid"] == os.getpid()
    except (ValueError, KeyError, TypeError):
        return False


def claim(run, model_id: int | str) -> bool:
    """Claim a model for this process; False when a live process holds it."""
    path = claim_path(run, model_id)
    path.parent.mkdir(exist_ok=True)
    if _publish(path):
        return True
    text = _read(path)
    if text is None:  # released meanwhile
        return _publish(path)
    if owner_alive(text):
        return False
    # Take over a dead owner's claim. The token makes one process the only one allowed to remove this
    # exact claim; a token older than a minute was left by a taker that died and is ignored.
    token = path.with_name(f".{path.name}.takeover.{hashlib.sha1(text.encode()).hexdigest()[:12]}")
    try:
        if time.time() - token.stat().st_mtime > 60:
            token.unlink(missing_ok=True)
    except FileNotFoundError:
        pass
    if not _publish(token):
        return False
    try:
        if _read(path) == text:
            path.unlink(missing_ok=True)
        return _publish(path)
    finally:
        token.unlink(missing_ok=True)


def release(run, model_id: int | str) -> None:
    path = claim_path(run, model_id)
    if is_mine(_read(path)):
        path.unlink(missing_ok=True)


def refresh(run, model_id: int) -> None:
    path = claim_path(run, model_id)
    if is_mine(_read(path)):
        _publish(path, exclusive=False)


def live_claims(run) -> set[int]:
    """Ids of the models that a live process is training now."""
    folder = Path(run) / CLAIMS_DIR
    paths = [p for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    return {int(p.name) for p in paths if owner_alive(_read(p) or "")}
