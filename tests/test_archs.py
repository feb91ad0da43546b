"""Every arch the hyperparameter table allows, end to end on the CPU: its ImageNet weights from the
`pretrained` channel under torchvision's file name, one training step with the backbone frozen,
the artifacts, and one request served by the Flask app, by eager torch and by OpenVINO alike."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imgclf import train
from imgclf.archs import ARCHS
from imgclf.config import ServingConfig, TrainingEnv
from imgclf.hyperparameters import field_of, parse_hyperparameters
from imgclf.model import build_model, imagenet_weights_filename, load_artifacts
from imgclf.preprocess import ImageSpec, eval_preprocess
from imgclf.serving.app import create_app
from imgclf_launch import debugger

ALLOWED = field_of("arch").parser.values


def png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    body = io.BytesIO()
    Image.fromarray(pixels).save(body, "PNG")
    return body.getvalue()


def job_env(root: Path, arch: str) -> TrainingEnv:
    for i in range(4):
        (root / "train" / f"00{i % 2}.c{i % 2}").mkdir(parents=True, exist_ok=True)
        (root / "train" / f"00{i % 2}.c{i % 2}" / f"{i}.png").write_bytes(png(i))
    (root / "pretrained").mkdir()
    torch.save(build_model(arch, 1000).state_dict(), root / "pretrained" / imagenet_weights_filename(arch))
    return TrainingEnv(root / "model", root / "output", root / "output" / "data", root / "checkpoints",
                       root / "config", {"train": root / "train", "pretrained": root / "pretrained"}, 2, "algo-1",
                       ("algo-1",), allow_cpu=True)


def serve_one(model_dir: Path, engine: str) -> dict:
    environ = {"SM_MODEL_DIR": str(model_dir), "IMGCLF_ALLOW_CPU": "true", "IMGCLF_ENGINE": engine, "IMGCLF_PRECISION": "fp32"}
    config = ServingConfig.from_environ(gpus=0, cpus=2, environ=environ)
    client = create_app(config, load_artifacts(model_dir)).test_client()
    deadline = time.monotonic() + 60
    while (response := client.post("/invocations", data=png(9), content_type="image/png")).status_code == 503:
        assert time.monotonic() < deadline, "the model never warmed up"
        time.sleep(0.1)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.json


def test_the_table_offers_every_registered_arch_and_nothing_else():
    assert set(ALLOWED) == set(ARCHS) and len(ARCHS) >= 8


@pytest.mark.slow
@pytest.mark.parametrize("arch", ALLOWED)
def test_each_arch_loads_imagenet_weights_trains_saves_and_serves(tmp_path, arch):
    env = job_env(tmp_path, arch)
    hp = parse_hyperparameters(["--arch", arch, "--image-size", "32", "--batch-size", "4", "--epochs", "1",
                                "--freeze-backbone", "true", "--rules", "none", "--tensorboard", "false"])
    summary = train.train(hp, env)
    assert summary["best_epoch"] == 1 and len(summary["history"]) == 1
    imagenet = torch.load(next((tmp_path / "pretrained").iterdir()), weights_only=True)
    model, spec, classes = load_artifacts(env.model_dir)
    head = ARCHS[arch].head + "."
    for name, parameter in model.named_parameters():  # the ImageNet backbone loaded and frozen; a new head
        assert torch.equal(parameter, imagenet[name]) != name.startswith(head), name
    assert model.get_submodule(ARCHS[arch].head).out_features == 2 and spec.arch == arch
    assert any(re.match(ARCHS[arch].activations, f"{name}_input_0") for name, _ in model.named_modules())
    answers = {engine: serve_one(env.model_dir, engine)["predictions"][0] for engine in ("torch", "openvino")}
    assert {p["label"] for p in answers["openvino"]} == {"c0", "c1"}, answers
    scores = [{p["label"]: p["probability"] for p in answer} for answer in answers.values()]
    assert all(abs(scores[0][label] - scores[1][label]) < 1e-3 for label in scores[0]), answers


def test_the_debugger_collection_follows_the_arch():
    for arch in ALLOWED:
        collections = {c.name: c for c in debugger.settings(None, None, None, arch).collections}
        assert collections["relu_input"].include_regex == ARCHS[arch].activations


def test_the_eval_resize_uses_the_interpolation_of_the_spec():
    image = Image.open(io.BytesIO(png(3)))
    crops = {mode: eval_preprocess(image, ImageSpec(32, resize_size=37, interpolation=mode))
             for mode in ("bilinear", "bicubic")}
    assert not torch.equal(crops["bilinear"], crops["bicubic"])
    with pytest.raises(ValueError, match="interpolation 'cubic' is not one of Pillow's resampling filters"):
        ImageSpec(32, interpolation="cubic")
