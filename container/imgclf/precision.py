"""The one precision rule for training and serving (docs/gpu.md#precision)."""

from __future__ import annotations

from pathlib import Path

import torch

from .config import ConfigError
from .gpu import native_bf16

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SETTING = {"train": "precision", "serve": "IMGCLF_PRECISION"}  # what the user sets, for messages


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Native bf16 instructions (AVX512-BF16 or AMX), where bf16 beats fp32 on the CPU."""
    try:
        flags = cpuinfo.read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def choose(requested: str, purpose: str, capability: tuple[int, int] | None, cpu_bf16: bool) -> torch.dtype:
    """The compute dtype. ``capability`` is the GPU's compute capability, None on the CPU. Pure."""
    if requested == "fp16" and capability is None:
        raise ConfigError(f"{SETTING[purpose]}=fp16 needs a GPU; use auto, fp32 or bf16 on a CPU instance")
    if requested != "auto":
        return DTYPES[requested]
    if capability is None:
        return torch.bfloat16 if cpu_bf16 and purpose == "serve" else torch.float32
    if purpose == "train" and native_bf16(capability):
        return torch.bfloat16
    return torch.float16


def for_device(requested: str, purpose: str, device: torch.device) -> torch.dtype:
    """:func:`choose` for a torch device in this process."""
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    return choose(requested, purpose, capability, cpu_has_bf16())


def autocast_dtype(requested: str, device: torch.device) -> torch.dtype | None:
    """Training's autocast dtype, None for plain fp32 (fp16 trains with a loss scale: its
    gradients underflow without one)."""
    dtype = for_device(requested, "train", device)
    return None if dtype == torch.float32 else dtype
