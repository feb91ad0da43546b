"""Benchmarks that must not rot between their rare runs: bench/gpu_check.py, the GPU proof, in its
dry mode (CPU, toy sizes), with the packages a bare GPU machine lacks made unimportable, so the
wheel set `make gpu-wheels` carries is shown to be enough; and bench/stages.py, which times the
serving code through its method names."""

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
