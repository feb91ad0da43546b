"""Atomic file writes: a temporary name unique to the process and call, then a rename over the target."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

TEMP_MARK = ".imgclf-partial-"  # in every temporary file's name, and in no other file's
_pending: set[Path] = set()  # temporary files of writes in progress in this process


class WriteError(OSError):
    """A write that failed: ``filename`` is the file it was to replace."""


def write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """Replace ``path`` with ``data``; ``durable`` also fsyncs the file and its folder."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TEMP_MARK}")
    except OSError as e:
        raise WriteError(e.errno, e.strerror, str(path)) from None
    tmp = Path(name)
    _pending.add(tmp)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            if durable:
                os.fsync(file.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the model from a non-root server
        os.replace(tmp, path)
        if durable:
            _fsync_folder(path.parent)
    except OSError as e:
        _remove(tmp)
        raise WriteError(e.errno, e.strerror, str(path)) from None
    finally:
        _pending.discard(tmp)


def write_text(path: Path, text: str, durable: bool = True) -> None:
    write_bytes(path, text.encode(), durable)


def write_json(path: Path, value: Any) -> None:
    """Strict JSON (RFC 8259 has no NaN or Infinity): non-finite numbers become null."""
    write_text(path, json.dumps(finite_or_null(value), indent=1, allow_nan=False), durable=False)


def save_torch(path: Path, value: Any) -> None:
    """``torch.save`` through memory: a disk error is a WriteError naming the file, not torch's own."""
    import torch  # here: the report module uses this one on laptops without torch

    buffer = io.BytesIO()
    torch.save(value, buffer)
    write_bytes(path, buffer.getbuffer())


def finite_or_null(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    return value


def remove_temp_files() -> None:
    """Delete the temporary files of writes this process left unfinished (to free a full disk)."""
    for tmp in list(_pending):
        _remove(tmp)
        _pending.discard(tmp)


def remove_leftovers(folder: Path) -> list[Path]:
    """Delete the temporary files that killed processes left anywhere under ``folder``; returns them."""
    found = sorted(p for p in Path(folder).rglob(f".*{TEMP_MARK}*") if p.is_file())
    for tmp in found:
        _remove(tmp)
    return found


def _remove(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        tmp.unlink()


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable, where the filesystem can (FUSE mounts refuse fsync on a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
