"""The server under hostile input and load: no 5xx for client input, no dead worker, /ping stays
fast, memory stays bounded. Every loop here is bounded in count and time, on loopback only."""

from __future__ import annotations

import base64
import io
import json
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from imgclf.serving.codecs import REQUEST_TYPES, RESPONSE_TYPES

# Every type the server takes or answers, read from its tables, and some it does not.
CONTENT_TYPES = [*REQUEST_TYPES, "text/plain", "image/svg+xml", "", "application/json; charset=utf-8",
                 "multipart/form-data", "application/jsonlines; charset=utf-8"]
ACCEPTS = [*RESPONSE_TYPES, "*/*", "", "text/html", "application/json;q=0.9, */*;q=0.1", "image/png",
           "application/jsonlines;q=0.5, application/json"]


def worker_rss(server) -> int:
    return sum(p.memory_info().rss for p in psutil.Process(server.process.pid).children(recursive=True))


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header claims any size, with almost no pixel data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def base_photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))


def unusual_images() -> dict[str, bytes]:
    photo = base_photo()
    frames = [photo.convert("P"), photo.rotate(90).convert("P")]
    animated = io.BytesIO()
    frames[0].save(animated, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    sixteen = Image.fromarray(np.arange(120 * 160, dtype=np.uint16).reshape(120, 160) * 3)  # mode I;16
    palette_alpha = photo.convert("P")
    palette_alpha.info["transparency"] = 0
    return {
        "cmyk jpeg": encoded(photo.convert("CMYK"), "JPEG"),
        "16-bit png": encoded(sixteen, "PNG"),
        "rgba png": encoded(photo.convert("RGBA"), "PNG"),
        "grey+alpha png": encoded(photo.convert("LA"), "PNG"),
        "palette with transparency": encoded(palette_alpha, "PNG", transparency=0),
        "1-bit png": encoded(photo.convert("1"), "PNG"),
        "animated gif": animated.getvalue(),
        "webp": encoded(photo, "WEBP"),
        "progressive jpeg": encoded(photo, "JPEG", progressive=True),
        "exif-rotated jpeg": encoded(photo, "JPEG", exif=b"Exif\0\0MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0"),
        "1x1 png": encoded(Image.new("RGB", (1, 1)), "PNG"),
        "panorama 4000x10": encoded(Image.new("RGB", (4000, 10), "red"), "PNG"),
    }


@pytest.mark.parametrize("name", list(unusual_images()))
def test_unusual_but_valid_images_are_classified(server, name):
    body = unusual_images()[name]
    response = requests.post(server.url + "/invocations", data=body, headers={"Content-Type": "application/x-image"},
                             timeout=30)
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"][0]) == 5


@pytest.mark.parametrize(("name", "body", "status"), [
    ("zero-size png", png_declaring(0, 0), 400),
    ("huge declared png", png_declaring(100_000, 100_000), 413),
    ("declared larger than its data", png_declaring(3000, 3000), 400),
])
def test_impossible_images_are_refused(server, name, body, status):
    response = requests.post(server.url + "/invocations", data=body, headers={"Content-Type": "image/png"}, timeout=30)
    assert response.status_code == status, (name, response.text)
    assert response.json()["error"]


def truncations():
    valid = [encoded(base_photo(), "JPEG"), encoded(base_photo(), "PNG")]
    return st.tuples(st.sampled_from(valid), st.floats(0, 0.99)).map(lambda t: t[0][: int(len(t[0]) * t[1])])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
image_records = st.one_of(st.text(max_size=30), st.fixed_dictionaries({"b64": st.text(max_size=40)}),
                          st.fixed_dictionaries({"b64": st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode())}))
json_bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.lists(image_records, max_size=5).map(lambda xs: json.dumps({"instances": xs, "top_k": 3}).encode()),
    st.lists(image_records, max_size=5).map(lambda xs: b"".join(json.dumps(x).encode() + b"\n" for x in xs)),
    st.integers(1, 3000).map(lambda depth: b'{"instances": ' + b"[" * depth + b"]" * depth + b"}"),
)
bodies = st.one_of(st.binary(max_size=2000), truncations(), json_bodies)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, content_type=st.sampled_from(CONTENT_TYPES), accept=st.sampled_from(ACCEPTS),
       top_k=st.one_of(st.none(), st.text(max_size=5), st.integers(-5, 500).map(str)))
def fuzzed_request_gets_no_5xx(server, body, content_type, accept, top_k):
    headers = {k: v for k, v in (("Content-Type", content_type), ("Accept", accept)) if v}
    params = {} if top_k is None else {"top_k": top_k}
    response = requests.post(server.url + "/invocations", data=body, headers=headers, params=params, timeout=30)
    assert response.status_code < 500, (response.status_code, response.text, body[:100])
    if response.status_code != 200:
        assert response.json()["error"]


def test_fuzzed_requests_never_get_5xx_and_leave_the_server_healthy(server):
    """200 generated requests, then: same workers alive, /ping fast (in one test, so it holds
    whatever order the tests run in)."""
    fuzzed_request_gets_no_5xx(server)
    start = time.monotonic()
    assert requests.get(server.url + "/ping", timeout=2).status_code == 200
    assert time.monotonic() - start < 2
    assert "Worker exiting" not in server.log() and "WORKER TIMEOUT" not in server.log()


def test_load_at_concurrency_32(server, sample_data):
    """A bounded load: 960 requests or 90 s, whichever first, 32 at a time, while /ping is watched."""
    image = next((sample_data / "test" / "004.three").iterdir()).read_bytes()
    before = worker_rss(server)
    stop, ping_times, ping_failures = threading.Event(), [], []

    def watch_ping() -> None:
        while not stop.is_set():
            start = time.monotonic()
            try:
                ok = requests.get(server.url + "/ping", timeout=2).status_code == 200
            except requests.RequestException:
                ok = False
            ping_times.append(time.monotonic() - start)
            if not ok:
                ping_failures.append(time.monotonic())
            time.sleep(0.1)

    deadline = time.monotonic() + 90

    def ask(_: int) -> int:
        if time.monotonic() > deadline:
            return -1
        session = requests.Session()
        return session.post(server.url + "/invocations", data=image, headers={"Content-Type": "image/png"},
                            timeout=60).status_code

    watcher = threading.Thread(target=watch_ping)
    watcher.start()
    try:
        with ThreadPoolExecutor(max_workers=32) as pool:
            statuses = list(pool.map(ask, range(960)))
    finally:
        stop.set()
        watcher.join()
    answered = [s for s in statuses if s != -1]
    assert len(answered) >= 320 and set(answered) == {200}
    assert not ping_failures and max(ping_times) < 2.0
    growth = worker_rss(server) - before
    print(f"load: {len(answered)} requests, ping max {max(ping_times) * 1000:.0f} ms, RSS growth {growth / 1e6:.1f} MB")
    assert growth < 300e6
