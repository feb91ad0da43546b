"""The failure reason SageMaker shows (DescribeTrainingJob's FailureReason: the first 1,024
characters of /opt/ml/output/failure). Written even when the disk is full or read-only as far as
the disk allows, and never raising: the exit status, not this file, is what marks a job failed."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

from . import atomic

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
    if isinstance(e, atomic.WriteError):
        what = f"could not write {e.filename}"
    else:
        what = f"{e.filename}" if e.filename else "system error"
    advice = {
        errno.ENOSPC: "; give the job a larger volume (VolumeSizeInGB) or write fewer checkpoints",
        errno.EDQUOT: "; the disk quota is used up",
        errno.EROFS: "; that folder is mounted read-only",
        errno.EACCES: "; this user may not write there",
    }.get(e.errno or 0, "")
    return f"{what}: {e.strerror or e}" + (f" ({code})" if code else "") + advice
