"""Request and response codecs: pure functions, no server."""

from __future__ import annotations

import base64
import json

import pytest

from imgclf.serving.codecs import (
    RequestError,
    accepts_json,
    decode_request,
    encode_error,
    encode_predictions,
    top_k_from,
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize("accept", [
    None, "", "  ", "*/*", "application/json", "application/json; charset=utf-8", "APPLICATION/JSON",
    "text/html, application/*;q=0.2", "text/csv, */*;q=0.1", "application/json;q=0.5",
])
def test_accept_headers_that_allow_json(accept):
    assert accepts_json(accept)


@pytest.mark.parametrize("accept", ["text/csv", "image/png", "application/json;q=0", "*/*;q=0", "text/*"])
def test_accept_headers_that_refuse_json(accept):
    assert not accepts_json(accept)


@pytest.mark.parametrize("content_type", ["image/png", "image/jpeg; charset=binary", "Application/X-Image",
                                          "application/octet-stream"])
def test_an_image_body_is_one_image(content_type):
    request = decode_request(b"\x89PNG...", content_type, max_images=4)
    assert request.images == [b"\x89PNG..."] and request.top_k is None


def test_a_json_body_carries_instances_and_top_k():
    body = json.dumps({"instances": [{"b64": b64(b"one")}, {"b64": b64(b"two")}], "top_k": "3"}).encode()
    request = decode_request(body, "application/json; charset=utf-8", max_images=4)
    assert request.images == [b"one", b"two"] and request.top_k == 3


@pytest.mark.parametrize(("body", "content_type", "status", "message"), [
    (b"x", None, 415, "Content-Type is required"),
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
])
def test_bad_requests_are_named(body, content_type, status, message):
    with pytest.raises(RequestError) as raised:
        decode_request(body, content_type, max_images=4)
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


def test_responses_are_json():
    predictions = [[{"label": "a", "index": 0, "probability": 0.9}]]
    assert json.loads(encode_predictions(predictions)) == {"predictions": predictions}
    assert json.loads(encode_error(413, "too big")) == {"error": "too big", "status": 413}
