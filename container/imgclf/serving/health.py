"""Whether every worker holds a warmed model: ``ready`` or ``failed.json``, the files nginx answers /ping from."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from .. import atomic
from .codecs import encode_error

READY, FAILED = "ready", "failed.json"
DIED = "died.json"  # the master's note of workers that died before their model was warm
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
        state_file = self.directory / f"worker-{pid}.json"
        state = json.loads(state_file.read_text())["state"] if state_file.exists() else None
        if state in (None, LOADING):
            self._note_death(pid)
        state_file.unlink(missing_ok=True)
        self._publish()

    def _note_death(self, pid: int) -> None:
        """A worker died before its model was warm: /ping says so until every worker is, not 'loading' for ever."""
        note = self.directory / DIED
        deaths = json.loads(note.read_text())["deaths"] + 1 if note.exists() else 1
        error = (f"{deaths} worker(s) died while loading the model, the last pid {pid} (the log says how; a worker "
                 "killed with SIGKILL usually ran out of memory: give the container more memory or set fewer "
                 "SAGEMAKER_MODEL_SERVER_WORKERS)")
        atomic.write_bytes(note, json.dumps({"deaths": deaths, "error": error}).encode(), durable=False)

    def _states(self) -> list[dict]:
        paths = sorted(self.directory.glob("worker-*.json"))
        return [json.loads(p.read_text()) for p in paths if _alive(int(p.stem.removeprefix("worker-")))]

    def _publish(self) -> None:
        lock = os.open(self.directory / ".lock", os.O_RDONLY | os.O_CREAT, 0o644)  # read-only: any uid may lock
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            states = self._states()
            errors = [s["error"] for s in states if s["state"] == BROKEN]
            ready = not errors and sum(s["state"] == WARMED for s in states) >= self.workers
            died = self.directory / DIED
            if ready:
                died.unlink(missing_ok=True)
            elif not errors and died.exists():
                errors = [json.loads(died.read_text())["error"]]
            if errors:
                atomic.write_bytes(self.directory / FAILED, encode_error(500, errors[0]), durable=False)
            else:
                (self.directory / FAILED).unlink(missing_ok=True)
            if ready:
                atomic.write_bytes(self.directory / READY, b"", durable=False)
            else:
                (self.directory / READY).unlink(missing_ok=True)
        finally:
            os.close(lock)
