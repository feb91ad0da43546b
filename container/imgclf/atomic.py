"""Every file the package writes goes through here: written to a temporary name unique to this
process and call, flushed to disk, then renamed over the target, so a reader (the toolkit,
SageMaker's uploads, a restarted job) sees the old file or the new one, never half of one.

A failed write removes its temporary file before raising, so a full disk is not left fuller, and
the error names the file: ``[Errno 28] No space left on device: '/opt/ml/model/model.pt'``.
A process killed mid-write (SIGKILL: a spot reclaim without grace, the out-of-memory killer)
leaves its temporary file behind; the names (``.model.pt.imgclf-partial-k3j9x1``) say whose they
are, so the next start removes them (:func:`remove_leftovers`) before SageMaker uploads them.
"""

from __future__ import annotations

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
    """``torch.save`` through memory, so a disk error is an OSError with the path and errno
    rather than torch's ``enforce fail at inline_container.cc``."""
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
    """Delete the temporary files of writes this process left unfinished (first thing to do when
    the disk is full and a failure reason still has to be written)."""
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
    try:
        tmp.unlink()
    except OSError:
        pass


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX: a directory entry lives in the folder's data)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (FUSE mounts) refuse fsync on a folder; the data itself is synced
    finally:
        os.close(fd)
