"""Whether every worker holds a warmed model: ``ready`` or ``failed.json``, the files nginx answers /ping from."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from .. import atomic
from .codecs import encode_error

READY, FAILED = "ready", "failed.json"
LOADING, WARMED, BROKEN = "loading", "ready", "failed"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


class Health:
    """Each worker's state file, summed up under a lock after every change."""

    def __init__(self, directory: Path, workers: int):
        self.directory = directory
        self.workers = workers

    def report(self, pid: int, state: str, error: str | None = None) -> None:
        """A worker's own state: loading, ready or failed (with the reason)."""
        state_file = self.directory / f"worker-{pid}.json"
        atomic.write_bytes(state_file, json.dumps({"state": state, "error": error}).encode(), durable=False)
        self._publish()

    def forget(self, pid: int) -> None:
        """A worker exited (the gunicorn master calls this): it no longer counts as ready."""
        (self.directory / f"worker-{pid}.json").unlink(missing_ok=True)
        self._publish()

    def _states(self) -> list[dict]:
        paths = sorted(self.directory.glob("worker-*.json"))
        return [json.loads(p.read_text()) for p in paths if _alive(int(p.stem.removeprefix("worker-")))]

    def _publish(self) -> None:
        lock = os.open(self.directory / ".lock", os.O_RDONLY | os.O_CREAT, 0o644)  # read-only: any uid may lock
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            states = self._states()
            errors = [s["error"] for s in states if s["state"] == BROKEN]
            if errors:
                atomic.write_bytes(self.directory / FAILED, encode_error(500, errors[0]), durable=False)
            else:
                (self.directory / FAILED).unlink(missing_ok=True)
            if not errors and sum(s["state"] == WARMED for s in states) >= self.workers:
                atomic.write_bytes(self.directory / READY, b"", durable=False)
            else:
                (self.directory / READY).unlink(missing_ok=True)
        finally:
            os.close(lock)
