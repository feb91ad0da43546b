"""serve's parts in process: the batcher's dropping of abandoned work, artifact checks, the health
files nginx answers /ping from, the nginx configuration, bounded decoding, and the Flask app."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bombs import bombs, encoded
from imgclf.config import ServingConfig
from imgclf.data import ClassInfo
from imgclf.model import ModelSpec, build_model
from imgclf.preprocess import ImageSpec, ImageTooLarge, decode_for_eval, decode_image, eval_preprocess
from imgclf.serving import engines
from imgclf.serving.app import create_app
from imgclf.serving.health import DIED, FAILED, READY, Health
from imgclf.serving.predictor import Abandoned, Batcher, Ticket, check_artifacts
from imgclf.serving.proxy import find_nginx, nginx_command, nginx_config


def recording_batcher() -> tuple[Batcher, list[int]]:
    seen: list[int] = []

    def infer(batch: torch.Tensor) -> torch.Tensor:
        seen.append(batch.shape[0])
        return batch.float().flatten(1)[:, :2]

    return Batcher(infer, max_batch=8, max_wait_ms=5), seen


def image(value: int) -> torch.Tensor:
    return torch.full((3, 2, 2), value, dtype=torch.uint8)


@pytest.mark.parametrize(("ticket", "reason"), [
    (Ticket(deadline=time.monotonic() - 1), "deadline passed"),
    (Ticket(client_gone=lambda: True), "client closed"),
])
def test_batcher_drops_abandoned_work_before_the_model(ticket, reason):
    batcher, seen = recording_batcher()
    with pytest.raises(Abandoned, match=reason):
        batcher.submit([image(1)] * 3, ticket, expected=False).result(timeout=5)
    assert batcher.submit([image(2)], expected=False).result(timeout=5)[0].tolist() == [2.0, 2.0]
    assert seen == [1]  # only the wanted request reached the model


def test_batcher_skips_a_request_that_stopped_waiting():
    batcher, seen = recording_batcher()
    batcher.expect()  # the batcher waits a moment for this one
    future: Future = batcher.submit([image(3)] * 2, Ticket())
    cancelled = future.cancel()
    # one thread, in order: once a later request is answered, the first was run or skipped
    assert batcher.submit([image(4)], expected=False).result(timeout=5)[0].tolist() == [4.0, 4.0]
    assert seen == ([1] if cancelled else [2, 1])


def test_artifacts_that_disagree_are_refused():
    model_spec = ModelSpec("resnet18", 3, ImageSpec(32, (0.5,) * 3, (0.5,) * 3))
    classes = [ClassInfo(i, f"c{i}", f"c{i}") for i in range(3)]
    check_artifacts(model_spec, classes, 3)
    with pytest.raises(ValueError, match="classes.json lists 2 classes, model.json says 3, the network outputs 3"):
        check_artifacts(model_spec, classes[:2], 3)
    with pytest.raises(ValueError, match="the network outputs 4"):
        check_artifacts(model_spec, classes, 4)
    with pytest.raises(ValueError, match="indices 0, 1, 2"):
        check_artifacts(model_spec, [classes[1], classes[0], classes[2]], 3)


def test_health_is_ready_only_when_every_worker_is(tmp_path):
    health = Health(tmp_path, workers=2)
    me, parent = os.getpid(), os.getppid()
    health.report(me, "ready")
    assert not (tmp_path / READY).exists()  # one of two workers
    health.report(parent, "ready")
    assert (tmp_path / READY).exists()
    health.forget(parent)  # a worker died: not ready until its replacement is
    assert not (tmp_path / READY).exists()
    health.report(parent, "failed", "model failed to load: boom")
    assert b"model failed to load: boom" in (tmp_path / FAILED).read_bytes()
    (tmp_path / "worker-999999999.json").write_text('{"state": "ready", "error": null}')  # a dead pid
    health.report(parent, "ready")
    assert not (tmp_path / FAILED).exists() and (tmp_path / READY).exists()


def test_workers_dying_before_their_model_is_warm_fail_health_until_every_worker_is(tmp_path):
    health = Health(tmp_path, workers=2)
    me, parent = os.getpid(), os.getppid()
    health.report(me, "ready")
    health.report(999999999, "loading")  # killed while loading: the master forgets it
    health.forget(999999999)
    assert b"1 worker(s) died while loading the model, the last pid 999999999" in (tmp_path / FAILED).read_bytes()
    health.forget(999999998)  # killed before it reported at all (reading the model files)
    assert b"2 worker(s) died while loading the model, the last pid 999999998" in (tmp_path / FAILED).read_bytes()
    health.report(parent, "loading")  # its replacement: still failed, not "loading" for ever
    assert (tmp_path / FAILED).exists() and not (tmp_path / READY).exists()
    health.report(parent, "ready")
    assert (tmp_path / READY).exists() and not (tmp_path / FAILED).exists() and not (tmp_path / DIED).exists()
    health.forget(parent)  # a warm worker exited: its replacement is loading, not failed
    assert not (tmp_path / FAILED).exists() and not (tmp_path / READY).exists()


def serving_config(tmp_path: Path, **environ: str) -> ServingConfig:
    return ServingConfig.from_environ(gpus=0, cpus=2, environ={
        "SM_MODEL_DIR": str(tmp_path / "model"), "IMGCLF_HOST": "127.0.0.1", **environ})


def test_nginx_accepts_its_configuration(tmp_path):
    nginx = find_nginx()
    if nginx is None:
        pytest.skip("nginx is not installed (make nginx installs it)")
    config = serving_config(tmp_path, SAGEMAKER_BIND_TO_PORT="18080", SAGEMAKER_MAX_PAYLOAD_IN_MB="2")
    (tmp_path / "health").mkdir()
    (tmp_path / "nginx.conf").write_text(nginx_config(config, tmp_path, tmp_path / "health", None))
    result = subprocess.run([*nginx_command(nginx, tmp_path)[:-2], "-t"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "client_max_body_size 2097152;" in (tmp_path / "nginx.conf").read_text()  # no longer raised to 6 MiB


def smooth_photo(size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)


@pytest.mark.parametrize("size", [(500, 375), (375, 500), (3000, 2000), (40, 31)])
def test_bounded_decode_matches_the_training_transform(size):
    spec = ImageSpec(224)
    body = encoded(smooth_photo(size), "PNG")
    full = eval_preprocess(decode_image(body, spec.resize_size, 64_000_000), spec).float()
    bounded = decode_for_eval(body, spec, 64_000_000).float()
    assert bounded.shape == (3, 224, 224)
    assert (full - bounded).abs().mean() < 1.0  # reducing first differs by well under one grey level


def test_bounded_decode_of_thin_images_and_huge_tiles():
    spec = ImageSpec(224)
    all_bombs = bombs()
    for name in ("png 300000x1", "1-bit png 64000000x1"):
        assert decode_for_eval(all_bombs[name], spec, 64_000_000).shape == (3, 224, 224)
    with pytest.raises(ImageTooLarge, match="TIFF tile of 16384x16384 pixels in a 32x32 image"):
        decode_for_eval(all_bombs["tiff 32x32 with a 16384x16384 tile"], spec, 64_000_000)


def test_float_tiff_is_not_black():
    values = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    body = encoded(Image.fromarray(values, "F"), "TIFF")
    decoded = np.asarray(decode_image(body, 32, 64_000_000))
    assert decoded.max() == 255 and 120 < decoded.mean() < 135


@pytest.fixture
def app_client(tmp_path):
    return warmed_client(serving_config(tmp_path, SAGEMAKER_BATCH_STRATEGY="MULTI_RECORD",
                                        IMGCLF_MAX_IMAGES_PER_REQUEST="2"))


def warmed_client(config: ServingConfig):
    """The Flask app serving an untrained 3-class ResNet-18 at 32 px, once its model is warm."""
    model_spec = ModelSpec("resnet18", 3, ImageSpec(32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    classes = [ClassInfo(i, f"c{i}", f"c{i}") for i in range(3)]
    app = create_app(config, (build_model("resnet18", 3), model_spec, classes))
    client = app.test_client()
    deadline = time.monotonic() + 60
    while client.post("/invocations", data=b"x", content_type="image/png").status_code == 503:
        assert time.monotonic() < deadline, "the model never warmed up"
        time.sleep(0.1)
    return client


def test_compressed_bodies_are_415_and_a_late_request_is_503(app_client):
    body = encoded(Image.new("RGB", (40, 30), "red"), "PNG")
    zipped = app_client.post("/invocations", data=body, content_type="image/png", headers={"Content-Encoding": "gzip"})
    assert zipped.status_code == 415 and "Content-Encoding 'gzip'" in zipped.json["error"]
    late = app_client.post("/invocations", data=body, content_type="image/png",
                           headers={"X-Imgclf-Start": str(time.time() - 61)})  # nginx took it 61 s ago
    assert late.status_code == 503 and "deadline passed" in late.json["error"]
    assert app_client.post("/invocations", data=body, content_type="image/png").status_code == 200


def test_multi_record_is_advertised_and_json_lines_are_answered_line_by_line(app_client):
    """Five records, classified two at a time (IMGCLF_MAX_IMAGES_PER_REQUEST=2): five lines, in order."""
    assert app_client.get("/execution-parameters").json["BatchStrategy"] == "MULTI_RECORD"
    colors = ["red", "blue", "red", "green", "blue"]
    body = b"".join(json.dumps({"b64": base64.b64encode(encoded(Image.new("RGB", (40, 30), c), "PNG")).decode()})
                    .encode() + b"\n" for c in colors)
    answer = app_client.post("/invocations", data=body, content_type="application/jsonlines", query_string="top_k=1")
    assert answer.status_code == 200 and answer.mimetype == "application/jsonlines"
    top = [json.loads(line)[0]["index"] for line in answer.data.decode().splitlines()]
    assert len(top) == 5 and top[0] == top[2] and top[1] == top[4]
    broken = app_client.post("/invocations", data=body + b'{"b64": "AAAA"}\n', content_type="application/jsonlines")
    assert broken.status_code == 400 and broken.json["error"].startswith("line 6: not a readable image")


def test_nan_probabilities_are_a_500_naming_them_never_json_with_nan(tmp_path, monkeypatch):
    """JSON has no NaN: an engine answering NaN for real images (finite for the blank warm-up) is a clear 500."""
    def infer(images: torch.Tensor) -> torch.Tensor:
        blank = images.flatten(1).amax(1, keepdim=True) == 0
        return torch.where(blank, 1 / 3, float("nan")).expand(-1, 3)
    monkeypatch.setattr(engines, "start", lambda *_args: ("torch", infer))
    client = warmed_client(serving_config(tmp_path))
    red = encoded(Image.new("RGB", (40, 30), "red"), "PNG")
    answer = client.post("/invocations", data=red, content_type="image/png")
    assert answer.status_code == 500, answer.data
    assert answer.json["error"].startswith("the network's probabilities are NaN or infinite for 1 of 1 image(s) in ")


def test_a_query_string_that_is_not_utf8_is_400(app_client):
    answer = app_client.post("/invocations", data=b"x", content_type="image/png", environ_overrides={"QUERY_STRING": "a=\xff"})
    assert answer.status_code == 400 and answer.json["error"] == "the query string is not valid UTF-8"
