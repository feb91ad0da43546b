"""CUDA forward compatibility: the compat libs first on the library path only where the host's driver needs them."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

COMPAT_DIR = Path("/usr/local/cuda/compat")
MODE_ENV = "IMGCLF_CUDA_COMPAT"  # auto (default), on, off
STATE_ENV = "IMGCLF_CUDA_COMPAT_STATE"  # what main() decided, for doctor and error messages
PROC_VERSION = Path("/proc/driver/nvidia/version")
LIB_DIRS = (Path("/usr/lib/x86_64-linux-gnu"), Path("/usr/lib64"), Path("/usr/lib/aarch64-linux-gnu"),
            Path("/usr/local/nvidia/lib64"))

# The oldest driver that runs each CUDA major release without the compat libs (docs/gpu.md: sources)
NATIVE_MIN_DRIVER = {13: (580,), 12: (525, 60, 13), 11: (450, 80, 2)}

Version = tuple[int, ...]


def parse_version(text: str | None) -> Version | None:
    """'535.54.03' -> (535, 54, 3); None for anything that is not a dotted number."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)*)\s*", text or "")
    return tuple(int(part) for part in match.group(1).split(".")) if match else None


def show(version: Version | None) -> str:
    return ".".join(f"{part:02d}" if i == 2 else str(part) for i, part in enumerate(version)) if version else "none"


def native_min_driver(cuda: str) -> Version | None:
    parsed = parse_version(cuda)
    return NATIVE_MIN_DRIVER.get(parsed[0]) if parsed else None


def compat_branches(require_cuda: str) -> frozenset[int]:
    """Driver branches NVIDIA_REQUIRE_CUDA declares (``brand=tesla,driver>=535,driver<536`` -> 535)."""
    return frozenset(int(m) for m in re.findall(r"driver>=(\d+)(?:\.\d+)*,driver<\d+", require_cuda))


@dataclass(frozen=True)
class Decision:
    enable: bool
    reason: str


def decide(driver: Version | None, torch_cuda: str | None, compat: Version | None, branches: frozenset[int],
           mode: str = "auto") -> Decision:
    """Whether the compat libs go first on the library path. Pure: every input is passed in."""
    if mode == "off":
        return Decision(False, f"{MODE_ENV}=off")
    if driver is None:
        return Decision(False, "no NVIDIA driver on this host")
    if compat is None:
        return Decision(False, f"driver {show(driver)}; the image has no CUDA compat libs in {COMPAT_DIR}")
    if mode == "on":
        return Decision(True, f"{MODE_ENV}=on: compat libs {show(compat)} with driver {show(driver)}")
    need = native_min_driver(torch_cuda) if torch_cuda else None
    if need is None:
        return Decision(False, f"driver {show(driver)}; torch is not a CUDA 11-13 build (CUDA {torch_cuda})")
    if driver >= need:
        return Decision(False, f"driver {show(driver)} runs CUDA {torch_cuda} natively (needs {show(need)} or later)")
    if driver[0] not in branches:
        supported = ", ".join(f"R{b}" for b in sorted(branches)) or "none declared in NVIDIA_REQUIRE_CUDA"
        return Decision(False, f"driver {show(driver)} is older than CUDA {torch_cuda} needs ({show(need)}) and "
                               f"the compat libs do not support its branch R{driver[0]} (they support {supported})")
    if driver >= compat:
        return Decision(False, f"driver {show(driver)} is not older than the compat libs ({show(compat)})")
    return Decision(True, f"driver {show(driver)} is older than CUDA {torch_cuda} needs ({show(need)}): "
                          f"using the forward-compatibility libs {show(compat)} from {COMPAT_DIR}")


def smi_drivers(run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> list[str] | None:
    """nvidia-smi's driver version, once per GPU; None where nvidia-smi does not answer."""
    try:
        result = run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                     capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return [line.strip() for line in result.stdout.splitlines() if parse_version(line)] if result.returncode == 0 else None


def driver_from_proc(path: Path = PROC_VERSION) -> Version | None:
    """``NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.54.03  Tue Jun  6 ...``"""
    try:
        match = re.search(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)", path.read_text())
    except OSError:
        return None
    return parse_version(match.group(1)) if match else None


def lib_version(folder: Path) -> Version | None:
    """The version in a ``libcuda.so.<version>`` file name in ``folder`` (the newest if several)."""
    try:
        names = [p.name for p in folder.iterdir()]
    except OSError:
        return None
    versions = [parse_version(n[len("libcuda.so."):]) for n in names if n.startswith("libcuda.so.")]
    found = [v for v in versions if v and len(v) > 1]  # libcuda.so.1 is the soname link, not a version
    return max(found) if found else None


def host_driver(run: Callable[..., subprocess.CompletedProcess] = subprocess.run, proc: Path = PROC_VERSION,
                lib_dirs: Iterable[Path] = LIB_DIRS) -> Version | None:
    """The host's driver: nvidia-smi, else the kernel module's, else the mounted libcuda's (not the compat one)."""
    smi = smi_drivers(run) or [None]
    return parse_version(smi[0]) or driver_from_proc(proc) or next(filter(None, map(lib_version, lib_dirs)), None)


def torch_cuda_version() -> str | None:
    """torch.version.cuda, read from torch/version.py without importing torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return None
    try:
        text = (Path(spec.origin).parent / "version.py").read_text()
    except OSError:
        return None
    match = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([\d.]+)['\"]", text, re.MULTILINE)
    return match.group(1) if match else None


def with_library_path(environ: Mapping[str, str], decision: Decision, compat_dir: Path) -> dict[str, str]:
    """The environment for the real command: compat dir first when enabled, absent otherwise."""
    env = dict(environ)
    kept = [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p and Path(p) != compat_dir]
    paths = [str(compat_dir), *kept] if decision.enable else kept
    if paths:
        env["LD_LIBRARY_PATH"] = ":".join(paths)
    else:
        env.pop("LD_LIBRARY_PATH", None)
    env[STATE_ENV] = ("enabled: " if decision.enable else "not used: ") + decision.reason
    return env


def decide_here(environ: Mapping[str, str], compat_dir: Path) -> Decision:
    mode = environ.get(MODE_ENV, "auto").strip().lower() or "auto"
    if mode not in ("auto", "on", "off"):
        return Decision(False, f"{MODE_ENV}={mode!r} is not auto, on or off; compat libs not used")
    branches = compat_branches(environ.get("NVIDIA_REQUIRE_CUDA", ""))
    return decide(host_driver(), torch_cuda_version(), lib_version(compat_dir), branches, mode)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m imgclf.cuda_compat COMMAND [ARGS...]``: decide, then exec COMMAND."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        sys.exit("usage: python -m imgclf.cuda_compat COMMAND [ARGS...]")
    decision = decide_here(os.environ, COMPAT_DIR)
    if decision.enable or decision.reason != "no NVIDIA driver on this host":
        print(f"imgclf: CUDA compat libs {'enabled' if decision.enable else 'not used'}: {decision.reason}",
              file=sys.stderr, flush=True)
    os.execvpe(args[0], args, with_library_path(os.environ, decision, COMPAT_DIR))


if __name__ == "__main__":
    main()
