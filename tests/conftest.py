"""Shared fixtures: the sample data, and `train` run the way SageMaker runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import local_train  # noqa: E402
from make_sample_data import write_sample_data  # noqa: E402

# Tests never reach AWS or the internet: dummy credentials, and a proxy on a closed
# loopback port so that any attempted download fails at once, on this machine.
os.environ.update({
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
    "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9", "no_proxy": "127.0.0.1,localhost",
})

# Small and fast on a 2-core CPU, still a real ResNet on real images.
FAST = {"arch": "resnet18", "pretrained": "false", "image-size": "32", "batch-size": "64", "lr": "0.002",
        "random-crop-min-scale": "0.6", "horizontal-flip": "false", "epochs": "1"}


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sample_data")
    write_sample_data(root)
    return root


def run_job(base: Path, channels: dict[str, Path], hyperparameters: dict[str, str], env: dict | None = None):
    """Lay out ``base`` like /opt/ml and run the toolkit's ``train``; returns (exit code, output)."""
    local_train.layout(base, channels, hyperparameters)
    result = local_train.run_train(base, env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    return result.returncode, result.stdout


def channels_of(root: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(root.iterdir()) if p.is_dir()}


@pytest.fixture(scope="session")
def trained(tmp_path_factory, sample_data) -> tuple[Path, str]:
    """One real training run on the sample data, shared by the tests that read its results."""
    base = tmp_path_factory.mktemp("trained") / "opt_ml"
    code, output = run_job(base, channels_of(sample_data), {**FAST, "epochs": "5"})
    assert code == 0, output[-3000:]
    return base, output
