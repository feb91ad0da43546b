"""GPU hosts without a GPU: the compat-libs decision with fake drivers and fake compat folders, a fake
nvidia-smi on PATH for `train`, `serve` and `doctor`, and the precision rule by compute capability."""

from __future__ import annotations

import ctypes.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import FAST, ServeProcess, channels_of, run_job, small_model
from imgclf import cuda_compat, doctor, precision
from imgclf.config import ConfigError, ServingConfig
from imgclf.gpu import Gpu, GpuUnusable, Report, has_kernels, select_device

# NVIDIA_REQUIRE_CUDA of nvidia/cuda:13.0.2-base-ubuntu24.04 (brands other than tesla trimmed):
# the compat libs support R535, R550, R565, R570 and R575; R470 is not among them.
REQUIRE_13_0 = "cuda>=13.0 " + " ".join(
    f"brand=tesla,driver>={b},driver<{b + 1} brand=unknown,driver>={b},driver<{b + 1}" for b in (535, 550, 565, 570, 575))
# nvidia/cuda 12.x bases also list R470 (e.g. 12.0.0: brand=tesla,driver>=470,driver<471).
REQUIRE_12_X = "cuda>=12.6 brand=tesla,driver>=470,driver<471 brand=tesla,driver>=535,driver<536"
CU130_ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]  # torch 2.14.1+cu130, read here
V = cuda_compat.parse_version


# --- the compat-libs decision -------------------------------------------------------------------

def test_require_cuda_branches_of_the_13_0_base():
    assert cuda_compat.compat_branches(REQUIRE_13_0) == {535, 550, 565, 570, 575}
    assert cuda_compat.compat_branches("cuda>=13.0") == frozenset()


@pytest.mark.parametrize("driver, torch_cuda, require, enable, words", [
    ("535.54.03", "13.0", REQUIRE_13_0, True, ["older than CUDA 13.0 needs (580)", "580.95.05"]),   # inference AMI gpu-2
    ("550.163.01", "13.0", REQUIRE_13_0, True, ["forward-compatibility"]),                           # AMI gpu-3-1
    ("580.65.06", "13.0", REQUIRE_13_0, False, ["runs CUDA 13.0 natively"]),                          # AMI gpu-4-1
    ("590.10.01", "13.0", REQUIRE_13_0, False, ["natively"]),                                         # newer than compat
    ("470.256.02", "13.0", REQUIRE_13_0, False, ["branch R470", "R535, R550, R565, R570, R575"]),     # default g4dn/g5
    ("470.256.02", "12.6", REQUIRE_12_X, True, ["older than CUDA 12.6 needs (525.60.13)"]),           # a cu126 build
    ("535.54.03", "12.6", REQUIRE_12_X, False, ["natively"]),                                         # minor-version compat
    ("535.54.03", "13.0", "cuda>=13.0", False, ["none declared"]),                                    # no branch list
    ("535.54.03", None, REQUIRE_13_0, False, ["not a CUDA"]),                                         # CPU torch
])
def test_compat_decision(driver, torch_cuda, require, enable, words):
    decision = cuda_compat.decide(V(driver), torch_cuda, V("580.95.05"), cuda_compat.compat_branches(require))
    assert decision.enable is enable, decision
    for word in words:
        assert word in decision.reason, decision


def test_compat_decision_without_driver_or_compat_libs_and_the_override():
    branches = cuda_compat.compat_branches(REQUIRE_13_0)
    assert not cuda_compat.decide(None, "13.0", V("580.95.05"), branches).enable
    assert "no CUDA compat libs" in cuda_compat.decide(V("535.54.03"), "13.0", None, branches).reason
    assert not cuda_compat.decide(V("535.54.03"), "13.0", V("580.95.05"), branches, mode="off").enable
    assert cuda_compat.decide(V("470.256.02"), "13.0", V("580.95.05"), branches, mode="on").enable
    assert not cuda_compat.decide(V("535.54.03"), "13.0", V("530.30.02"), branches).enable  # compat older than driver


def test_driver_from_proc_and_from_the_mounted_libcuda(tmp_path):
    proc = tmp_path / "version"
    proc.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.54.03  Tue Jun  6 22:20:39 UTC 2023\n"
                    "GCC version:  gcc version 10.2.1\n")
    assert cuda_compat.driver_from_proc(proc) == (535, 54, 3)
    proc.write_text("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build\n")
    assert cuda_compat.driver_from_proc(proc) == (580, 65, 6)
    assert cuda_compat.driver_from_proc(tmp_path / "missing") is None
    libs = tmp_path / "lib"
    libs.mkdir()
    (libs / "libcuda.so.470.256.02").write_bytes(b"")
    (libs / "libcuda.so.1").symlink_to("libcuda.so.470.256.02")
    no_smi = lambda *a, **k: subprocess.CompletedProcess(a, 127, "", "")  # noqa: E731
    assert cuda_compat.host_driver(no_smi, tmp_path / "missing", [tmp_path / "none", libs]) == (470, 256, 2)
    assert cuda_compat.host_driver(no_smi, proc, [libs]) == (580, 65, 6)  # /proc before the libraries


def test_the_gpu_count_is_the_number_of_driver_lines_nvidia_smi_prints():
    """The count sets torchrun's processes per node: a notice on stdout must not add a GPU."""
    noisy = "Warning: persistence mode is disabled on device 00000000:00:1E.0\n580.65.06\n580.65.06\n"
    smi = lambda *a, **k: subprocess.CompletedProcess(a, 0, noisy, "")  # noqa: E731
    assert cuda_compat.smi_drivers(smi) == ["580.65.06", "580.65.06"]
    assert cuda_compat.host_driver(smi) == (580, 65, 6)


def test_torch_cuda_version_is_read_without_importing_torch():
    code = "import sys, imgclf.cuda_compat as c; print(c.torch_cuda_version(), 'torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == [str(torch.version.cuda), "False"]


# --- fake hosts: a fake nvidia-smi on PATH, a fake compat folder ----------------------------------

def fake_host(folder: Path, driver: str, gpu: str = "Tesla T4") -> dict[str, str]:
    """An environment whose PATH has an nvidia-smi that reports ``driver`` and one ``gpu``."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True)
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\ncase \"$*\" in\n"
                   f"  *--list-gpus*) echo 'GPU 0: {gpu} (UUID: GPU-00000000-fake)' ;;\n"
                   f"  *driver_version*) echo '{driver}' ;;\n"
                   "  *) exit 9 ;;\nesac\n")
    smi.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def fake_compat_dir(folder: Path, version: str = "580.95.05") -> Path:
    """A compat folder whose libcuda.so.1 is a real shared library (a copy of libz), so that a
    process can show which folder its dynamic loader took it from."""
    compat = folder / "compat"
    compat.mkdir()
    shutil.copy(_libz_path(), compat / f"libcuda.so.{version}")
    (compat / "libcuda.so.1").symlink_to(f"libcuda.so.{version}")
    return compat


def _libz_path() -> str:
    ctypes.CDLL(ctypes.util.find_library("z"))
    return next(line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines() if "libz.so" in line)


LAUNCH = """
import sys
from pathlib import Path
import imgclf.cuda_compat as c
c.COMPAT_DIR = Path(sys.argv[1])
c.main(sys.argv[2:])
"""
SHOW = ("import ctypes, os; ctypes.CDLL('libcuda.so.1'); "
        "print(os.environ.get('LD_LIBRARY_PATH', '')); print(os.environ['IMGCLF_CUDA_COMPAT_STATE']); "
        "print([l.split()[-1] for l in open('/proc/self/maps') if 'libcuda' in l][0])")


@pytest.mark.parametrize("driver, enabled", [("535.54.03", True), ("580.82.07", False)])
def test_launcher_execs_with_the_compat_libs_only_when_needed(tmp_path, driver, enabled):
    env = {**fake_host(tmp_path, driver), "NVIDIA_REQUIRE_CUDA": REQUIRE_13_0}
    compat = fake_compat_dir(tmp_path)
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    shutil.copy(compat / "libcuda.so.580.95.05", elsewhere / "libcuda.so.1")  # the "host's" libcuda
    env["LD_LIBRARY_PATH"] = f"{compat}:{elsewhere}"  # stale compat entry: must go when not needed
    result = subprocess.run([sys.executable, "-c", LAUNCH, str(compat), sys.executable, "-c", SHOW],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    library_path, state, loaded = result.stdout.splitlines()
    if enabled:
        assert library_path.split(":") == [str(compat), str(elsewhere)]
        assert state.startswith("enabled: driver 535.54.03 is older than CUDA")
        assert loaded.startswith(str(compat))  # the loader really took the compat libcuda
        assert "CUDA compat libs enabled" in result.stderr
    else:
        assert library_path.split(":") == [str(elsewhere)]
        assert state.startswith("not used: driver 580.82.07 runs CUDA")
        assert loaded.startswith(str(elsewhere))


def test_launcher_says_nothing_on_a_cpu_host_and_passes_arguments_and_exit_status(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    result = subprocess.run([sys.executable, "-c", LAUNCH, str(tmp_path), "sh", "-c", 'echo "$1"; exit 7', "sh", "a b"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (7, "a b\n", "")


# --- which GPUs torch can use -------------------------------------------------------------------

@pytest.mark.parametrize("capability, expected", [
    ((7, 5), True),    # T4, ml.g4dn
    ((7, 0), False),   # V100, ml.p3: CUDA 13 builds have no sm_70
    ((8, 0), True),    # A100
    ((8, 6), True),    # A10G, ml.g5
    ((8, 9), True),    # L4 / L40S (sm_86 SASS runs on 8.9)
    ((9, 0), True),    # H100
    ((12, 1), True),   # sm_120 SASS runs on 12.1
    ((6, 1), False),
])
def test_kernels_for_the_cu130_wheel(capability, expected):
    assert has_kernels(capability, CU130_ARCHS) is expected


def test_kernels_ptx_and_arch_specific_targets():
    assert has_kernels((10, 0), ["sm_90", "compute_90"])      # PTX JIT-compiles for newer GPUs
    assert not has_kernels((10, 0), ["sm_90a"])               # arch-specific: only 9.0
    assert has_kernels((9, 0), ["sm_90a"])
    assert not has_kernels((8, 0), ["sm_86"])                  # SASS never runs on an older minor


def report(**overrides) -> Report:
    values = dict(host_gpus=1, driver="470.256.02", torch_version="2.14.1+cu130", torch_cuda="13.0",
                  arch_list=CU130_ARCHS, compat="not used: driver 470.256.02 ... branch R470", cuda_available=False,
                  cuda_error="The NVIDIA driver on your system is too old (found version 11040).", gpus=[])
    return Report(**{**values, **overrides})


def test_driver_too_old_names_driver_gpu_count_cuda_and_fix():
    problem = report().problem()
    for word in ("driver 470.256.02", "CUDA 13.0", "580 or later", "too old", "InferenceAmiVersion", "IMGCLF_ALLOW_CPU=true"):
        assert word in problem, problem
    with pytest.raises(GpuUnusable, match="driver 470.256.02"):
        select_device(0, allow_cpu=False, report=report())
    assert select_device(0, allow_cpu=True, report=report()) == torch.device("cpu")


def test_gpu_without_kernels_names_the_gpu_and_the_build_that_has_them():
    v100 = report(driver="535.54.03", cuda_available=True, cuda_error="",
                  gpus=[Gpu(0, "Tesla V100-SXM2-16GB", (7, 0), False, False)])
    assert v100.usable_gpus == 0
    problem = v100.problem()
    assert "Tesla V100-SXM2-16GB (compute capability 7.0)" in problem and "cu126" in problem, problem
    with pytest.raises(GpuUnusable):
        select_device(0, allow_cpu=False, report=v100)


def test_usable_gpu_and_cpu_host():
    a10g = report(driver="535.54.03", cuda_available=True, cuda_error="",
                  gpus=[Gpu(0, "NVIDIA A10G", (8, 6), True, True)])
    assert a10g.problem() is None and a10g.usable_gpus == 1
    assert select_device(0, allow_cpu=False, report=a10g) == torch.device("cuda", 0)
    cpu_host = report(host_gpus=0, driver="none", cuda_error="")
    assert cpu_host.problem() is None
    assert select_device(0, allow_cpu=False, report=cpu_host) == torch.device("cpu")



def test_probe_keeps_torchs_warning_when_cuda_is_unusable(monkeypatch):
    """What torch says on an old driver (it warns and answers False) reaches the report, word for word."""
    import warnings

    from imgclf import gpu

    def old_driver() -> bool:
        warnings.warn("CUDA initialization: The NVIDIA driver on your system is too old\n (found version 11040).")
        return False

    monkeypatch.setattr(torch.cuda, "is_available", old_driver)
    report = gpu.probe()
    assert not report.cuda_available
    assert report.cuda_error == "CUDA initialization: The NVIDIA driver on your system is too old (found version 11040)."

# --- precision ----------------------------------------------------------------------------------

@pytest.mark.parametrize("capability, cpu_bf16, train, serve", [
    ((7, 5), False, torch.float16, torch.float16),    # T4: no native bf16 (torch's default check says yes)
    ((7, 0), False, torch.float16, torch.float16),    # V100
    ((8, 6), False, torch.bfloat16, torch.float16),   # A10G
    ((9, 0), False, torch.bfloat16, torch.float16),   # H100
    (None, True, torch.float32, torch.bfloat16),      # CPU with AVX512-BF16 / AMX: trains in fp32
    (None, False, torch.float32, torch.float32),      # older CPU
])
def test_auto_precision_by_compute_capability(capability, cpu_bf16, train, serve):
    assert precision.choose("auto", "train", capability, cpu_bf16) == train
    assert precision.choose("auto", "serve", capability, cpu_bf16) == serve


def test_explicit_precision_and_fp16_needs_a_gpu():
    assert precision.choose("bf16", "train", (7, 5), False) == torch.bfloat16  # asked for: honoured
    assert precision.choose("fp32", "serve", (8, 6), True) == torch.float32
    with pytest.raises(ConfigError, match="^precision=fp16 needs a GPU"):
        precision.choose("fp16", "train", None, True)
    with pytest.raises(ConfigError, match="^IMGCLF_PRECISION=fp16 needs a GPU"):
        precision.choose("fp16", "serve", None, True)
    assert precision.autocast_dtype("fp32", torch.device("cpu")) is None


def test_serving_config_reads_the_opt_in_and_refuses_nonsense():
    assert ServingConfig.from_environ(0, 4, {"IMGCLF_ALLOW_CPU": "true"}).allow_cpu
    assert not ServingConfig.from_environ(0, 4, {}).allow_cpu
    with pytest.raises(ConfigError, match="IMGCLF_ALLOW_CPU='maybe' must be true or false"):
        ServingConfig.from_environ(0, 4, {"IMGCLF_ALLOW_CPU": "maybe"})
    with pytest.raises(ConfigError, match="IMGCLF_PRECISION='fp8' must be one of auto, fp32, bf16, fp16"):
        ServingConfig.from_environ(0, 4, {"IMGCLF_PRECISION": "fp8"})


# --- doctor -------------------------------------------------------------------------------------

def test_doctor_lines_for_a_t4_host():
    t4 = report(driver="535.54.03", cuda_available=True, cuda_error="", compat="enabled: driver 535.54.03 is older",
                gpus=[Gpu(0, "Tesla T4", (7, 5), True, False)])
    status, lines = doctor.render(t4, "driver 580.95.05", cpu_bf16=False, allow_cpu=False)
    text = "\n".join(lines)
    assert status == 0
    assert "driver: 535.54.03 (1 NVIDIA GPU(s) on the host)" in text
    assert "compat libs: driver 580.95.05 in /usr/local/cuda/compat; enabled: driver 535.54.03" in text
    assert ("GPU 0: Tesla T4, compute capability 7.5, torch kernels: yes, native bf16: no, "
            "precision auto: train fp16, serve fp16") in text
    assert lines[-1] == "verdict: OK: train and serve use 1 GPU(s)"


def test_doctor_verdicts_for_an_unusable_gpu():
    status, lines = doctor.render(report(), "none", cpu_bf16=False, allow_cpu=False)
    assert status == 1 and lines[-1].startswith("verdict: FAIL: the host has 1 NVIDIA GPU(s) with driver 470.256.02")
    status, lines = doctor.render(report(), "none", cpu_bf16=False, allow_cpu=True)
    assert status == 0 and lines[-1].startswith("verdict: GPUs unusable, running on the CPU because IMGCLF_ALLOW_CPU")


def test_doctor_on_this_cpu_host_and_on_a_fake_gpu_host(tmp_path):
    result = subprocess.run([sys.executable, "-m", "imgclf.doctor"], capture_output=True, text=True, timeout=120,
                            env={k: v for k, v in os.environ.items() if k != "IMGCLF_ALLOW_CPU"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "verdict: OK: no NVIDIA GPU on this host; train and serve use the CPU"
    result = subprocess.run([sys.executable, "-m", "imgclf.doctor"], capture_output=True, text=True, timeout=120,
                            env=fake_host(tmp_path, "470.256.02"))
    assert result.returncode == 1
    assert "driver: 470.256.02 (1 NVIDIA GPU(s) on the host)" in result.stdout
    assert "verdict: FAIL: the host has 1 NVIDIA GPU(s) with driver 470.256.02" in result.stdout


# --- train and serve on a GPU host torch cannot use --------------------------------------------

def test_train_fails_with_the_reason_on_an_unusable_gpu_host_and_runs_with_the_opt_in(tmp_path, sample_data):
    env = fake_host(tmp_path / "host", "470.256.02")
    code, output = run_job(tmp_path / "job", channels_of(sample_data), FAST, env=env)
    assert code != 0, output[-2000:]
    failure = (tmp_path / "job" / "output" / "failure").read_text()
    assert failure.startswith("the host has 1 NVIDIA GPU(s) with driver 470.256.02"), failure
    assert "CUDA 13.0" in failure and "IMGCLF_ALLOW_CPU=true" in failure
    code, output = run_job(tmp_path / "job2", channels_of(sample_data), FAST, env={**env, "IMGCLF_ALLOW_CPU": "true"})
    assert code == 0, output[-3000:]
    assert "device cpu" in output


@pytest.mark.slow  # starts processes
def test_serve_fails_ping_with_the_reason_on_an_unusable_gpu_host(tmp_path):
    env = fake_host(tmp_path / "host", "470.256.02")
    server = ServeProcess(small_model(tmp_path / "model", classes=3), tmp_path / "serve.log", env={"PATH": env["PATH"]})
    try:
        response = server.settled_ping()
        assert response.status_code == 500, server.log()
        error = response.json()["error"]
        assert "driver 470.256.02" in error and "CUDA 13.0" in error and "IMGCLF_ALLOW_CPU=true" in error, error
        assert "0 GPU(s)" in server.log()  # workers sized for what torch can use, not for nvidia-smi's count
    finally:
        server.stop()


# --- in the image (docker) ----------------------------------------------------------------------

def docker_run(image: str, command: list[str], mounts: dict[Path, str], env: dict[str, str] | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
    args = ["docker", "run", "--rm", "--network", "none"]
    for source, target in mounts.items():
        args += ["-v", f"{source}:{target}:ro"]
    for key, value in (env or {}).items():
        args += ["-e", f"{key}={value}"]
    return subprocess.run(args + [image, *command], capture_output=True, text=True, timeout=timeout)


@pytest.mark.docker
def test_doctor_in_the_image_on_this_cpu_host(image):
    result = docker_run(image, ["doctor"], {})
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"torch: {torch.__version__}, CUDA {torch.version.cuda}" in result.stdout
    assert "CPU: native bf16" in result.stdout
    assert result.stdout.splitlines()[-1] == "verdict: OK: no NVIDIA GPU on this host; train and serve use the CPU"
    assert result.stderr == ""  # no compat line on a host without a driver


@pytest.mark.docker
def test_doctor_in_the_image_on_a_470_host(image, tmp_path):
    smi = Path(fake_host(tmp_path, "470.256.02")["PATH"].split(":")[0]) / "nvidia-smi"
    result = docker_run(image, ["doctor"], {smi: "/usr/local/bin/nvidia-smi"})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "driver: 470.256.02 (1 NVIDIA GPU(s) on the host)" in result.stdout
    assert "verdict: FAIL: the host has 1 NVIDIA GPU(s) with driver 470.256.02" in result.stdout
    assert "CUDA compat libs not used: driver 470.256.02" in result.stderr


@pytest.mark.docker
def test_doctor_in_the_image_enables_the_compat_libs_on_a_535_host(image, tmp_path):
    """A fake compat folder mounted where nvidia/cuda bases keep it: `doctor` starts with it first on
    LD_LIBRARY_PATH. Its libcuda is no real driver, so torch still cannot use the GPU, and says so."""
    smi = Path(fake_host(tmp_path, "535.54.03")["PATH"].split(":")[0]) / "nvidia-smi"
    compat = fake_compat_dir(tmp_path)
    result = docker_run(image, ["sh", "-c", "doctor; echo \"rc=$? LD_LIBRARY_PATH=$LD_LIBRARY_PATH\""],
                        {smi: "/usr/local/bin/nvidia-smi", compat: "/usr/local/cuda/compat"},
                        env={"NVIDIA_REQUIRE_CUDA": REQUIRE_13_0})
    out = result.stdout
    assert "compat libs: driver 580.95.05 in /usr/local/cuda/compat; enabled: driver 535.54.03 is older than CUDA 13.0" in out, out
    assert "verdict: FAIL" in out and "rc=1" in out
    assert "LD_LIBRARY_PATH=" in out and "/usr/local/cuda/compat" not in out.split("LD_LIBRARY_PATH=")[1]  # the shell's own
    assert "CUDA compat libs enabled" in result.stderr


@pytest.mark.docker
def test_train_in_the_image_fails_with_the_reason_on_a_470_host(image, tmp_path, sample_data):
    smi = Path(fake_host(tmp_path / "host", "470.256.02")["PATH"].split(":")[0]) / "nvidia-smi"
    shutil.copytree(Path(__file__).parents[1] / "local_test" / "test_dir" / "input", tmp_path / "input")
    (tmp_path / "output").mkdir()
    mounts = {tmp_path / "input" / "config": "/opt/ml/input/config", smi: "/usr/local/bin/nvidia-smi",
              **{sample_data / c: f"/opt/ml/input/data/{c}" for c in ("train", "valid", "test")}}
    args = ["docker", "run", "--rm", "--network", "none", "--hostname", "algo-1", "--add-host", "algo-1:127.0.0.1",
            "-v", f"{tmp_path / 'output'}:/opt/ml/output"]
    for source, target in mounts.items():
        args += ["-v", f"{source}:{target}:ro"]
    result = subprocess.run(args + [image, "train"], capture_output=True, text=True, timeout=600)
    assert result.returncode != 0, result.stdout[-2000:]
    failure = (tmp_path / "output" / "failure").read_text()
    assert failure.startswith("the host has 1 NVIDIA GPU(s) with driver 470.256.02"), failure
