"""The real ``serve`` (nginx -> gunicorn) attacked as in issue 13, on loopback only, every loop
bounded in count and time: connection floods, slow clients, memory bombs, oversized chunked bodies,
abandoned and overdue work, malformed HTTP, and a model directory that disagrees with itself."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests
from PIL import Image

from bombs import bombs, encoded
from conftest import ServeProcess, free_port, small_model
from imgclf.config import ServingConfig
from imgclf.model import CLASSES_FILE
from imgclf.serving.codecs import STATUSES, encode_error
from imgclf.serving.health import FAILED
from imgclf.serving.proxy import find_nginx, nginx_command, nginx_config

DECODE_SLOTS = 2
PER_IMAGE_BYTES = 600e6  # measured: 488 MB for an 8000x8000 RGBA PNG alone, the worst case at the 64 MP cap


def start(root: Path, request_timeout: int, image_size: int = 32, **env: str):
    """One worker, 64 threads, as the issue's reproductions ran; a 3 s client timeout."""
    server = ServeProcess(small_model(root / "model", image_size=image_size), root / "serve.log", env={
        "IMGCLF_CLIENT_TIMEOUT": "3", "SAGEMAKER_MODEL_SERVER_TIMEOUT": str(request_timeout),
        "IMGCLF_DECODE_SLOTS": str(DECODE_SLOTS), "SAGEMAKER_MODEL_SERVER_WORKERS": "1", **env,
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
    """Requests must finish within 3 s (SAGEMAKER_MODEL_SERVER_TIMEOUT); a 320 px model run by eager
    torch (OpenVINO would finish 256 images inside the deadline) that takes one image at a time, so a
    request of many images needs the model for many short turns."""
    server = start(tmp_path_factory.mktemp("hurried"), 3, image_size=320, IMGCLF_MAX_BATCH_SIZE="1",
                   IMGCLF_ENGINE="torch")
    yield server
    assert server.stop() == 0, server.log()[-3000:]


def png(size=(64, 48), color="red") -> bytes:
    return encoded(Image.new("RGB", size, color), "PNG")


def ping_seconds(server) -> float:
    start = time.monotonic()
    assert requests.get(server.url + "/ping", timeout=2).status_code == 200
    return time.monotonic() - start


def classify(server, body: bytes = b"", timeout: float = 30, content_type: str = "image/png") -> requests.Response:
    return requests.post(server.url + "/invocations", data=body or png(), headers={"Content-Type": content_type},
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


def raw_request(port: int, data: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)  # the last request closes the connection (an error, or Connection: close)
        return read_until_closed(s)


CLOSE = b"Host: x\r\nConnection: close\r\n"
PNG_BODY = b"Content-Type: image/png\r\nContent-Length: 1\r\n\r\nx"
# Raw requests that get each status in codecs.STATUSES from the running server; the ones only a broken
# or busy model server gets are driven by test_answers_for_a_missing_or_silent_model_server_are_json.
RAW_CASES = {
    200: [b"GET /execution-parameters HTTP/1.1\r\n" + CLOSE + b"\r\n"],
    400: [b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
          b"GET /ping HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n",
          b"GET /ping HTTP/2.0\r\n" + CLOSE + b"\r\n",
          b"POST /invocations HTTP/1.1\r\n" + CLOSE + b"Transfer-Encoding: gzip\r\n\r\n",
          b"POST /invocations?a=\xff HTTP/1.1\r\n" + CLOSE + PNG_BODY,
          b"POST /invocations HTTP/1.1\r\n" + CLOSE + PNG_BODY],
    404: [b"GET /_health/failed.json HTTP/1.1\r\n" + CLOSE + b"\r\n", b"GET /_error/500 HTTP/1.1\r\n" + CLOSE + b"\r\n",
          b"GET /nothing HTTP/1.1\r\n" + CLOSE + b"\r\n"],
    405: [method + b" /invocations HTTP/1.1\r\n" + CLOSE + b"\r\n" for method in
          (b"TRACE", b"PUT", b"AB", b"A" * 21, b"A" * 5000, b"GET")],
    406: [b"POST /invocations HTTP/1.1\r\n" + CLOSE + b"Accept: text/csv\r\n" + PNG_BODY],
    413: [b"POST /invocations HTTP/1.1\r\n" + CLOSE + b"Content-Type: image/png\r\nContent-Length: 7000000\r\n\r\n"],
    414: [b"GET /" + b"a" * 65536 + b" HTTP/1.1\r\n" + CLOSE + b"\r\n"],
    415: [b"POST /invocations HTTP/1.1\r\n" + CLOSE + b"Content-Type: text/csv\r\nContent-Length: 1\r\n\r\nx"],
    431: [b"GET /ping HTTP/1.1\r\n" + CLOSE + b"X-A: " + b"a" * 16384 + b"\r\n\r\n",
          b"GET /ping HTTP/1.1\r\n" + CLOSE + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 8000) for i in range(9)) + b"\r\n"],
}
SERVER_SIDE = {500, 502, 503, 504}


def answer_of(raw: bytes) -> tuple[int, bytes, object]:
    """(status, head, JSON body) of one raw HTTP/1.1 answer."""
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"\r\nContent-Type: application/json" in head, raw[:300]
    return int(head.split(b" ")[1]), head, json.loads(body)


def test_every_status_the_server_sends_has_a_case():
    assert set(RAW_CASES) | SERVER_SIDE == set(STATUSES)


@pytest.mark.parametrize("status", sorted(RAW_CASES))
def test_every_answer_is_json_in_the_error_shape(attacked, status):
    for request in RAW_CASES[status]:
        answered, _, body = answer_of(raw_request(attacked.port, request))
        assert answered == status, (request[:80], body)
        assert status == 200 or (body["status"] == status and body["error"]), body


@pytest.mark.slow  # starts nginx and waits out its 11 s upstream timeout
def test_answers_for_a_missing_or_silent_model_server_are_json(tmp_path):
    """nginx with serve's configuration and no app behind it: /ping loading (503) and failed (500),
    no app socket (502), an app that never answers (504, after SAGEMAKER_MODEL_SERVER_TIMEOUT + 10 s)."""
    config = ServingConfig.from_environ(gpus=0, cpus=2, environ={
        "IMGCLF_HOST": "127.0.0.1", "SAGEMAKER_BIND_TO_PORT": str(free_port()), "SAGEMAKER_MODEL_SERVER_TIMEOUT": "1"})
    (tmp_path / "health").mkdir()
    tmp_path.chmod(0o755)
    (tmp_path / "nginx.conf").write_text(nginx_config(config, tmp_path, tmp_path / "health", None if os.geteuid() else "root root"))
    nginx = subprocess.Popen(nginx_command(find_nginx(), tmp_path))
    ping = b"GET /ping HTTP/1.1\r\n" + CLOSE + b"\r\n"
    try:
        wait_for_port(config.port)
        assert answer_of(raw_request(config.port, ping))[0] == 503
        (tmp_path / "health" / FAILED).write_bytes(encode_error(500, "model failed to load: boom"))
        assert answer_of(raw_request(config.port, ping))[2] == {"error": "model failed to load: boom", "status": 500}
        assert answer_of(raw_request(config.port, RAW_CASES[200][0]))[0] == 502
        with socket.socket(socket.AF_UNIX) as silent:
            silent.bind(str(tmp_path / "app.sock"))
            os.chmod(tmp_path / "app.sock", 0o777)
            silent.listen()
            status, _, body = answer_of(raw_request(config.port, RAW_CASES[200][0], timeout=30))
        assert status == 504 and body["error"] == "the model server did not answer within 11 s"
    finally:
        nginx.terminate()
        nginx.wait(timeout=30)


def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


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
        statuses[name] = classify(attacked, body, content_type="application/x-image").status_code  # any accepted format
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
    """SAGEMAKER_MODEL_SERVER_TIMEOUT=3: four heavy requests time out at about 3 s with 503; a small
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


def test_a_request_past_its_deadline_stops_claiming_the_model(hurried):
    """256 images need the model for 256 turns, longer than the 3 s deadline: the request gets 503 at its
    deadline and its remaining turns are dropped, so the next single image is answered at once."""
    body = json.dumps({"instances": [{"b64": base64.b64encode(png()).decode()}] * 256}).encode()
    start = time.monotonic()
    dropped = requests.post(hurried.url + "/invocations", data=body, headers={"Content-Type": "application/json"},
                            timeout=30)
    took = time.monotonic() - start
    assert dropped.status_code == 503 and "deadline passed" in dropped.json()["error"], dropped.text
    start = time.monotonic()
    assert classify(hurried).status_code == 200
    next_took = time.monotonic() - start
    print(f"deadline: 256 images answered 503 after {took:.1f} s; the next image took {next_took:.2f} s")
    assert took < 5 and next_took < 1.5


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
        response = server.settled_ping(timeout=120)
        assert response.status_code == 500, server.log()[-2000:]
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
