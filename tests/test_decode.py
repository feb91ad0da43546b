"""Decoding only the accepted formats, each bounded before its pixels are decoded; the container's
resources read from its cgroup; the real ``serve`` and the real image given hostile images."""

from __future__ import annotations

import io
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image, ImageOps

from bombs import bomb, bombs, encoded, ico_holding, icns_holding, rle4_bmp, transparent_png
from conftest import ServeProcess, free_port, wait_until_healthy
from imgclf import resources
from imgclf.config import ServingConfig
from imgclf.data import IMAGE_EXTENSIONS
from imgclf.preprocess import (
    ACCEPTED_FORMATS, ImageError, ImageSpec, ImageTooLarge, UnsupportedFormat, decode_for_eval, decode_image,
    eval_preprocess,
)
from random_model import write_random_model

SPEC = ImageSpec(32)
REFUSED = {  # small ones: the refusal reads the signature only, whatever the size
    "ICO": lambda: ico_holding(transparent_png(2000)),
    "ICNS": lambda: icns_holding(transparent_png(2000)),
    "JPEG2000": lambda: encoded(Image.new("RGB", (64, 64)), "JPEG2000"),
    "AVIF": lambda: encoded(Image.new("RGB", (64, 64)), "AVIF"),
    "PPM": lambda: encoded(Image.new("RGB", (64, 64)), "PPM"),
}


def photo(size=(96, 64)) -> Image.Image:
    """Four coloured quadrants: every flip and rotation gives a different picture."""
    quadrants = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 0]]], dtype=np.uint8)
    return Image.fromarray(quadrants).resize(size, Image.Resampling.NEAREST)


@pytest.mark.parametrize("fmt", ACCEPTED_FORMATS)
def test_each_accepted_format_decodes_and_only_where_allowed(fmt):
    body = encoded(photo().convert("P") if fmt == "GIF" else photo(), fmt)
    assert decode_for_eval(body, SPEC, 10**6).shape == (3, 32, 32)
    assert decode_for_eval(body, SPEC, 10**6, formats=(fmt,)).shape == (3, 32, 32)
    other = "PNG" if fmt != "PNG" else "JPEG"
    with pytest.raises(UnsupportedFormat, match=f"signature of {fmt}, a format not accepted here; send one of {other}"):
        decode_for_eval(body, SPEC, 10**6, formats=(other,))


@pytest.mark.parametrize("fmt", REFUSED)
def test_other_formats_are_refused_by_signature_before_decoding(fmt):
    start = time.monotonic()
    for decode in (lambda b: decode_for_eval(b, SPEC, 10**9), lambda b: decode_image(b, 32, 10**9)):
        with pytest.raises(UnsupportedFormat, match=f"signature of {fmt}, a format not accepted"):
            decode(REFUSED[fmt]())
    assert time.monotonic() - start < 5


def test_rle_bmp_is_refused_and_garbage_is_not_an_image():
    with pytest.raises(UnsupportedFormat, match="BMP with RLE compression is not accepted"):
        decode_for_eval(rle4_bmp(600), SPEC, 10**9)
    with pytest.raises(ImageError, match="not a readable image: it has no signature of JPEG, PNG") as caught:
        decode_for_eval(b"\x00garbage" * 10, SPEC, 10**9)
    assert not isinstance(caught.value, UnsupportedFormat)


def test_mpo_from_a_camera_opens_as_jpeg():
    body = encoded(photo(), "MPO", save_all=True, append_images=[photo((64, 96))])
    assert Image.open(io.BytesIO(body)).format == "MPO"
    assert decode_for_eval(body, SPEC, 10**6, formats=("JPEG",)).shape == (3, 32, 32)


def test_costlier_formats_get_a_smaller_pixel_cap():
    image = Image.new("RGBA", (400, 400), (1, 2, 3, 4))  # 160,000 pixels, under a cap of 200,000
    assert decode_for_eval(encoded(image, "PNG"), SPEC, 200_000).shape == (3, 32, 32)
    limit = int(200_000 * resources.DECODE_BYTES_PER_PIXEL / ACCEPTED_FORMATS["WEBP"].bytes_per_pixel)
    with pytest.raises(ImageTooLarge, match=f"400x400 = 160000 pixels; the limit for WEBP is {limit}"):
        decode_for_eval(encoded(image, "WEBP", lossless=True), SPEC, 200_000)


def test_training_reads_every_extension_it_lists_as_an_accepted_format():
    registered = Image.registered_extensions()
    for extension in IMAGE_EXTENSIONS - {""}:
        assert registered[extension] in ACCEPTED_FORMATS, extension


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    body = encoded(photo(), "PNG", exif=exif)
    spec = ImageSpec(32, resize_size=32)
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(body)))
    served = decode_for_eval(body, spec, 10**6)
    assert (served.float() - eval_preprocess(upright.convert("RGB"), spec).float()).abs().mean() < 1.0
    assert (eval_preprocess(decode_image(body, 32, 10**6), spec) == eval_preprocess(upright.convert("RGB"), spec)).all()
    if orientation != 1:  # the turn matters: the upright picture differs from the stored one
        assert not (served == decode_for_eval(encoded(photo(), "PNG"), spec, 10**6)).all()


def fake_cgroup(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    return root


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@pytest.mark.parametrize("files, memory, cpus", [
    ({"memory.max": "1572864000", "cpu.max": "200000 100000"}, 1572864000, 2),  # v2: --memory 1500m --cpus 2
    ({"memory.max": "max", "cpu.max": "max 100000"}, None, None),  # v2 without limits
    ({"memory.max": "1073741824", "cpu.max": "50000 100000"}, 1073741824, 1),  # half a CPU is one
    ({"memory/memory.limit_in_bytes": "1572864000", "cpu/cpu.cfs_quota_us": "150000",
      "cpu/cpu.cfs_period_us": "100000"}, 1572864000, 2),  # v1
    ({"memory/memory.limit_in_bytes": "9223372036854771712", "cpu,cpuacct/cpu.cfs_quota_us": "-1",
      "cpu,cpuacct/cpu.cfs_period_us": "100000"}, None, None),  # v1 without limits
    ({}, None, None),  # no cgroup files
])
def test_resources_from_the_cgroup(tmp_path, files, memory, cpus):
    found = resources.read(fake_cgroup(tmp_path, files))
    assert found.memory_bytes == min(memory or physical_memory(), physical_memory())
    assert found.cpus == min(cpus or len(os.sched_getaffinity(0)), len(os.sched_getaffinity(0)))


def test_the_documented_worst_case_fits_a_small_container(tmp_path):
    """ResNet-50 with --cpus 2 --memory 1500m: one worker, and what it decodes at once fits."""
    model_dir = tmp_path / "model"
    write_random_model(model_dir, "resnet50", 133, 224)
    limits = resources.read(fake_cgroup(tmp_path / "cgroup", {"memory.max": "1572864000", "cpu.max": "200000 100000"}))
    config = ServingConfig.from_environ(gpus=0, cpus=limits.cpus, environ={"SM_MODEL_DIR": str(model_dir)},
                                        memory_bytes=limits.memory_bytes)
    decoding = config.workers * config.decode_slots * config.max_image_pixels * resources.DECODE_BYTES_PER_PIXEL
    assert config.workers == 1 and config.torch_threads == 2
    assert decoding + resources.reserved_bytes(1, resources.model_bytes(model_dir)) <= limits.memory_bytes
    assert (config.decode_slots, config.max_image_pixels) == (1, 64_000_000)
    small = ServingConfig.from_environ(gpus=0, cpus=2, environ={"SM_MODEL_DIR": str(model_dir)},
                                       memory_bytes=1_000_000_000)
    assert small.decode_slots == 1 and small.max_image_pixels < 64_000_000  # a smaller cap where one slot does not fit
    pinned = ServingConfig.from_environ(gpus=0, cpus=2, memory_bytes=1_000_000_000,
                                        environ={"SM_MODEL_DIR": str(model_dir), "IMGCLF_MAX_IMAGE_PIXELS": "9000000"})
    assert pinned.max_image_pixels == 9_000_000  # an explicit setting wins


def assert_json(response: requests.Response, statuses: tuple[int, ...]) -> None:
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert "predictions" in body if response.status_code == 200 else body["status"] == response.status_code


def post(url: str, body: bytes, timeout: float = 60) -> requests.Response:
    return requests.post(url + "/invocations", data=body, headers={"Content-Type": "application/x-image"},
                         timeout=timeout)


@pytest.fixture(scope="module")
def hurried_decoder(tmp_path_factory):
    """A 4 s request deadline: a decode holding the worker past gunicorn's heartbeat would kill it."""
    root = tmp_path_factory.mktemp("hurried_decoder")
    write_random_model(root / "model", "resnet18", 10, 32)
    server = ServeProcess(root / "model", root / "serve.log", env={
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "4", "SAGEMAKER_MODEL_SERVER_WORKERS": "1", "IMGCLF_DECODE_SLOTS": "2"})
    server.wait_until_healthy()
    yield server
    assert server.stop() == 0, server.log()[-3000:]


@pytest.mark.slow
def test_hostile_images_answer_json_within_the_deadline(hurried_decoder):
    """All at once (a 503 is the deadline's own JSON answer), then each refused one alone: no
    decode holds the worker past its heartbeat, nothing reaches nginx's 502 or 504."""
    url, hostile = hurried_decoder.url, bombs()
    refused = [name for name in hostile if name.split()[0] in ("ico", "icns", "jpeg", "avif", "rle4")]
    with ThreadPoolExecutor(max_workers=len(hostile)) as pool:
        timed = dict(zip(hostile, pool.map(lambda body: (time.monotonic(), post(url, body), time.monotonic()),
                                           hostile.values())))
    for name, (start, response, end) in timed.items():
        assert_json(response, (415, 503) if name in refused else (200, 413, 503))
        assert end - start < 4 + 5, name  # the deadline, and one decode begun just before it
    for name in refused:
        start = time.monotonic()
        assert_json(post(url, hostile[name]), (415,))
        assert time.monotonic() - start < 2, name  # refused by its signature, nothing decoded
    assert post(url, encoded(photo(), "PNG")).status_code == 200
    log = hurried_decoder.log()
    assert "WORKER TIMEOUT" not in log and log.count("Booting worker") == 1, log[-3000:]


@pytest.mark.slow
def test_async_endpoint_settings_take_a_photo_over_the_real_time_limit(tmp_path):
    """deploy.py --async raises the body limit and the deadline (ASYNC_ENVIRONMENT): a JPEG over
    real-time's 6 MiB is 413 by default and classified under those settings."""
    from imgclf_launch.deploy import ASYNC_ENVIRONMENT

    body = encoded(Image.fromarray(np.random.default_rng(0).integers(0, 256, (2400, 3200, 3), np.uint8)), "JPEG",
                   quality=100)
    assert len(body) > 6 * 1024 * 1024, len(body)
    write_random_model(tmp_path / "model", "resnet18", 10, 32)
    for env, status in (({}, 413), (ASYNC_ENVIRONMENT, 200)):
        server = ServeProcess(tmp_path / "model", tmp_path / f"serve-{status}.log", env=dict(env))
        try:
            server.wait_until_healthy()
            assert_json(post(server.url, body, timeout=60), (status,))
        finally:
            assert server.stop() == 0, server.log()[-3000:]


@pytest.mark.docker
def test_small_container_serves_two_big_pngs_and_refuses_an_ico(image, tmp_path):
    """ResNet-50 under --memory 1500m --cpus 2, after ordinary load: two 8000x8000 RGBA PNGs at once
    and an ICO bomb get JSON answers, nothing is OOM-killed."""
    write_random_model(tmp_path / "model", "resnet50", 133, 224)
    port, name = free_port(), f"imgclf-decode-test-{os.getpid()}"
    run = subprocess.Popen(["docker", "run", "--rm", "--name", name, "--memory", "1500m", "--cpus", "2",
                            "--network", "host", "-e", f"SAGEMAKER_BIND_TO_PORT={port}", "-e", "IMGCLF_HOST=127.0.0.1",
                            "-v", f"{tmp_path / 'model'}:/opt/ml/model:ro", image, "serve"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, run, lambda: run.stdout.read(), timeout=300)
        ordinary = encoded(photo((500, 375)).convert("RGB"), "JPEG")
        with ThreadPoolExecutor(max_workers=8) as pool:
            assert set(pool.map(lambda _: post(url, ordinary).status_code, range(100))) == {200}
            answers = list(pool.map(lambda body: post(url, body, timeout=120), [
                bomb("rgba png 8000x8000"), bomb("rgba png 8000x8000"), bomb("ico 16x16 holding a 30000x30000 rgba png")]))
        for response in answers[:2]:
            assert_json(response, (200, 413))
        assert_json(answers[2], (415,))
        assert post(url, ordinary).status_code == 200
        peak = subprocess.run(["docker", "exec", name, "sh", "-c", "cat /sys/fs/cgroup/memory.peak "
                               "/sys/fs/cgroup/memory/memory.max_usage_in_bytes 2>/dev/null"],
                              capture_output=True, text=True).stdout.split()
        print(f"container peak memory {int(peak[0]) / 1e6:.0f} MB of 1573 MB; answers "
              f"{[r.status_code for r in answers]}")
    finally:
        subprocess.run(["docker", "stop", "-t", "30", name], capture_output=True)
        output = run.communicate(timeout=60)[0]
    assert "1 decode slot(s) per worker" in output, output[-3000:]
    assert output.count("Booting worker") == 1, output[-3000:]  # no worker was OOM-killed and replaced
    assert "Shutting down: Master" in output, output[-3000:]  # stopped by us, not OOM-killed
