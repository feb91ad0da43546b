"""Shared fixtures: the sample data, and `train` run the way SageMaker runs it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from imgclf_launch import local_train
from imgclf_launch.sample_data import write_sample_data

# Tests never reach AWS or the internet: dummy credentials, and a proxy on a closed
# loopback port so that any attempted download fails at once, on this machine.
os.environ.update({
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
    "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
    "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9", "no_proxy": "127.0.0.1,localhost",
})

# Small and fast on a 2-core CPU, still a real ResNet on real images.
FAST = {"arch": "resnet18", "pretrained": "false", "image-size": "32", "batch-size": "64", "lr": "0.002",
        "random-crop-min-scale": "0.6", "horizontal-flip": "false", "epochs": "1"}

# Tiny: 3 classes of 16 px images (tiny_data), for jobs that test how train fails or is wired, in seconds.
TINY = {"arch": "resnet18", "pretrained": "false", "image-size": "16", "batch-size": "16", "lr": "0.002",
        "random-crop-min-scale": "0.6", "horizontal-flip": "false", "epochs": "1", "rules": "none"}


# `make test-fast` runs the tests not marked slow (in-process logic, seconds in all). A test is slow
# when it trains, starts `serve` or runs the image: through one of these fixtures, or marked itself.
SLOW_FIXTURES = {"sample_data", "tiny_data", "trained", "server", "attacked", "hurried", "board_job", "image",
                 "model_tar", "local_endpoint", "test_dir", "trained_in_docker"}


def pytest_report_header(config: pytest.Config) -> str:
    free = shutil.disk_usage(tempfile.gettempdir()).free / 2**30
    return f"free disk where tests write ({tempfile.gettempdir()}): {free:.1f} GiB (a full run holds at most about 2 at once)"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sample_data")
    write_sample_data(root)
    return root


@pytest.fixture(scope="session")
def tiny_data(sample_data, tmp_path_factory) -> Path:
    """The first 3 classes of the sample data, 16/6/6 images each."""
    root = tmp_path_factory.mktemp("tiny")
    for split, count in (("train", 16), ("valid", 6), ("test", 6)):
        for folder in sorted((sample_data / split).iterdir())[:3]:
            (root / split / folder.name).mkdir(parents=True)
            for image in sorted(folder.iterdir())[:count]:
                shutil.copy(image, root / split / folder.name / image.name)
    return root



def run_job(base: Path, channels: dict[str, Path], hyperparameters: dict[str, str], env: dict | None = None,
            config_files: dict[str, str] | None = None):
    """Lay out ``base`` like /opt/ml (plus extra input/config files) and run the toolkit's ``train``;
    returns (exit code, output)."""
    local_train.layout(base, channels, hyperparameters)
    for name, text in (config_files or {}).items():
        (base / "input" / "config" / name).write_text(text)
    result = local_train.run_train(base, env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    return result.returncode, result.stdout


def last_checkpoint(base: Path) -> Path | None:
    """The newest checkpoint of the one run under ``base``/checkpoints (one folder per job and settings)."""
    found = sorted((base / "checkpoints").glob("*/last.pt"))
    assert len(found) <= 1, found
    return found[0] if found else None


def channels_of(root: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(root.iterdir()) if p.is_dir()}


@pytest.fixture(scope="session")
def trained(tmp_path_factory, sample_data) -> tuple[Path, str]:
    """One real training run on the sample data, shared by the tests that read its results."""
    base = tmp_path_factory.mktemp("trained") / "opt_ml"
    code, output = run_job(base, channels_of(sample_data), {**FAST, "epochs": "5"})
    assert code == 0, output[-3000:]
    return base, output


IMAGE = os.environ.get("IMGCLF_IMAGE", "imgclf:latest")


def _docker_problem() -> str | None:
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "no Docker engine is running (docker/local-engine.sh starts one)"
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode != 0:
        return f"image {IMAGE} is not built (make build)"
    return None


@pytest.fixture(scope="session")
def image() -> str:
    """The built image; skips with the reason, or fails under REQUIRE_DOCKER=1 (CI)."""
    problem = _docker_problem()
    if problem:
        if os.environ.get("REQUIRE_DOCKER") == "1":
            pytest.fail(f"REQUIRE_DOCKER=1 but {problem}")
        pytest.skip(f"docker tests skipped: {problem}")
    return IMAGE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_healthy(url: str, process: subprocess.Popen, output: Callable[[], str], timeout: float = 120) -> None:
    """Poll url/ping until it answers 200; fail at once if the server exits, or after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, output()
        try:
            if requests.get(url + "/ping", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise AssertionError("serve never became healthy:\n" + output())


def small_model(model_dir: Path, classes: int = 10, image_size: int = 32, **weights: float) -> Path:
    """An untrained ResNet-18; ``weights`` fill tensors with one value (``fc__bias``: fc.bias). Seconds to load."""
    from imgclf.data import ClassInfo  # torch: not in the SDK 3.x venv, which runs the launcher tests alone
    from imgclf.model import ModelSpec, build_model, save_artifacts
    from imgclf.preprocess import ImageSpec

    model_spec = ModelSpec("resnet18", classes, ImageSpec(image_size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    labels = [ClassInfo(i, f"{i:03d}.c{i}", f"c{i}") for i in range(classes)]
    state = build_model("resnet18", classes).state_dict()
    for name, value in weights.items():
        state[name.replace("__", ".")].fill_(value)
    save_artifacts(model_dir, state, model_spec, labels, {})
    return model_dir


class ServeProcess:
    """The real ``serve`` command on a free loopback port."""

    def __init__(self, model_dir: Path, log_path: Path, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        environ = {**os.environ, "SM_MODEL_DIR": str(model_dir), "SAGEMAKER_BIND_TO_PORT": str(self.port),
                   "IMGCLF_HOST": "127.0.0.1", **(env or {})}
        serve = Path(sys.executable).parent / "serve"
        self.log_file = open(log_path, "w")
        self.process = subprocess.Popen([str(serve)], env=environ, stdout=self.log_file, stderr=subprocess.STDOUT)

    def wait_until_healthy(self, timeout: float = 120) -> None:
        wait_until_healthy(self.url, self.process, self.log, timeout)

    def settled_ping(self, timeout: float = 60) -> requests.Response:
        """/ping's first answer other than 503 (loading); fail at once if the server exits, or after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log()
            try:
                response = requests.get(self.url + "/ping", timeout=2)
                if response.status_code != 503:
                    return response
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise AssertionError("/ping never settled:\n" + self.log())

    def log(self) -> str:
        if not self.log_file.closed:
            self.log_file.flush()
        return self.log_path.read_text()

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()
        return self.process.returncode


@pytest.fixture(scope="session")
def server(trained, tmp_path_factory):
    base, _ = trained
    process = ServeProcess(base / "model", tmp_path_factory.mktemp("serve") / "serve.log")
    process.wait_until_healthy()
    yield process
    process.stop()
