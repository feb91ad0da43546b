"""The real ``serve`` (nginx -> gunicorn) attacked as in issue 13, on loopback only, every loop
bounded in count and time: connection floods, slow clients, memory bombs, oversized chunked bodies,
abandoned and overdue work, malformed HTTP, and a model directory that disagrees with itself."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests
from PIL import Image

from bombs import bombs, encoded
from conftest import ServeProcess
from imgclf.data import ClassInfo
from imgclf.model import CLASSES_FILE, ModelSpec, build_model, save_artifacts
from imgclf.preprocess import ImageSpec

DECODE_SLOTS = 2
PER_IMAGE_BYTES = 600e6  # measured: 488 MB for an 8000x8000 RGBA PNG alone, the worst case at the 64 MP cap


def small_model(model_dir: Path, classes: int = 10) -> Path:
    model_spec = ModelSpec("resnet18", classes, ImageSpec(32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    labels = [ClassInfo(i, f"{i:03d}.c{i}", f"c{i}") for i in range(classes)]
    save_artifacts(model_dir, build_model("resnet18", classes).state_dict(), model_spec, labels, {})
    return model_dir


def start(root: Path, request_timeout: int):
    """One worker, 64 threads, as the issue's reproductions ran; a 3 s client timeout."""
    server = ServeProcess(small_model(root / "model"), root / "serve.log", env={
        "IMGCLF_CLIENT_TIMEOUT": "3", "SAGEMAKER_MODEL_SERVER_TIMEOUT": str(request_timeout),
        "IMGCLF_DECODE_SLOTS": str(DECODE_SLOTS), "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
    })
    server.wait_until_healthy()
    return server


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    server = start(tmp_path_factory.mktemp("attacked"), 60)
    yield server
    assert server.stop() == 0, server.log()[-3000:]


@pytest.fixture(scope="module")
def hurried(tmp_path_factory):
    """Requests must finish within 4 s (SAGEMAKER_MODEL_SERVER_TIMEOUT)."""
    server = start(tmp_path_factory.mktemp("hurried"), 4)
    yield server
    assert server.stop() == 0, server.log()[-3000:]


def png(size=(64, 48), color="red") -> bytes:
    return encoded(Image.new("RGB", size, color), "PNG")


def ping_seconds(server) -> float:
    start = time.monotonic()
    assert requests.get(server.url + "/ping", timeout=2).status_code == 200
    return time.monotonic() - start


def classify(server, body: bytes = b"", timeout: float = 30) -> requests.Response:
    return requests.post(server.url + "/invocations", data=body or png(), headers={"Content-Type": "image/png"},
                         timeout=timeout)


def workers(server) -> list[psutil.Process]:
    """gunicorn's workers: grandchildren of serve that are not nginx."""
    serve = psutil.Process(server.process.pid)
    return [p for child in serve.children() if "nginx" not in child.name() for p in child.children()]


def peak_rss(process: psutil.Process) -> int:
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def watch_ping(server, stop: threading.Event, times: list[float]) -> None:
    while not stop.is_set():
        try:
            times.append(ping_seconds(server))
        except (requests.RequestException, AssertionError):
            times.append(float("inf"))
        time.sleep(0.1)


def test_connection_flood_leaves_ping_fast_and_recovers(attacked):
    """1,200 connections that send nothing (gunicorn alone spun forever past 1,000), then closed."""
    sockets = []
    try:
        for _ in range(1200):
            sockets.append(socket.create_connection(("127.0.0.1", attacked.port), timeout=5))
        during = ping_seconds(attacked)
        assert during < 2.0
        assert classify(attacked).status_code == 200
    finally:
        for s in sockets:
            s.close()
    time.sleep(0.5)
    after = max(ping_seconds(attacked) for _ in range(5))
    print(f"flood: /ping {during * 1000:.0f} ms with 1,200 idle connections open, {after * 1000:.0f} ms after")
    assert after < 2.0
    assert classify(attacked).status_code == 200


def trickle(port: int, stop: threading.Event, body: bool) -> str:
    """Send a request one byte a second: headers (or full headers, then a body) until stopped or closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        head = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100\r\n\r\n"
        if body:
            s.sendall(head)
        for byte in (b"x" * 100 if body else head):
            if stop.is_set():
                return "stopped"
            try:
                s.sendall(bytes([byte]) if isinstance(byte, int) else byte)
            except OSError:
                return "closed by server"
            time.sleep(1)
        return "sent all"


def test_slow_clients_do_not_block_ping_and_are_cut_off(attacked):
    """64 connections trickling headers and 16 trickling bodies, 1 byte/s, while /ping is polled."""
    stop, times = threading.Event(), []
    watcher = threading.Thread(target=watch_ping, args=(attacked, stop, times))
    watcher.start()
    with ThreadPoolExecutor(max_workers=80) as pool:
        slow = [pool.submit(trickle, attacked.port, stop, i >= 64) for i in range(80)]
        time.sleep(6)
        answered = classify(attacked).status_code
        stop.set()
        outcomes = [f.result(timeout=30) for f in slow]
    watcher.join()
    print(f"slow clients: {len(times)} pings, slowest {max(times) * 1000:.0f} ms; {outcomes.count('closed by server')}"
          " of 80 trickling connections cut off")
    assert answered == 200
    assert max(times) < 2.0, times
    # headers or body paused for longer than IMGCLF_CLIENT_TIMEOUT (3 s total for headers here): nginx hangs up
    assert outcomes.count("closed by server") >= 64, outcomes


def read_until_closed(s: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := s.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:  # reset_timedout_connection: nginx frees a timed-out socket at once
        pass
    return b"".join(chunks)


def test_half_sent_requests_are_closed_after_the_client_timeout(attacked):
    for partial in (b"P", b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", attacked.port), timeout=15) as s:
            s.sendall(partial)
            start = time.monotonic()
            answer = read_until_closed(s)
            assert time.monotonic() - start < 10
            assert answer == b"" or b" 408 " in answer.split(b"\r\n")[0], answer


def test_chunked_body_over_the_limit_is_413(attacked):
    connection = http.client.HTTPConnection("127.0.0.1", attacked.port, timeout=30)
    body = iter([png()] + [b"\0" * (1024 * 1024)] * 7)  # an image plus 7 MiB, sent chunked
    connection.request("POST", "/invocations", body=body, headers={"Content-Type": "image/png"},
                       encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 413
    assert "larger than the 6291456 byte limit" in json.loads(response.read())["error"]
    connection.close()


def raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)  # the last request closes the connection (an error, or Connection: close)
        return read_until_closed(s)


@pytest.mark.parametrize(("name", "request_bytes", "status"), [
    ("bad Content-Length", b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
    ("64 KB URL", b"GET /" + b"a" * 65536 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("NUL in a header", b"GET /ping HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n", 400),
    ("64 KB header", b"GET /ping HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 65536 + b"\r\n\r\n", 431),
])
def test_malformed_http_gets_json_errors(attacked, name, request_bytes, status):
    answer = raw_request(attacked.port, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == str(status).encode(), answer[:300]
    assert b"Content-Type: application/json" in head
    assert json.loads(body)["status"] == status


def test_many_headers_and_pipelined_requests_are_answered(attacked):
    headers = "".join(f"X-H{i}: v\r\n" for i in range(150))
    one = f"GET /execution-parameters HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode()
    answer = raw_request(attacked.port, one + one.replace(b"HTTP/1.1\r\n", b"HTTP/1.1\r\nConnection: close\r\n", 1))
    assert answer.count(b"HTTP/1.1 200 OK") == 2, answer[:500]


def test_bombs_are_refused_or_served_within_the_memory_bound(attacked):
    worker = workers(attacked)[0]
    before = worker.memory_info().rss
    statuses = {}
    for name, body in bombs().items():
        statuses[name] = classify(attacked, body).status_code
    rgba = bombs()["rgba png 8000x8000"]
    with ThreadPoolExecutor(max_workers=6) as pool:  # six at once: decode slots bound them
        statuses["six rgba at once"] = max(r.status_code for r in pool.map(lambda _: classify(attacked, rgba), range(6)))
    growth = peak_rss(worker) - before
    print(f"bombs: {statuses}; worker peak RSS {growth / 1e6:.0f} MB above its {before / 1e6:.0f} MB")
    assert all(status in (200, 413, 415) for status in statuses.values()), statuses
    assert statuses["tiff 32x32 with a 16384x16384 tile"] == 413
    assert growth < DECODE_SLOTS * PER_IMAGE_BYTES
    held = worker.memory_info().rss - before
    print(f"bombs: {held / 1e6:.0f} MB still held after them")
    assert held < 300e6  # freed image buffers go back to the system
    assert worker.is_running() and ping_seconds(attacked) < 2.0


def heavy_batch(count: int = 40) -> bytes:
    """Images that take long to decode (4000x4000 each), small on the wire."""
    image = base64.b64encode(encoded(Image.new("RGB", (4000, 4000), "blue"), "PNG")).decode()
    return json.dumps({"instances": [{"b64": image}] * count}).encode()


def test_overdue_work_is_dropped_and_does_not_starve_later_requests(hurried):
    """SAGEMAKER_MODEL_SERVER_TIMEOUT=4: four heavy requests time out at about 4 s with 503; a small
    request right after them is answered at once, because their remaining work was dropped."""
    body = heavy_batch()
    with ThreadPoolExecutor(max_workers=4) as pool:
        start = time.monotonic()
        heavy = list(pool.map(lambda _: requests.post(hurried.url + "/invocations", data=body, timeout=30,
                                                      headers={"Content-Type": "application/json"}), range(4)))
        took = time.monotonic() - start
    assert [r.status_code for r in heavy] == [503] * 4
    assert "deadline passed" in heavy[0].json()["error"]
    assert took < 8
    start = time.monotonic()
    assert classify(hurried).status_code == 200
    next_took = time.monotonic() - start
    print(f"deadline: four 40-image requests answered 503 after {took:.1f} s; the next request took {next_took:.2f} s")
    assert next_took < 2


def test_work_of_a_client_that_left_is_dropped(hurried):
    body = heavy_batch()
    with socket.create_connection(("127.0.0.1", hurried.port), timeout=10) as s:
        s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(1)
    deadline = time.monotonic() + 10
    while "client closed the connection" not in hurried.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "request dropped: the client closed the connection" in hurried.log()
    start = time.monotonic()
    assert classify(hurried).status_code == 200
    assert time.monotonic() - start < 2


@pytest.mark.slow  # starts processes
def test_model_dir_that_disagrees_with_itself_fails_ping(tmp_path):
    model_dir = small_model(tmp_path / "model")
    classes = json.loads((model_dir / CLASSES_FILE).read_text())
    (model_dir / CLASSES_FILE).write_text(json.dumps(classes[:-1]))  # one label fewer than the network
    server = ServeProcess(model_dir, tmp_path / "serve.log")
    try:
        deadline = time.monotonic() + 120
        status = 503
        while status == 503 and time.monotonic() < deadline:
            try:
                response = requests.get(server.url + "/ping", timeout=2)
                status = response.status_code
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        assert status == 500, server.log()[-2000:]
        assert "classes.json lists 9 classes, model.json says 10" in response.json()["error"]
        assert classify(server).status_code == 500
    finally:
        assert server.stop() == 0


def test_a_killed_worker_is_not_ready_until_its_replacement_is(attacked):
    """As when the kernel's OOM killer takes a worker: /ping says 503 while gunicorn starts and warms
    a new one, then 200 again by itself; nothing else restarts."""
    (worker,) = workers(attacked)
    worker.kill()
    statuses, deadline = [], time.monotonic() + 60
    while time.monotonic() < deadline:
        statuses.append(requests.get(attacked.url + "/ping", timeout=2).status_code)
        if 503 in statuses and statuses[-1] == 200:
            break
        time.sleep(0.05)
    assert 503 in statuses and statuses[-1] == 200, statuses
    assert workers(attacked)[0].pid != worker.pid
    assert classify(attacked).status_code == 200
