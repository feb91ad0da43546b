"""``doctor``: what this image sees of the host's GPUs and what ``train`` and ``serve`` would do there."""

from __future__ import annotations

import os
import sys

from . import cuda_compat, precision
from .config import ALLOW_CPU_ENV, ConfigError, cpu_allowed
from .gpu import Report, probe

NAMES = {dtype: name for name, dtype in precision.DTYPES.items()}


def _precisions(capability: tuple[int, int] | None, cpu_bf16: bool) -> str:
    chosen = {p: NAMES[precision.choose("auto", p, capability, cpu_bf16)] for p in ("train", "serve")}
    return f"precision auto: train {chosen['train']}, serve {chosen['serve']}"


def verdict(report: Report, allow_cpu: bool) -> tuple[int, str]:
    problem = report.problem()
    if problem and allow_cpu:
        return 0, f"verdict: GPUs unusable, running on the CPU because {ALLOW_CPU_ENV}=true ({problem})"
    if problem:
        return 1, f"verdict: FAIL: {problem}"
    if report.usable_gpus:
        return 0, f"verdict: OK: train and serve use {report.usable_gpus} GPU(s)"
    return 0, "verdict: OK: no NVIDIA GPU on this host; train and serve use the CPU"


def render(report: Report, compat_libs: str, cpu_bf16: bool, allow_cpu: bool) -> tuple[int, list[str]]:
    """The report as lines, and the exit status."""
    lines = [
        f"driver: {report.driver} ({report.host_gpus} NVIDIA GPU(s) on the host)",
        f"torch: {report.torch_version}, CUDA {report.torch_cuda or 'none (CPU build)'}, "
        f"kernels for {' '.join(report.arch_list) or 'no GPU'}",
        f"compat libs: {compat_libs} in {cuda_compat.COMPAT_DIR}; {report.compat}",
        f"torch.cuda.is_available(): {report.cuda_available}"
        + (f" ({report.cuda_error})" if report.cuda_error else ""),
    ]
    for g in report.gpus:
        lines.append(f"GPU {g.index}: {g.name}, compute capability {g.capability[0]}.{g.capability[1]}, "
                     f"torch kernels: {'yes' if g.has_kernels else 'NO'}, "
                     f"native bf16: {'yes' if g.native_bf16 else 'no'}, " + _precisions(g.capability, cpu_bf16))
    lines.append(f"CPU: native bf16 {'yes' if cpu_bf16 else 'no'}, " + _precisions(None, cpu_bf16))
    status, line = verdict(report, allow_cpu)
    return status, lines + [line]


def main() -> int:
    """Print the report; exit 0 when ``train`` and ``serve`` would run here, 1 when the GPUs are unusable."""
    try:
        allow_cpu = cpu_allowed(os.environ)
    except ConfigError as e:
        print(f"verdict: FAIL: {e}")
        return 1
    compat_libs = cuda_compat.show(cuda_compat.lib_version(cuda_compat.COMPAT_DIR))
    status, lines = render(probe(), "none" if compat_libs == "none" else f"driver {compat_libs}",
                           precision.cpu_has_bf16(), allow_cpu)
    print("\n".join(lines))
    return status


if __name__ == "__main__":
    sys.exit(main())
