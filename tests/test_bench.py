"""Benchmarks that must not rot between their rare runs: bench/gpu_check.py, the GPU proof, in its
dry mode (CPU, toy sizes), with the packages a bare GPU machine lacks made unimportable, so the
wheel set `make gpu-wheels` carries is shown to be enough; bench/stages.py, which times the
serving code through its method names; bench/conversion.py, which converts through serve's own
engine; and bench/torchserve_app.py: its archive and config without
Java, TorchServe itself where `make bench-peers` built its venv."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from imgclf_launch.paths import REPO

# A bare GPU machine's python3 has torch, torchvision, numpy, Pillow, requests, psutil, pandas,
# scikit-learn, matplotlib and Werkzeug; it lacks these, and `make gpu-wheels` brings none of them.
ABSENT_THERE = ("smdebug", "sagemaker_training", "tensorboardX", "gunicorn", "boto3", "sagemaker", "openvino")

BLOCKER = """
import importlib.util, runpy, sys
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {absent!r}:
            return importlib.util.spec_from_loader(name, self)
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        raise ModuleNotFoundError(f'{{module.__name__}} is not installed on the GPU machine')
sys.meta_path.insert(0, Absent())
sys.argv = ['bench/gpu_check.py', '--dry', '--json', {out!r}]
runpy.run_path('bench/gpu_check.py', run_name='__main__')
"""


@pytest.mark.slow
def test_gpu_check_dry_runs_every_part_without_the_image_only_packages(tmp_path: Path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "container"), str(REPO / "bench")])}
    result = subprocess.run([sys.executable, "-c", BLOCKER.format(absent=ABSENT_THERE, out=str(out))], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry"] is True
    assert report["doctor"]["exit"] == 0 and report["doctor"]["verdict"].startswith("verdict: OK")
    assert report["precision"]["serve"] in ("fp32", "bf16")
    assert report["training"]["baseline_images_per_s"] > 0 and report["training"]["ours_images_per_s"] > 0
    assert {(r["precision"], r["layout"]) for r in report["forward"]["best"]} == {
        (p, layout) for p in ("fp32", "bf16") for layout in ("contiguous", "channels_last")}
    levels = report["serving"]["levels"]
    assert [r["concurrency"] for r in levels] == [1, 4] and all(r["errors"] == 0 and r["requests"] > 0 for r in levels)
    assert "serving in-process" in result.stdout and "forward only" in result.stdout


@pytest.mark.slow
def test_conversion_bench_converts_both_ways_to_the_same_answers():
    """bench/conversion.py calls engines.openvino_engine by name and rebuilds its conversion by export."""
    import conversion

    trace, export, difference = conversion.compare("resnet18", 16, rounds=1)
    assert trace > 0 and export > 0 and difference < 1e-5


@pytest.mark.slow
def test_stage_profile_times_every_stage_of_the_serving_code(tmp_path: Path):
    """bench/stages.py patches Predictor and Batcher methods by name: a rename there must fail here,
    not leave the profile empty."""
    model_dir = tmp_path / "model"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "container"), str(REPO / "bench")])}
    subprocess.run([sys.executable, "bench/random_model.py", str(model_dir), "--arch", "resnet18", "--classes", "10",
                    "--image-size", "32"], cwd=REPO, env=env, check=True, capture_output=True, timeout=300)
    result = subprocess.run([sys.executable, "bench/stages.py", "--model-dir", str(model_dir), "--concurrency", "1,4",
                             "--requests", "8", "--seconds", "60"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [line.split() for line in result.stdout.splitlines() if line.split()[:1] in (["1"], ["4"])]
    assert len(rows) == 2, result.stdout
    for row in rows:
        decode, forward = float(row[2]), float(row[5])
        assert decode > 0 and forward > 0, result.stdout  # both stages were timed, through the patched methods
        assert ":" in row[-1], result.stdout  # batch sizes were counted


def test_torchserve_archive_holds_the_model_in_serving_precision_with_our_labels(tmp_path: Path):
    """bench/torchserve_app.py's .mar contents, without TorchServe or Java: the traced model answers
    as the model in bf16 channels_last does, behind float32 input and output, and index_to_name.json
    carries classes.json's labels."""
    import torch
    from random_model import write_random_model
    from torchserve_app import MODEL_CONFIG, write_model_files

    from imgclf.model import load_artifacts

    write_random_model(tmp_path / "model", "resnet18", 10, 32)
    weights, labels, config = write_model_files(tmp_path / "model", tmp_path, "bf16")
    traced = torch.jit.load(str(weights))
    model, _, classes = load_artifacts(tmp_path / "model")
    batch = torch.rand(3, 3, 224, 224)
    with torch.no_grad():
        expected = model.eval().to(torch.bfloat16, memory_format=torch.channels_last)(
            batch.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)).float()
        got = traced(batch)
    assert got.dtype == torch.float32 and got.shape == (3, 10)
    assert torch.allclose(got, expected, atol=1e-2, rtol=1e-2), (got - expected).abs().max()
    assert json.loads(labels.read_text()) == {str(c.index): c.label for c in classes}
    assert config.read_text() == MODEL_CONFIG and "batchSize: 8" in MODEL_CONFIG and "maxBatchDelay: 5" in MODEL_CONFIG


def test_torchserve_config_binds_loopback_only_without_token_or_metrics_api(tmp_path: Path):
    from torchserve_app import server_config

    lines = dict(line.split("=", 1) for line in server_config(tmp_path / "store", 8123, tmp_path).splitlines() if line)
    assert lines["inference_address"] == "http://127.0.0.1:8123"
    addresses = [v for k, v in lines.items() if k.endswith("_address")]
    assert all(a.startswith(("http://127.0.0.1:", "unix:")) or a == "127.0.0.1" for a in addresses), addresses
    assert lines["disable_token_authorization"] == "true" and lines["enable_metrics_api"] == "false"
    assert lines["disable_system_metrics"] == "true" and lines["enable_model_api"] == "false"


TORCHSERVE_PYTHON = REPO / "build" / "torchserve" / "bin" / "python"


@pytest.mark.slow
def test_torchserve_serves_the_archive_and_stops_with_its_workers(tmp_path: Path):
    """TorchServe itself, as `make bench-peers` runs it: needs build/torchserve (make bench-peers
    builds it) and Java 17; skips saying which is missing."""
    import psutil
    import requests
    from photos import write_photo_dataset
    from random_model import write_random_model
    from peers import peer_env
    from serve import free_port, start
    from torchserve_app import java_problem

    venv = TORCHSERVE_PYTHON.parent.parent
    problem = java_problem() if TORCHSERVE_PYTHON.exists() else f"{venv} is absent (make bench-peers builds it)"
    if problem:
        pytest.skip(f"TorchServe not run: {problem}")
    write_random_model(tmp_path / "model", "resnet18", 10, 32)
    env, app = peer_env(), str(REPO / "bench" / "torchserve_app.py")
    setup = subprocess.run([str(TORCHSERVE_PYTHON), app, "setup", str(tmp_path / "model"), str(tmp_path / "store"),
                            "fp32"], env=env, capture_output=True, text=True, timeout=600)
    assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]
    port = free_port()
    server = start([str(TORCHSERVE_PYTHON), app, "serve", str(tmp_path / "store"), str(port)], env, port)
    try:
        workers = psutil.Process(server.pid).children(recursive=True)
        photo = next(write_photo_dataset(tmp_path / "photos", 1).rglob("*.jpg")).read_bytes()
        answer = requests.post(f"http://127.0.0.1:{port}/invocations", data=photo,
                               headers={"Content-Type": "image/jpeg"}, timeout=120)
    finally:
        server.terminate()
        code = server.wait(180)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()) == 5 and set(answer.json()) <= {f"class {i}" for i in range(10)}, answer.json()
    assert code == 0 and len(workers) >= 3  # torchserve's launcher, its Java frontend, the Python worker
    assert not psutil.wait_procs(workers, timeout=60)[1], "processes left running after TorchServe stopped"
