"""The real image: `train` and `serve` in containers, driven by the local_test scripts.

Needs a Docker engine and the image (`make build`, or `make ci`, which does both).
Without them these tests skip and say why; with REQUIRE_DOCKER=1 (CI) they fail instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import free_port, wait_until_healthy
from imgclf_launch.paths import REPO

pytestmark = pytest.mark.docker


@pytest.fixture(scope="session")
def test_dir(tmp_path_factory) -> Path:
    """A copy of local_test/test_dir, so the runs leave the repository clean."""
    target = tmp_path_factory.mktemp("docker") / "test_dir"
    shutil.copytree(REPO / "local_test" / "test_dir" / "input", target / "input")
    (target / "input" / "config" / "tensorboardoutputconfig.json").write_text(  # as SageMaker writes it
        json.dumps({"LocalPath": "/opt/ml/output/tensorboard", "S3OutputPath": "s3://bucket/tensorboard/job"}))
    return target


@pytest.fixture(scope="session")
def trained_in_docker(image, test_dir, sample_data) -> subprocess.CompletedProcess:
    env = {**os.environ, "TEST_DIR": str(test_dir), "DATA": str(sample_data)}
    result = subprocess.run([str(REPO / "local_test" / "train_local.sh"), image], env=env,
                            capture_output=True, text=True, timeout=900)
    print(result.stdout[-3000:])
    return result


def test_train_in_container(trained_in_docker, test_dir):
    assert trained_in_docker.returncode == 0, trained_in_docker.stdout[-3000:] + trained_in_docker.stderr[-3000:]
    assert {"model.pt", "classes.json", "model.json"} <= {p.name for p in (test_dir / "model").iterdir()}
    assert (test_dir / "output" / "success").exists()
    summary = json.loads((test_dir / "output" / "data" / "metrics.json").read_text())
    assert summary["test"]["accuracy"] > 0.9, summary["test"]
    assert "Invoking user script" in trained_in_docker.stderr  # sagemaker-training ran our program
    (events,) = (test_dir / "output" / "tensorboard").glob("events.out.tfevents.*")
    board = EventAccumulator(str(events.parent), size_guidance={"scalars": 0}).Reload()
    assert len(board.Scalars("epoch/valid_accuracy")) == len(summary["history"])


def test_train_failure_in_container_writes_reason(image, tmp_path, sample_data):
    shutil.copytree(REPO / "local_test" / "test_dir" / "input", tmp_path / "input")
    (tmp_path / "input" / "config" / "hyperparameters.json").write_text(json.dumps({"epochs": "zero"}))
    env = {**os.environ, "TEST_DIR": str(tmp_path), "DATA": str(sample_data)}
    result = subprocess.run([str(REPO / "local_test" / "train_local.sh"), image], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "hyperparameter 'epochs' = 'zero' is invalid" in (tmp_path / "output" / "failure").read_text()


def test_train_with_test_dir_mounted_as_opt_ml(image, tmp_path, sample_data):
    """AWS's bring-your-own train_local.sh: `docker run -v $PWD/test_dir:/opt/ml IMAGE train`. The mount
    hides whatever the image keeps under /opt/ml, and resourceconfig.json's algo-1 does not resolve."""
    test_dir = tmp_path / "test_dir"
    shutil.copytree(REPO / "local_test" / "test_dir" / "input", test_dir / "input")
    for split in ("train", "valid", "test"):
        shutil.copytree(sample_data / split, test_dir / "input" / "data" / split)
    config = test_dir / "input" / "config" / "hyperparameters.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "epochs": "1"}))
    assert json.loads((test_dir / "input" / "config" / "resourceconfig.json").read_text())["hosts"] == ["algo-1"]
    result = subprocess.run(["docker", "run", "--rm", "--network", "none", "-v", f"{test_dir}:/opt/ml", image, "train"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (test_dir / "model" / "model.pt").is_file() and (test_dir / "output" / "success").is_file()


def test_serve_in_container(trained_in_docker, image, test_dir, sample_data):
    assert trained_in_docker.returncode == 0
    port, name = free_port(), f"imgclf-test-{os.getpid()}"
    env = {**os.environ, "TEST_DIR": str(test_dir), "PORT": str(port), "NETWORK": "host", "NAME": name}
    server = subprocess.Popen([str(REPO / "local_test" / "serve_local.sh"), image], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", server, server.stdout.read)
        image_file = sorted((sample_data / "test" / "004.three").iterdir())[0]
        result = subprocess.run([str(REPO / "local_test" / "predict.sh"), str(image_file)],
                                env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        predictions = json.loads(result.stdout)["predictions"][0]
        assert predictions[0]["label"] == "three" and len(predictions) == 3
        assert_requests_handled_unprivileged(name)
    finally:
        stopped = subprocess.run(["docker", "stop", "-t", "30", name], capture_output=True, text=True)
        output = server.communicate(timeout=60)[0]
    assert stopped.returncode == 0
    assert "Shutting down: Master" in output  # SIGTERM reached gunicorn and it exited cleanly


def assert_requests_handled_unprivileged(container: str) -> None:
    """serve starts as root (as SageMaker runs it); nginx's worker and gunicorn's worker run as imgclf."""
    uid = subprocess.run(["docker", "exec", container, "id", "-u", "imgclf"], capture_output=True, text=True,
                         check=True).stdout.strip()
    top = subprocess.run(["docker", "top", container, "-eo", "pid,uid,args"], capture_output=True, text=True,
                         check=True).stdout.splitlines()[1:]
    rows = [line.split(None, 2)[1:] for line in top]
    nginx_workers = [uid_ for uid_, args in rows if "nginx: worker" in args]
    serve = [uid_ for uid_, args in rows if "bin/serve" in args]  # serve itself, gunicorn's master, its workers
    assert nginx_workers and set(nginx_workers) == {uid}, top
    assert serve.count("0") == 2 and serve.count(uid) == len(serve) - 2 >= 1, top


def test_image_holds_no_build_secrets_and_has_both_commands(image):
    result = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", image, "sh", "-c",
         "test ! -e /tmp/ca && command -v train && command -v serve && echo $SAGEMAKER_PROGRAM && ls $IMGCLF_PROGRAM_DIR && test ! -e /opt/ml/code"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "train_program.py" in result.stdout
    size = int(subprocess.run(["docker", "image", "inspect", image, "--format", "{{.Size}}"],
                              capture_output=True, text=True).stdout)
    print(f"image {image}: {size / 1e9:.2f} GB")


def test_docker_stop_reaches_training_and_the_next_run_resumes(image, tmp_path, sample_data):
    shutil.copytree(REPO / "local_test" / "test_dir" / "input", tmp_path / "input")
    config = tmp_path / "input" / "config" / "hyperparameters.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "epochs": "6"}))
    name = f"imgclf-stop-{os.getpid()}"
    env = {**os.environ, "TEST_DIR": str(tmp_path), "DATA": str(sample_data), "NAME": name}
    script = str(REPO / "local_test" / "train_local.sh")
    process = subprocess.Popen([script, image], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        if "epoch=2/6 valid_loss=" in line:
            subprocess.run(["docker", "stop", "-t", "60", name], check=True, capture_output=True)
            break
    output = process.communicate(timeout=120)[0]
    assert process.returncode != 0
    assert "stopped by SIGTERM" in (tmp_path / "output" / "failure").read_text(), output[-2000:]

    result = subprocess.run([script, image], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "resuming after epoch" in result.stdout
    assert (tmp_path / "model" / "model.pt").exists()


def test_serve_needs_no_root(trained_in_docker, image, test_dir, sample_data):
    assert trained_in_docker.returncode == 0
    port, name = free_port(), f"imgclf-nobody-{os.getpid()}"
    server = subprocess.Popen(
        ["docker", "run", "--rm", "--name", name, "--user", "65534:65534", "--network", "host",
         "-e", f"SAGEMAKER_BIND_TO_PORT={port}", "-e", "IMGCLF_HOST=127.0.0.1",
         "-v", f"{test_dir / 'model'}:/opt/ml/model:ro", image, "serve"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", server, server.stdout.read)
        image_file = sorted((sample_data / "test" / "004.three").iterdir())[0]
        response = requests.post(f"http://127.0.0.1:{port}/invocations", data=image_file.read_bytes(),
                                 headers={"Content-Type": "image/png"}, timeout=30)
        assert response.status_code == 200 and response.json()["predictions"][0][0]["label"] == "three"
    finally:
        subprocess.run(["docker", "stop", "-t", "30", name], capture_output=True)
        server.communicate(timeout=60)
