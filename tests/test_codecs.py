"""Request and response codecs: pure functions, no server."""

from __future__ import annotations

import base64
import json

import pytest

from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

from imgclf.serving.codecs import (
    REQUEST_TYPES,
    RESPONSE_TYPES,
    STATUSES,
    RequestError,
    encode_error,
    markdown_table,
    request_type,
    response_type,
    top_k_from,
)


def split(body: bytes, content_type: str, max_images: int = 4) -> tuple[list[bytes], int | None]:
    return request_type(content_type).split(body, max_images)


READERS = {  # how a client reads each response type back
    "application/json": lambda body: json.loads(body)["predictions"],
    "application/jsonlines": lambda body: [json.loads(line) for line in body.decode().split("\n")],
}


def answer_for(accept: str | None, preferred: str = "application/json") -> str:
    return response_type(parse_accept_header(accept, MIMEAccept), preferred)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize("accept", [
    None, "", "  ", "*/*", "application/json", "application/json; charset=utf-8", "APPLICATION/JSON",
    "text/html, application/*;q=0.2", "text/csv, */*;q=0.1", "application/json;q=0.5",
])
def test_accept_headers_that_allow_json(accept):
    assert answer_for(accept) == "application/json"


@pytest.mark.parametrize("accept", ["text/csv", "image/png", "application/json;q=0", "*/*;q=0", "text/*"])
def test_accept_headers_that_refuse_json(accept):
    with pytest.raises(RequestError) as raised:
        answer_for(accept)
    assert raised.value.status == 406 and "is not supported; use one of application/json" in raised.value.message


@pytest.mark.parametrize(("accept", "preferred", "expected"), [
    (None, "application/jsonlines", "application/jsonlines"), ("*/*", "application/jsonlines", "application/jsonlines"),
    ("application/json", "application/jsonlines", "application/json"),
    ("application/json;q=0.5, application/jsonlines", "application/json", "application/jsonlines"),
])
def test_accept_chooses_the_response_type(accept, preferred, expected):
    assert answer_for(accept, preferred) == expected


@pytest.mark.parametrize("content_type", list(REQUEST_TYPES))
def test_every_request_type_is_documented_and_answered_by_a_response_type(content_type):
    kind = REQUEST_TYPES[content_type]
    assert kind.doc.strip() and kind.answer in RESPONSE_TYPES
    assert f"| `{content_type}` | {kind.doc} |" in markdown_table("content-types")


@pytest.mark.parametrize("accept", list(RESPONSE_TYPES))
def test_every_response_type_is_documented_and_encodes_predictions(accept):
    predictions = [[{"label": "a", "index": 0, "probability": 0.9}], [{"label": "b", "index": 1, "probability": 0.8}]]
    encoded = RESPONSE_TYPES[accept].encode(predictions)
    assert READERS[accept](encoded) == predictions
    assert RESPONSE_TYPES[accept].doc.strip() and f"| `{accept}` |" in markdown_table("accept")


@pytest.mark.parametrize("status", list(STATUSES))
def test_every_status_is_documented(status):
    assert STATUSES[status].when.strip() and f"| `{status}` | {STATUSES[status].when} |" in markdown_table("statuses")


@pytest.mark.parametrize("content_type", [t for t, kind in REQUEST_TYPES.items() if not kind.item])
def test_an_image_body_is_one_image(content_type):
    assert split(b"\x89PNG...", content_type) == ([b"\x89PNG..."], None)


def test_a_json_body_carries_instances_and_top_k():
    body = json.dumps({"instances": [{"b64": b64(b"one")}, {"b64": b64(b"two")}], "top_k": "3"}).encode()
    assert split(body, "application/json") == ([b"one", b"two"], 3)


def test_json_lines_carry_one_image_per_line():
    body = b"".join(json.dumps({"b64": b64(data)}).encode() + b"\n" for data in (b"one", b"two", b"three"))
    assert split(body, "application/jsonlines", max_images=2) == ([b"one", b"two", b"three"], None)  # no count limit
    assert split(body.rstrip(b"\n").replace(b"\n", b"\r\n"), "application/jsonlines")[0] == [b"one", b"two", b"three"]


@pytest.mark.parametrize(("body", "content_type", "status", "message"), [
    (b"x", "", 415, "Content-Type is required; use one of image/jpeg"),
    (b"x", "text/plain", 415, "Content-Type 'text/plain' is not supported"),
    (b"{", "application/json", 400, "body is not valid JSON (JSONDecodeError"),
    (b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "body is not valid JSON (RecursionError"),
    (b'{"images": []}', "application/json", 400, 'JSON body must be an object like {"instances"'),
    (b'{"instances": []}', "application/json", 400, '"instances" is empty'),
    (json.dumps({"instances": [{"b64": "AA=="}] * 5}).encode(), "application/json", 413,
     "5 instances in one request; the limit is 4"),
    (b'{"instances": ["AA=="]}', "application/json", 400, 'instances[0] must be an object with a "b64" string'),
    (b'{"instances": [{"b64": "AA=="}, {"b64": "A*=="}]}', "application/json", 400, "instances[1].b64 is not valid base64"),
    (b'{"instances": [{"b64": "AA=="}], "top_k": 0}', "application/json", 400, "top_k in the JSON body must be >= 1, got 0"),
    (b'{"instances": [{"b64": "AA=="}], "top_k": true}', "application/json", 400, "top_k in the JSON body must be a positive integer, got True"),
    (b'{"instances": [{"b64": "AA=="}], "top_k": 1.5}', "application/json", 400, "top_k in the JSON body must be a positive integer, got 1.5"),
    (b'{"b64": "AA=="}\n{"b64": "AA=="\n', "application/jsonlines", 400, "line 2 is not valid JSON"),
    (b'{"b64": "AA=="}\n\n{"b64": "AA=="}', "application/jsonlines", 400, "line 2 is not valid JSON"),
    (b'{"b64": "AA=="}\n["AA=="]', "application/jsonlines", 400, 'line 2 must be an object with a "b64" string'),
    (b'{"b64": "A*=="}', "application/jsonlines", 400, "line 1.b64 is not valid base64"),
])
def test_bad_requests_are_named(body, content_type, status, message):
    with pytest.raises(RequestError) as raised:
        split(body, content_type)
    assert raised.value.status == status and raised.value.message.startswith(message), raised.value.message


@pytest.mark.parametrize(("query", "attributes", "expected"), [
    ({}, None, None), ({"top_k": "2"}, "top_k=7", 2), ({}, "foo=bar, top_k=7", 7), ({}, "a=1;top_k = 4", 4),
    ({}, "no_top_k_here", None),
])
def test_top_k_from_the_query_or_custom_attributes(query, attributes, expected):
    assert top_k_from(query, attributes) == expected


@pytest.mark.parametrize(("query", "attributes", "where"), [
    ({"top_k": "x"}, None, "the query string"), ({}, "top_k=-1", "X-Amzn-SageMaker-Custom-Attributes"),
])
def test_a_bad_top_k_names_where_it_came_from(query, attributes, where):
    with pytest.raises(RequestError, match=f"top_k in {where}"):
        top_k_from(query, attributes)


def test_errors_are_json():
    assert json.loads(encode_error(413, "too big")) == {"error": "too big", "status": 413}
