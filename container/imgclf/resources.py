"""What the container may use, read once when ``serve`` starts, and the decoding that fits in it.

The memory limit is the cgroup's (v2 ``memory.max``, v1 ``memory/memory.limit_in_bytes``), the CPU
count its quota (v2 ``cpu.max``, v1 ``cpu/cpu.cfs_quota_us`` over ``cpu.cfs_period_us``), each
bounded by the machine's own memory and by the CPUs this process may run on: ``docker run
--cpus 2`` on a 48-core host is 2 CPUs, not 48. No torch here: ``imgclf.config`` imports it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")

# Measured (bench/decode_memory.py; the image under load: tests/test_decode.py; docs: serving limits):
# what one decode may hold per pixel of the cap (a progressive 4:4:4 JPEG, the costliest accepted
# image at that cap: preprocess.ACCEPTED_FORMATS gives costlier formats fewer pixels),
DECODE_BYTES_PER_PIXEL = 6
# serve, nginx and the first worker's runtime, torch included, and each worker's own share besides its model
# (activations, allocator slack, OpenVINO's libraries and compiled model).
RUNTIME_BYTES = 550_000_000
WORKER_BYTES = 250_000_000
MIN_IMAGE_PIXELS = 4_000_000  # below this the envelope does not fit: serve warns and keeps this cap


@dataclass(frozen=True)
class Resources:
    memory_bytes: int
    cpus: int


def _number(text: str) -> int | None:
    """A cgroup limit: "max" (v2) or -1 (v1 quota) means none."""
    text = text.strip()
    return None if text in ("max", "-1", "") else int(text)


def memory_limit(root: Path = CGROUP) -> int | None:
    for path in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        if path.is_file():
            return _number(path.read_text())
    return None


def cpu_quota(root: Path = CGROUP) -> float | None:
    """CPUs' worth of time per period the cgroup may use, or None without a quota."""
    v2 = root / "cpu.max"
    if v2.is_file():
        quota, _, period = v2.read_text().partition(" ")
        limit = _number(quota)
        return limit / int(period) if limit else None
    for folder in (root / "cpu", root / "cpu,cpuacct"):
        if (folder / "cpu.cfs_quota_us").is_file():
            limit = _number((folder / "cpu.cfs_quota_us").read_text())
            return limit / int((folder / "cpu.cfs_period_us").read_text()) if limit else None
    return None


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def read(root: Path = CGROUP) -> Resources:
    physical = physical_memory()
    cpus = len(os.sched_getaffinity(0))
    quota = cpu_quota(root)
    if quota:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return Resources(min(memory_limit(root) or physical, physical), cpus)


def model_bytes(model_dir: Path) -> int:
    """The model files' size (0 when absent: loading them fails later, saying why)."""
    return sum(f.stat().st_size for f in model_dir.glob("*") if f.is_file()) if model_dir.is_dir() else 0


def reserved_bytes(workers: int, model_size: int) -> int:
    """What serving holds besides decoding: the runtime, and each worker with its model (twice its
    file: the weights, and the file read while loading)."""
    return RUNTIME_BYTES + workers * (WORKER_BYTES + 2 * model_size)


def decoding_bytes(workers: int, slots: int, pixels: int) -> int:
    """The most memory decoding may hold at once: every slot of every worker at the pixel cap."""
    return workers * slots * pixels * DECODE_BYTES_PER_PIXEL


def fit_decoding(budget: int, workers: int, slots: int, pixels: int) -> tuple[int, int]:
    """Decode slots per worker and the pixel cap such that decoding_bytes fits ``budget``: fewer
    slots first, then a smaller cap (never below MIN_IMAGE_PIXELS)."""
    slots = max(1, min(slots, budget // decoding_bytes(workers, 1, pixels)))
    return slots, max(MIN_IMAGE_PIXELS, min(pixels, budget // decoding_bytes(workers, slots, 1)))
