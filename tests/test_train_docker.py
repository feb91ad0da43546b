"""The real image's `train` where the case is about docker: a read-only root filesystem, another
user, no network, `docker stop`, script mode with the code in a channel, the out-of-memory killer.
Tiny data (3 classes, 16 px): each job takes seconds of training."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from conftest import TINY
from imgclf_launch import local_train
from test_train_toolkit import PROGRAM, sdk_hyperparameters

pytestmark = pytest.mark.docker


def docker_command(image: str, base: Path, data: Path, hyperparameters: dict, *options: str) -> list[str]:
    """`docker run ... IMAGE train` as SageMaker mounts /opt/ml: config and channels read-only."""
    local_train.layout(base, {}, hyperparameters)
    (base / "input/config/inputdataconfig.json").write_text(json.dumps(
        {name: {"TrainingInputMode": "File"} for name in ("train", "valid", "test") if (data / name).is_dir()}))
    for folder in ("model", "output", "checkpoints"):
        (base / folder).mkdir(exist_ok=True)
        os.chmod(base / folder, 0o777)  # writable for --user 1000:1000 as well
    mounts = ["-v", f"{base}/input/config:/opt/ml/input/config:ro"]
    for name in ("train", "valid", "test", "code"):
        if (data / name).is_dir():
            mounts += ["-v", f"{data / name}:/opt/ml/input/data/{name}:ro"]
    for folder in ("model", "output", "checkpoints"):
        mounts += ["-v", f"{base / folder}:/opt/ml/{folder}"]
    return ["docker", "run", "--rm", "--network", "none", *options, *mounts, image, "train"]


def run(image: str, base: Path, data: Path, hyperparameters: dict, *options: str, timeout: int = 600):
    return subprocess.run(docker_command(image, base, data, hyperparameters, *options), capture_output=True, text=True,
                          timeout=timeout)


def failure(base: Path) -> str:
    return (base / "output" / "failure").read_text()


@pytest.mark.parametrize(("options", "expected"), [
    (["--read-only"], "cannot write /opt/ml/code, where the training toolkit keeps the job's program (user 0:0): "
                      "the filesystem is read-only"),
    (["--user", "1000:1000"], "cannot write /opt/ml/code, where the training toolkit keeps the job's program "
                              "(user 1000:1000): permission denied"),
    (["--read-only", "--tmpfs", "/opt/ml/code", "--user", "1000:1000"],
     "no writable temporary folder (/tmp, /var/tmp, /usr/tmp): the root filesystem is read-only"),
], ids=["read-only", "user-1000", "read-only-code-mounted"])
def test_unwritable_folders_fail_at_once_saying_which(image, tmp_path, tiny_data, options, expected):
    result = run(image, tmp_path / "ml", tiny_data, TINY, *options, timeout=120)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert failure(tmp_path / "ml").startswith(expected), failure(tmp_path / "ml")


def test_pretrained_weights_without_network_fail_in_seconds_with_the_advice(image, tmp_path, tiny_data):
    result = run(image, tmp_path / "ml", tiny_data, {**TINY, "pretrained": "true"}, timeout=120)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    reason = failure(tmp_path / "ml")
    assert reason.startswith("pretrained=true needs ImageNet weights (resnet18-f37072fd.pth) and this job cannot "
                             "download them"), reason
    assert "Pass a 'pretrained' channel" in reason and "images in" not in result.stderr + result.stdout


def test_docker_stop_during_training_exits_143(image, tmp_path, tiny_data):
    name = f"imgclf-train-stop-{os.getpid()}"
    command = docker_command(image, tmp_path / "ml", tiny_data, {**TINY, "epochs": "50"}, "--name", name)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        if "epoch=3/50 step" in line:
            subprocess.run(["docker", "stop", "-t", "60", name], check=True, capture_output=True)
            break
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 143, output[-3000:]
    assert failure(tmp_path / "ml").startswith("stopped by SIGTERM: epochs 1-")


def test_the_jobs_own_program_runs_from_its_code_channel(image, tmp_path, tiny_data):
    """Script mode with the source in a channel, as a network-isolated job brings it."""
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "valid", "test"):
        (data / split).symlink_to(tiny_data / split)
    (data / "code").mkdir()
    (tmp_path / "my_train.py").write_text(PROGRAM)
    with tarfile.open(data / "code" / "sourcedir.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "my_train.py", "my_train.py")
    hyperparameters = {**TINY, **sdk_hyperparameters({
        "sagemaker_program": "my_train.py", "sagemaker_submit_directory": "/opt/ml/input/data/code/sourcedir.tar.gz"})}
    result = run(image, tmp_path / "ml", data.resolve(), hyperparameters)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    mine = json.loads((tmp_path / "ml" / "model" / "mine.json").read_text())
    assert mine["args"][:2] == ["--arch", "resnet18"] and "train" in mine["channels"]


def test_an_oom_kill_says_memory_and_the_limit(image, tmp_path, tiny_data):
    result = run(image, tmp_path / "ml", tiny_data, {**TINY, "image-size": "224", "batch-size": "48"},
                 "--memory", "900m", "--memory-swap", "900m")
    assert result.returncode != 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert failure(tmp_path / "ml").startswith(
        "out of memory: the kernel killed the training process (SIGKILL) when the job used all of its 0.9 GiB "
        "(the container's limit)"), failure(tmp_path / "ml")
