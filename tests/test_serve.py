"""The real ``serve`` process over HTTP on loopback, with the model the real ``train`` made."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from PIL import Image

from conftest import ServeProcess, small_model
from imgclf.data import ClassInfo
from imgclf.model import ModelSpec, build_model, save_artifacts
from imgclf.preprocess import ImageSpec
from imgclf.serving.codecs import REQUEST_TYPES

SAVE_ARGS = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}


def sample_images(sample_data: Path, per_class: int = 2) -> list[tuple[str, bytes]]:
    """(label, PNG bytes) from the test split."""
    out = []
    for folder in sorted((sample_data / "test").iterdir()):
        for path in sorted(folder.iterdir())[:per_class]:
            out.append((folder.name.split(".", 1)[1], path.read_bytes()))
    return out


def as_format(png: bytes, fmt: str, **save_args) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png)).save(buffer, fmt, **save_args)
    return buffer.getvalue()


def post(server, body: bytes, content_type: str | None, **kwargs) -> requests.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    headers.update(kwargs.pop("headers", {}))
    return requests.post(server.url + "/invocations", data=body, headers=headers, timeout=30, **kwargs)


def top1(response: requests.Response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0][0]["label"]


IMAGE_TYPES = {name: kind.formats for name, kind in REQUEST_TYPES.items() if not kind.item}  # one image per body


@pytest.mark.parametrize("content_type", list(IMAGE_TYPES))
def test_each_image_content_type_predicts(server, sample_data, content_type):
    fmt = (IMAGE_TYPES[content_type] or ("JPEG",))[0]
    images = sample_images(sample_data)
    correct = sum(top1(post(server, as_format(png, fmt, **SAVE_ARGS.get(fmt, {})), content_type)) == label
                  for label, png in images)
    assert correct >= 0.8 * len(images)


def test_an_image_in_another_format_than_its_content_type_is_refused(server, sample_data):
    _, png = sample_images(sample_data)[0]
    response = post(server, png, "image/jpeg")
    assert response.status_code in (400, 415) and response.json()["error"], response.text


def test_json_lines_in_json_lines_out_one_line_per_record_in_order(server, sample_data):
    """Batch transform with BatchStrategy MultiRecord and SplitType Line: many records per body."""
    images = sample_images(sample_data, per_class=1)
    body = b"".join(json.dumps({"b64": base64.b64encode(png).decode()}).encode() + b"\n" for _, png in images)
    response = post(server, body, "application/jsonlines", params={"top_k": 2})
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/jsonlines"
    lines = response.content.decode().split("\n")  # separated, not ended: AssembleWith=Line adds the last
    assert len(lines) == len(images)
    singles = [top1(post(server, png, "image/png")) for _, png in images]
    assert [json.loads(line)[0]["label"] for line in lines] == singles
    as_json = post(server, body, "application/jsonlines", headers={"Accept": "application/json"})
    assert [ranked[0]["label"] for ranked in as_json.json()["predictions"]] == singles


def test_response_shape_and_default_top_k(server, sample_data):
    _, png = sample_images(sample_data)[0]
    response = post(server, png, "image/png")
    assert response.headers["Content-Type"] == "application/json"
    (ranked,) = response.json()["predictions"]
    assert len(ranked) == 5
    assert set(ranked[0]) == {"label", "index", "probability"}
    probabilities = [p["probability"] for p in ranked]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1.0001


def test_json_batch_matches_single_requests(server, sample_data):
    images = sample_images(sample_data, per_class=1)
    body = json.dumps({"instances": [{"b64": base64.b64encode(png).decode()} for _, png in images], "top_k": 3})
    response = post(server, body.encode(), "application/json")
    assert response.status_code == 200, response.text
    batch = response.json()["predictions"]
    assert len(batch) == len(images) and all(len(p) == 3 for p in batch)
    for (_, png), predicted in zip(images, batch):
        single = post(server, png, "image/png", params={"top_k": 3}).json()["predictions"][0]
        # same top class and confidence; bf16 on CPU (or fp16 on GPU) rounds differently per batch size
        assert predicted[0]["index"] == single[0]["index"]
        assert predicted[0]["probability"] == pytest.approx(single[0]["probability"], abs=0.02)


def test_top_k_from_query_header_and_clipped_to_classes(server, sample_data):
    _, png = sample_images(sample_data)[0]
    assert len(post(server, png, "image/png", params={"top_k": 2}).json()["predictions"][0]) == 2
    header = {"X-Amzn-SageMaker-Custom-Attributes": "trace=abc,top_k=4"}
    assert len(post(server, png, "image/png", headers=header).json()["predictions"][0]) == 4
    assert len(post(server, png, "image/png", params={"top_k": 50}).json()["predictions"][0]) == 10


def bomb_png() -> bytes:
    """A tiny file that declares 400 million pixels."""
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, "PNG")
    return buffer.getvalue()


def b64_json(*payloads: bytes) -> bytes:
    return json.dumps({"instances": [{"b64": base64.b64encode(p).decode()} for p in payloads]}).encode()


ERROR_CASES = {
    "unsupported content type": (b"hello", "text/csv", {}, 415, "Content-Type 'text/csv' is not supported"),
    "missing content type": (b"hello", None, {}, 415, "Content-Type is required"),
    "unsupported accept": (b"x", "image/png", {"headers": {"Accept": "text/csv"}}, 406, "Accept 'text/csv'"),
    "bad json line": (b'{"b64": "AA=="}\n{"b64": 1}\n', "application/jsonlines", {}, 400,
                      'line 2 must be an object with a "b64" string'),
    "empty body": (b"", "image/jpeg", {}, 400, "request body is empty"),
    "not an image": (b"not an image at all", "image/jpeg", {}, 400, "not a readable image"),
    "another format than declared": (b"GIF89a but not really", "image/jpeg", {}, 415,
                                     "the image has the signature of GIF, a format not accepted here; send one of JPEG"),
    "a format not accepted": (b"\0\0\1\0" + b"\0" * 30, "application/x-image", {}, 415, "signature of ICO"),
    "oversized body": (b"\0" * (6 * 1024 * 1024 + 1), "image/jpeg", {}, 413, "larger than the 6291456 byte limit"),
    "malformed json": (b'{"instances": [', "application/json", {}, 400, "body is not valid JSON"),
    "deeply nested json": (b"[" * 100000 + b"]" * 100000, "application/json", {}, 400, "not valid JSON"),
    "wrong json shape": (b'{"images": []}', "application/json", {}, 400, '{"instances": [{"b64"'),
    "bad base64": (b'{"instances": [{"b64": "@@@"}]}', "application/json", {}, 400, "instances[0].b64 is not valid base64"),
    "too many instances": (b64_json(*[b"x"] * 257), "application/json", {}, 413, "257 instances"),
    "bad top_k": (b"x", "image/png", {"params": {"top_k": "0"}}, 400, "top_k in the query string must be >= 1"),
}


@pytest.mark.parametrize("case", ERROR_CASES, ids=list(ERROR_CASES))
def test_client_errors_get_clear_json_and_no_5xx(server, case):
    body, content_type, kwargs, status, message = ERROR_CASES[case]
    response = post(server, body, content_type, **kwargs)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert requests.get(server.url + "/ping", timeout=2).status_code == 200


@pytest.mark.parametrize("accept", [None, "", "application/json; charset=utf-8"])
def test_raw_http_client_without_accept_gets_json(server, sample_data, accept):
    """Batch transform sends no Accept unless the user sets one; http.client adds none either."""
    _, png = sample_images(sample_data)[0]
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    headers = {"Content-Type": "image/png"} | ({} if accept is None else {"Accept": accept})
    connection.request("POST", "/invocations", body=png, headers=headers)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    assert response.status == 200, body
    assert response.getheader("Content-Type") == "application/json"
    assert json.loads(body)["predictions"][0][0]["label"]


def test_truncated_and_bomb_images(server, sample_data):
    _, png = sample_images(sample_data)[0]
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png)).resize((256, 256)).save(buffer, "JPEG")
    jpeg = buffer.getvalue()
    truncated = post(server, jpeg[: len(jpeg) // 2], "image/jpeg")
    assert truncated.status_code == 400 and "corrupt or truncated" in truncated.json()["error"]
    bomb = post(server, bomb_png(), "image/png")
    assert bomb.status_code == 413 and "20000x20000" in bomb.json()["error"]
    in_batch = post(server, b64_json(png, b"junk"), "application/json")
    assert in_batch.status_code == 400 and in_batch.json()["error"].startswith("instances[1]: ")


def test_concurrent_requests_each_get_their_own_answer(server, sample_data):
    images = sample_images(sample_data, per_class=3)
    expected = [post(server, png, "image/png").json()["predictions"][0][0]["index"] for _, png in images]

    def ask(i: int) -> int:
        response = post(server, images[i % len(images)][1], "image/png")
        assert response.status_code == 200, response.text
        return response.json()["predictions"][0][0]["index"]

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(ask, range(4 * len(images))))
    assert answers == [expected[i % len(images)] for i in range(len(answers))]


def test_execution_parameters(server):
    response = requests.get(server.url + "/execution-parameters", timeout=2)
    workers = max(1, (os.cpu_count() or 1) // 4)  # the default on a CPU host: one worker per 4 cores
    assert response.json() == {"MaxConcurrentTransforms": 4 * workers, "BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 6}


def test_access_log_has_latency_but_no_payload(server, sample_data):
    post(server, b'{"instances": [{"b64": "c2VjcmV0LXBheWxvYWQ="}]}', "application/json")
    log = server.log()
    assert '"POST /invocations HTTP/1.1" 400' in log and " bytes " in log  # nginx's access log
    assert "c2VjcmV0LXBheWxvYWQ" not in log and "secret-payload" not in log


@pytest.mark.slow  # starts processes
def test_ping_is_503_while_loading_then_200_and_sigterm_exits_cleanly(tmp_path):
    """A ResNet-50 at 224 px takes seconds to load and warm up on this CPU: ping must say so."""
    model_dir = tmp_path / "model"
    classes = [ClassInfo(i, f"{i:03d}.c{i}", f"c{i}") for i in range(133)]
    model_spec = ModelSpec("resnet50", 133, ImageSpec(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    save_artifacts(model_dir, build_model("resnet50", 133).state_dict(), model_spec, classes, {})
    server = ServeProcess(model_dir, tmp_path / "serve.log", env={"IMGCLF_MAX_BATCH_SIZE": "16"})
    statuses, slowest = [], 0.0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and 200 not in statuses:
        start = time.monotonic()
        try:
            statuses.append(requests.get(server.url + "/ping", timeout=2).status_code)
            slowest = max(slowest, time.monotonic() - start)
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    assert statuses and statuses[0] == 503 and statuses[-1] == 200, (statuses, server.log())
    assert set(statuses) == {503, 200} and slowest < 2.0
    response = post(server, b"x", "image/png")  # the server stays up for a client error on a big model
    assert response.status_code == 400
    assert server.stop() == 0
    assert "Shutting down: Master" in server.log()


def fake_openvino(folder: Path, code: str) -> str:
    """A PYTHONPATH whose openvino package runs ``code`` when imported (as a worker's engine is chosen)."""
    (folder / "openvino").mkdir(parents=True)
    (folder / "openvino" / "__init__.py").write_text(code + "\n")
    return f"{folder}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"


@pytest.mark.slow  # starts processes
def test_ping_is_500_with_reason_when_the_model_cannot_load(tmp_path):
    server = ServeProcess(tmp_path / "nothing", tmp_path / "serve.log")
    try:
        response = server.settled_ping()
        assert response.status_code == 500
        assert "lacks model.pt, classes.json, model.json" in response.json()["error"]
        assert post(server, b"x", "image/png").status_code == 500
    finally:
        server.stop()


@pytest.mark.slow  # starts processes
def test_a_broken_openvino_install_is_named_by_ping_or_in_the_log(tmp_path):
    """openvino installed without its native libraries: IMGCLF_ENGINE=openvino says why; auto serves with torch."""
    model_dir = small_model(tmp_path / "model")
    pythonpath = fake_openvino(tmp_path / "shim", 'raise ImportError("libtbb.so.12: cannot open")')
    for engine, status in (("openvino", 500), ("auto", 200)):
        server = ServeProcess(model_dir, tmp_path / f"{engine}.log",
                              env={"PYTHONPATH": pythonpath, "IMGCLF_ENGINE": engine})
        try:
            response = server.settled_ping()
        finally:
            server.stop()
        assert response.status_code == status, server.log()
        assert "the openvino package is installed but cannot be imported: ImportError: libtbb.so.12" in (
            response.text if status == 500 else server.log())


@pytest.mark.slow  # starts processes
def test_workers_killed_while_loading_make_ping_say_so_not_loading_for_ever(tmp_path):
    """A worker the kernel kills while it converts the model (out of memory) is replaced, killed again, ..."""
    pythonpath = fake_openvino(tmp_path / "shim", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    server = ServeProcess(small_model(tmp_path / "model"), tmp_path / "serve.log",
                          env={"PYTHONPATH": pythonpath, "IMGCLF_ENGINE": "openvino"})
    try:
        response = server.settled_ping(timeout=30)
    finally:
        server.stop()
    assert response.status_code == 500, server.log()
    assert "worker(s) died while loading the model, the last pid" in response.json()["error"]
    assert "ran out of memory: give the container more memory or set fewer SAGEMAKER_MODEL_SERVER_WORKERS" in (
        response.json()["error"])


@pytest.mark.slow  # starts processes
@pytest.mark.parametrize("threshold, expected", [("1048576", "1048576"), ("", "33554432")])
def test_allocator_settings_set_before_serve_are_kept_and_logged(tmp_path, threshold, expected):
    """A value set is kept; an empty one counts as unset (glibc would read it as 0: an mmap for every malloc)."""
    server = ServeProcess(small_model(tmp_path / "model"), tmp_path / "serve.log",
                          env={"MALLOC_MMAP_THRESHOLD_": threshold, "PILLOW_BLOCK_SIZE": "16m"})
    try:
        server.wait_until_healthy(60)
        workers = [pid for pid in os.listdir("/proc") if pid.isdigit() and pid != str(server.process.pid)
                   and f"SAGEMAKER_BIND_TO_PORT={server.port}".encode() in _environ(pid)]
        assert workers, server.log()
        for pid in workers:
            variables = set(_environ(pid).split(b"\0"))
            assert {f"MALLOC_MMAP_THRESHOLD_={expected}".encode(), b"PILLOW_BLOCK_SIZE=16m"} <= variables
    finally:
        server.stop()
    yours = "MALLOC_MMAP_THRESHOLD_, PILLOW_BLOCK_SIZE" if threshold else "PILLOW_BLOCK_SIZE"
    assert f"allocator: MALLOC_MMAP_THRESHOLD_={expected}, PILLOW_BLOCK_SIZE=16m ({yours} as set before serve " \
           "started)" in server.log()


def _environ(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone, or another user's
        return b""


@pytest.mark.slow  # starts processes
@pytest.mark.parametrize("engine", ["torch", "openvino"])
def test_a_network_with_nan_weights_fails_ping_instead_of_answering_nan(tmp_path, engine):
    """JSON has no NaN: the weights of a training run that diverged are refused at warm-up, by either engine."""
    server = ServeProcess(small_model(tmp_path / "model", fc__bias=float("nan")), tmp_path / "serve.log",
                          env={"IMGCLF_ENGINE": engine})
    try:
        response = server.settled_ping()
    finally:
        server.stop()
    assert response.status_code == 500, server.log()
    assert "the network's probabilities for a blank image are NaN or infinite: its weights hold NaN or infinity" in (
        response.json()["error"])


@pytest.mark.slow  # starts processes
def test_an_allocator_threshold_with_a_unit_is_refused_at_start(tmp_path):
    """PILLOW_BLOCK_SIZE takes 64m; glibc would read MALLOC_MMAP_THRESHOLD_=32m as 32 bytes."""
    server = ServeProcess(small_model(tmp_path / "model"), tmp_path / "serve.log",
                          env={"MALLOC_MMAP_THRESHOLD_": "32m"})
    try:
        assert server.process.wait(60) == 2
    finally:
        server.stop()
    assert "cannot start: environment variable MALLOC_MMAP_THRESHOLD_='32m' must be a number of bytes (glibc takes " \
           "no unit: it would read 32 bytes, an mmap for every allocation)" in server.log()
