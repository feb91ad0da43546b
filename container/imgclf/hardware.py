"""What the machine offers: GPUs and CPU number formats."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import torch


def count_gpus() -> int:
    """GPUs visible to the container, counted without initialising CUDA in this process."""
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        listing = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))


def cpu_has_bf16() -> bool:
    """Native bf16 instructions (AVX512-BF16 or AMX), where bf16 beats fp32 on the CPU."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def fast_dtype(device: torch.device) -> torch.dtype | None:
    """The reduced precision worth using on ``device``, or None for fp32."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else None
