"""The one precision rule for training and serving.

``auto`` means:
- GPU, training: bf16 where the GPU has it natively (compute capability 8.0 and later: A10G, L4,
  A100, H100), else fp16 with loss scaling (T4 7.5, V100 7.0: no bf16 tensor cores, and cuDNN has
  no bf16 convolution engines below 8.0, so emulated bf16 would be slower than fp32).
- GPU, serving: fp16 everywhere (inference needs no bf16 range, and fp16 runs on every GPU's
  tensor cores).
- CPU, serving: bf16 where the CPU has native bf16 instructions (AVX512-BF16 or AMX), else fp32.
- CPU, training: fp32. On a CPU with AMX (torch 2.9, oneDNN), bf16 autocast trains a ResNet-18 on
  3 classes of 16 px images (lr 0.001) to a NaN loss within 2 to 30 epochs where fp32 trains on:
  the forward pass and every other gradient stay finite, and one convolution's weight gradient
  (``layer4.0.conv1``, a 3x3 stride-2 kernel over a 1x1 feature map) comes back NaN. The same step
  of two seeded runs, with the same loss (0.0228), gave a NaN weight gradient in one and a finite
  one in the other: the backward-weights kernel, not bf16's range (which is fp32's), so no loss
  scale or learning rate avoids it; inference runs no backward kernel.
An explicit fp32, bf16 or fp16 is used as asked (bf16 on a CPU trains at that risk); fp16 needs a GPU.
"""

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
