"""Request bodies -> image bytes and options; predictions -> response bodies."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass

JSON = "application/json"
IMAGE_TYPES = frozenset({
    "image/jpeg", "image/jpg", "image/png", "image/webp", "image/bmp", "image/gif", "image/tiff",
    "application/x-image", "application/octet-stream",
})


class RequestError(Exception):
    """A client mistake, answered with ``status`` and a message a person can act on."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Request:
    images: list[bytes]
    top_k: int | None  # None: not given in the body


def _top_k_value(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise RequestError(400, f"top_k in {where} must be a positive integer, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise RequestError(400, f"top_k in {where} must be a positive integer, got {value!r}") from None
    if number < 1:
        raise RequestError(400, f"top_k in {where} must be >= 1, got {number}")
    return number


def _decode_json(body: bytes, max_images: int) -> Request:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise RequestError(400, f"body is not valid JSON ({type(e).__name__}: {str(e)[:120]})") from None
    if not isinstance(document, dict) or not isinstance(document.get("instances"), list):
        raise RequestError(400, 'JSON body must be an object like {"instances": [{"b64": "<base64 image>"}, ...]}')
    instances = document["instances"]
    if not instances:
        raise RequestError(400, '"instances" is empty: send at least one {"b64": "<base64 image>"}')
    if len(instances) > max_images:
        raise RequestError(413, f"{len(instances)} instances in one request; the limit is {max_images}")
    images = []
    for i, instance in enumerate(instances):
        if not isinstance(instance, dict) or not isinstance(instance.get("b64"), str):
            raise RequestError(400, f'instances[{i}] must be an object with a "b64" string')
        try:
            images.append(base64.b64decode(instance["b64"], validate=True))
        except (binascii.Error, ValueError):
            raise RequestError(400, f"instances[{i}].b64 is not valid base64") from None
    top_k = document.get("top_k")
    return Request(images, None if top_k is None else _top_k_value(top_k, "the JSON body"))


def decode_request(body: bytes, content_type: str | None, max_images: int) -> Request:
    """Split a request by Content-Type into raw image payloads (not yet decoded)."""
    mimetype = (content_type or "").split(";")[0].strip().lower()
    if not mimetype:
        raise RequestError(415, f"Content-Type is required: one of {JSON}, {', '.join(sorted(IMAGE_TYPES))}")
    if mimetype == JSON:
        return _decode_json(body, max_images)
    if mimetype in IMAGE_TYPES:
        return Request([body], None)
    raise RequestError(415, f"Content-Type {mimetype!r} is not supported; use {JSON} or one of {', '.join(sorted(IMAGE_TYPES))}")


def top_k_from(query: Mapping[str, str], custom_attributes: str | None) -> int | None:
    """top_k from ?top_k=N or the X-Amzn-SageMaker-Custom-Attributes header (``top_k=N``)."""
    if "top_k" in query:
        return _top_k_value(query["top_k"], "the query string")
    for part in (custom_attributes or "").replace(";", ",").split(","):
        key, _, value = part.partition("=")
        if key.strip() == "top_k":
            return _top_k_value(value.strip(), "X-Amzn-SageMaker-Custom-Attributes")
    return None


def accepts_json(accept: str | None) -> bool:
    """Whether an Accept header allows our JSON answer. No header, or an empty one, means anything
    (RFC 9110 12.5.1): batch transform sends none unless the user sets one. Parameters such as
    ``charset`` do not matter; ``q=0`` refuses."""
    if accept is None or not accept.strip():
        return True
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0 and media.lower() in (JSON, "application/*", "*/*"):
            return True
    return False


def encode_predictions(predictions: list[list[dict]]) -> bytes:
    return json.dumps({"predictions": predictions}).encode()


def encode_error(status: int, message: str) -> bytes:
    return json.dumps({"error": message, "status": status}).encode()
