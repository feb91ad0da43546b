"""The failure reason SageMaker shows (the first 1,024 characters of /opt/ml/output/failure), written
as far as the disk allows and never raising: the exit status marks a job failed."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

from . import atomic, resources
from .resources import CGROUP

log = logging.getLogger(__name__)

FAILURE_FILE = "failure"
FAILURE_REASON_LIMIT = 1024


def write_failure(output_dir: Path, message: str) -> bool:
    """Replace the failure file with ``message`` (shortened); False when the disk refused it."""
    atomic.remove_temp_files()  # on a full disk, our own half-written files are what to free first
    try:
        atomic.write_text(Path(output_dir) / FAILURE_FILE, message[:FAILURE_REASON_LIMIT])
        return True
    except OSError as e:
        log.error("could not write the failure reason to %s (%s); the reason was: %s",
                  Path(output_dir) / FAILURE_FILE, e.strerror, message[:FAILURE_REASON_LIMIT])
        return False


def describe_os_error(e: OSError) -> str:
    """``could not write /opt/ml/model/model.pt: No space left on device (ENOSPC)`` and advice."""
    code = errno.errorcode.get(e.errno or 0, "")
    what = f"could not write {e.filename}" if isinstance(e, atomic.WriteError) else str(e.filename or "system error")
    advice = {
        errno.ENOSPC: "; give the job a larger volume (VolumeSizeInGB) or write fewer checkpoints",
        errno.EDQUOT: "; the disk quota is used up",
        errno.EROFS: "; that folder is mounted read-only",
        errno.EACCES: "; this user may not write there",
    }.get(e.errno or 0, "")
    return f"{what}: {e.strerror or e}" + (f" ({code})" if code else "") + advice


def oom_kills(root: Path = CGROUP) -> int:
    """How many processes the kernel's out-of-memory killer has killed in this container's cgroup
    (``oom_kill`` in v2 ``memory.events``, v1 ``memory/memory.oom_control``); 0 where unreadable."""
    for path in (root / "memory.events", root / "memory" / "memory.oom_control"):
        try:
            for line in path.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return 0


def memory_limit_text(root: Path = CGROUP) -> str:
    """The cgroup's memory limit for people: ``3.0 GiB``, or the machine's memory without one."""
    physical = resources.physical_memory()
    try:
        limit = resources.memory_limit(root)
    except (OSError, ValueError):
        limit = None
    if limit and limit < physical:  # cgroup v1 says "no limit" with a number larger than any machine
        return f"{limit / 2**30:.1f} GiB (the container's limit)"
    return f"{physical / 2**30:.1f} GiB (the machine's memory)"


def describe_oom_kill(root: Path = CGROUP) -> str:
    return (f"out of memory: the kernel killed the training process (SIGKILL) when the job used all of its "
            f"{memory_limit_text(root)}; use a smaller batch-size or image-size, cache-images=false, or an "
            "instance type with more memory")
