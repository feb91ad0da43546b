"""Which GPUs the host has, which of them torch in this image can use, and the device to run on."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import cuda_compat
from .config import ALLOW_CPU_ENV, ConfigError

log = logging.getLogger(__name__)
PROC_GPUS = Path("/proc/driver/nvidia/gpus")


class GpuUnusable(ConfigError):
    """The host has NVIDIA GPUs that torch in this image cannot use."""


def host_gpu_count() -> int:
    """NVIDIA GPUs visible to the container (nvidia-smi, else the driver's /proc entries), CUDA untouched."""
    drivers = cuda_compat.smi_drivers()
    if drivers is not None:
        return len(drivers)
    try:
        return sum(1 for _ in PROC_GPUS.iterdir())
    except OSError:
        return 0


def has_kernels(capability: tuple[int, int], arch_list: Sequence[str]) -> bool:
    """Whether torch's compiled architectures (SASS ``sm_``, PTX ``compute_``) run on a GPU of ``capability``."""
    for match in filter(None, (re.fullmatch(r"(sm|compute)_(\d+)(\d)([af]?)", arch) for arch in arch_list)):
        kind, built, specific = match.group(1), (int(match.group(2)), int(match.group(3))), match.group(4)
        family = kind == "compute" or built[0] == capability[0]  # PTX runs on later GPUs, SASS on its major only
        if built <= capability and family and (built == capability or not specific):  # sm_90a: on 9.0 only
            return True
    return False


def native_bf16(capability: tuple[int, int]) -> bool:
    """bf16 tensor cores and cuDNN bf16 convolutions, not emulated bf16 (docs/gpu.md: precision)."""
    return capability >= (8, 0)


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    capability: tuple[int, int]
    has_kernels: bool
    native_bf16: bool


@dataclass
class Report:
    """What doctor prints and what the device choice rests on."""

    host_gpus: int
    driver: str
    torch_version: str
    torch_cuda: str | None
    arch_list: list[str]
    compat: str  # cuda_compat's decision, as the launcher left it
    cuda_available: bool
    cuda_error: str = ""
    gpus: list[Gpu] = field(default_factory=list)

    @property
    def usable_gpus(self) -> int:
        return sum(g.has_kernels for g in self.gpus) if self.cuda_available else 0

    def problem(self) -> str | None:
        """Why torch cannot use the host's GPUs, with the fix; None when it can (or there are none)."""
        if self.host_gpus == 0:
            return None
        needs = f"this image's torch {self.torch_version} is a CUDA {self.torch_cuda} build"
        if self.torch_cuda is None:
            return (f"the host has {self.host_gpus} NVIDIA GPU(s) but this image's torch {self.torch_version} "
                    "is a CPU-only build; build the image with a CUDA torch (docs/gpu.md: build choices)")
        if not self.cuda_available:
            native = cuda_compat.native_min_driver(self.torch_cuda)
            return (f"the host has {self.host_gpus} NVIDIA GPU(s) with driver {self.driver}, but torch cannot use "
                    f"them ({self.cuda_error or 'torch.cuda.is_available() is False'}); {needs}, which needs "
                    f"driver {cuda_compat.show(native)} or later (compat libs {self.compat}). "
                    "Fix: run on a newer driver (endpoints: InferenceAmiVersion "
                    "al2023-ami-sagemaker-inference-gpu-4-1 or al2-ami-sagemaker-inference-gpu-3-1; batch transform: "
                    "TransformAmiVersion al2-ami-sagemaker-batch-gpu-535) or use an image built for this driver "
                    f"(docs/gpu.md: build choices); {ALLOW_CPU_ENV}=true runs on the CPU instead")
        missing = [g for g in self.gpus if not g.has_kernels]
        if missing:
            names = ", ".join(f"GPU {g.index} {g.name} (compute capability {g.capability[0]}.{g.capability[1]})"
                              for g in missing)
            return (f"{names}: {needs} with kernels for {' '.join(self.arch_list)} only. Fix: an image built with a "
                    f"torch that has kernels for it (docs/gpu.md: build choices; V100 needs a cu126 build), or another "
                    f"instance type; {ALLOW_CPU_ENV}=true runs on the CPU instead")
        return None


def _cuda_state() -> tuple[bool, str]:
    """torch.cuda.is_available(), and torch's own warning when it says no (e.g. driver too old)."""
    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    message = " ".join(" ".join(str(w.message).split()) for w in caught) if not available else ""
    return available, message[:400]


def probe() -> Report:
    """Look at the host and at torch in this process (initialises CUDA: not in a process that forks later)."""
    import torch

    available, error = _cuda_state()
    arch_list = list(torch.cuda.get_arch_list()) if torch.version.cuda else []
    gpus = []
    if available:
        for i in range(torch.cuda.device_count()):
            capability = torch.cuda.get_device_capability(i)
            gpus.append(Gpu(i, torch.cuda.get_device_name(i), capability, has_kernels(capability, arch_list),
                            native_bf16(capability)))
    return Report(
        host_gpus=host_gpu_count(), driver=cuda_compat.show(cuda_compat.host_driver()),
        torch_version=torch.__version__, torch_cuda=torch.version.cuda, arch_list=arch_list,
        compat=os.environ.get(cuda_compat.STATE_ENV, "not decided (not started through train, serve or doctor)"),
        cuda_available=available, cuda_error=error, gpus=gpus,
    )


def probe_in_subprocess(timeout: float = 120) -> Report:
    """:func:`probe` in a fresh Python, so that this process never initialises CUDA (gunicorn's master forks)."""
    result = subprocess.run([sys.executable, "-m", "imgclf.gpu"], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"GPU probe failed: {result.stderr.strip()[-500:]}")
    data = json.loads(result.stdout)
    data["gpus"] = [Gpu(**{**g, "capability": tuple(g["capability"])}) for g in data["gpus"]]
    return Report(**data)


def usable_gpu_count() -> int:
    """GPUs torch can use, for sizing serve's workers: 0 on a GPU host torch cannot use (each worker says why)."""
    if host_gpu_count() == 0:
        return 0
    try:
        report = probe_in_subprocess()
    except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError) as e:
        log.error("%s; sizing workers for the CPU", e)
        return 0
    if report.problem():
        log.error("%s", report.problem())
    return report.usable_gpus


def select_device(local_rank: int, allow_cpu: bool, report: Report | None = None):
    """GPU ``local_rank``, or the CPU on a CPU host; :class:`GpuUnusable` on a GPU host torch cannot use."""
    import torch

    report = report or probe()
    problem = report.problem()
    if problem is None and report.usable_gpus:
        return torch.device("cuda", local_rank)
    if problem is not None and not allow_cpu:
        raise GpuUnusable(problem)
    return torch.device("cpu")


if __name__ == "__main__":
    json.dump(asdict(probe()), sys.stdout)
