"""What /invocations takes and gives: tables of Content-Types, Accept values and statuses; a new type is one entry."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from werkzeug.datastructures import MIMEAccept

from .. import reference

JSON, JSON_LINES = "application/json", "application/jsonlines"


class RequestError(Exception):
    """A client mistake, answered with ``status`` and a message a person can act on."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _split_raw(body: bytes, _max_images: int) -> tuple[list[bytes], int | None]:
    return [body], None


@dataclass(frozen=True)
class RequestType:
    """How a body of one Content-Type splits into image payloads (and a top_k), and what those may be."""

    formats: tuple[str, ...] | None  # Pillow's format names; None: every accepted format
    doc: str
    split: Callable[[bytes, int], tuple[list[bytes], int | None]] = _split_raw
    item: str = ""  # how an error names image i (or line n)
    answer: str = JSON  # the response type when Accept allows any


@dataclass(frozen=True)
class ResponseType:
    encode: Callable[[list[list[dict]]], bytes]
    doc: str


def _top_k_value(value: object, where: str) -> int:
    try:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(value)
        number = int(value)
    except ValueError:
        raise RequestError(400, f"top_k in {where} must be a positive integer, got {value!r}") from None
    if number < 1:
        raise RequestError(400, f"top_k in {where} must be >= 1, got {number}")
    return number


def _json_value(text: bytes, where: str) -> object:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise RequestError(400, f"{where} is not valid JSON ({type(e).__name__}: {str(e)[:120]})") from None


def _image(record: object, where: str) -> bytes:
    if not isinstance(record, dict) or not isinstance(record.get("b64"), str):
        raise RequestError(400, f'{where} must be an object with a "b64" string')
    try:
        return base64.b64decode(record["b64"], validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, f"{where}.b64 is not valid base64") from None


def _split_json(body: bytes, max_images: int) -> tuple[list[bytes], int | None]:
    document = _json_value(body, "body")
    if not isinstance(document, dict) or not isinstance(document.get("instances"), list):
        raise RequestError(400, 'JSON body must be an object like {"instances": [{"b64": "<base64 image>"}, ...]}')
    instances = document["instances"]
    if not instances:
        raise RequestError(400, '"instances" is empty: send at least one {"b64": "<base64 image>"}')
    if len(instances) > max_images:
        raise RequestError(413, f"{len(instances)} instances in one request; the limit is {max_images}")
    top_k = document.get("top_k")
    images = [_image(instance, f"instances[{i}]") for i, instance in enumerate(instances)]
    return images, None if top_k is None else _top_k_value(top_k, "the JSON body")


def _split_lines(body: bytes, _max_images: int) -> tuple[list[bytes], int | None]:
    """Every line, whatever their count: batch transform fills a request up to MaxPayloadInMB."""
    lines = body.splitlines()  # a last newline ends the last record; it starts no new one
    return [_image(_json_value(line, f"line {n}"), f"line {n}") for n, line in enumerate(lines, 1)], None


REQUEST_TYPES: dict[str, RequestType] = {
    "image/jpeg": RequestType(("JPEG",), "one JPEG image"),
    "image/jpg": RequestType(("JPEG",), "one JPEG image (a common misspelling of image/jpeg)"),
    "image/png": RequestType(("PNG",), "one PNG image"),
    "image/webp": RequestType(("WEBP",), "one WebP image"),
    "image/bmp": RequestType(("BMP",), "one BMP image"),
    "image/gif": RequestType(("GIF",), "one GIF image (its first frame)"),
    "image/tiff": RequestType(("TIFF",), "one TIFF image"),
    "application/x-image": RequestType(None, "one image in any accepted format (SageMaker's built-in algorithms' "
                                             "type)"),
    "application/octet-stream": RequestType(None, "one image in any accepted format (the SageMaker SDK's default)"),
    JSON: RequestType(None, '`{"instances": [{"b64": "<base64 image>"}, ...], "top_k": 3}`: several images, run '
                      "as one batch", _split_json, item="instances[{i}]"),
    JSON_LINES: RequestType(None, 'one `{"b64": "<base64 image>"}` per line (batch transform MultiRecord with '
                            "SplitType Line)", _split_lines, item="line {n}", answer=JSON_LINES),
}


def _encode_json(predictions: list[list[dict]]) -> bytes:
    return json.dumps({"predictions": predictions}).encode()


def _encode_lines(predictions: list[list[dict]]) -> bytes:
    """Lines separated, not ended, by a newline: batch transform's AssembleWith=Line adds the last one."""
    return b"\n".join(json.dumps(ranked).encode() for ranked in predictions)


RESPONSE_TYPES: dict[str, ResponseType] = {
    JSON: ResponseType(_encode_json, '`{"predictions": [[{"label": ..., "index": ..., "probability": ...}, ...]]}`: '
                       "one ranked list per image"),
    JSON_LINES: ResponseType(_encode_lines, "one ranked list per line, line i for image (or input line) i"),
}


def request_type(mimetype: str) -> RequestType:
    """How to split a body of this Content-Type (``mimetype``: lower case, no parameters)."""
    kind = REQUEST_TYPES.get(mimetype)
    if kind is None:
        what = f"Content-Type {mimetype!r} is not supported" if mimetype else "Content-Type is required"
        raise RequestError(415, f"{what}; use one of {', '.join(REQUEST_TYPES)}")
    return kind


def response_type(accept: MIMEAccept, preferred: str) -> str:
    """The Accept value to answer in, ``preferred`` when any will do (RFC 9110 12.5.1), parameters ignored."""
    bare = MIMEAccept([(value.split(";")[0].strip(), quality) for value, quality in accept])
    offers = [preferred, *(name for name in RESPONSE_TYPES if name != preferred)]
    best = bare.best_match(offers, default=None if accept else preferred)
    if best is None:
        supported = ", ".join(RESPONSE_TYPES)
        raise RequestError(406, f"Accept {accept.to_header()!r} is not supported; use one of {supported}")
    return best


def top_k_from(query: Mapping[str, str], custom_attributes: str | None) -> int | None:
    """top_k from ?top_k=N or the X-Amzn-SageMaker-Custom-Attributes header (``top_k=N``)."""
    if "top_k" in query:
        return _top_k_value(query["top_k"], "the query string")
    for part in (custom_attributes or "").replace(";", ",").split(","):
        key, _, value = part.partition("=")
        if key.strip() == "top_k":
            return _top_k_value(value.strip(), "X-Amzn-SageMaker-Custom-Attributes")
    return None


@dataclass(frozen=True)
class Status:
    """A status the server sends: when, and the error nginx answers by itself (None: only the app sends it)."""

    when: str
    proxy: str | None = None
    nginx_codes: tuple[int, ...] = ()  # nginx's own codes answered as this status instead


# Every status the server sends (docs/reliability.md: every answer is JSON).
STATUSES: dict[int, Status] = {
    200: Status("the predictions; /ping once every worker is warm (empty body); /execution-parameters"),
    400: Status("malformed HTTP (a bad Content-Length, a NUL in a header, an HTTP version other than 1.x, a "
                "Transfer-Encoding other than chunked, a method nginx cannot parse); an empty, truncated or "
                "undecodable image, or one not in its Content-Type's format; malformed JSON or base64; a bad "
                "top_k; a query string that is not UTF-8", "malformed HTTP request",
                nginx_codes=(501, 505)),
    404: Status("a path other than /ping, /invocations and /execution-parameters", "no such path"),
    405: Status("a method other than GET, HEAD or POST, or one its path does not take",
                "method not allowed; /invocations takes POST, /ping and /execution-parameters GET"),
    406: Status("an Accept that allows none of the response types"),
    413: Status("a body over SAGEMAKER_MAX_PAYLOAD_IN_MB (chunked or not), an image over IMGCLF_MAX_IMAGE_PIXELS, "
                "more JSON instances than IMGCLF_MAX_IMAGES_PER_REQUEST",
                "request body is larger than the {max_payload_bytes} byte limit"),
    414: Status("a request line over 16 kB", "the request line is too long"),
    415: Status("a Content-Type not in the request types, a Content-Encoding other than identity, an image in a "
                "format its Content-Type does not allow or not accepted at all (imgclf.preprocess.ACCEPTED_FORMATS)"),
    431: Status("a header line over 16 kB, or headers over 64 kB in all", "the request headers are too large",
                nginx_codes=(494,)),
    500: Status("the model could not be loaded (the reason in the body, /ping too); the network's probabilities "
                "were NaN or infinite; an error in the server",
                "internal error in the proxy"),
    502: Status("no worker is answering (one is restarting); retry",
                "the model server is not answering (restarting?); retry shortly"),
    503: Status("the model is still loading; the request's deadline (SAGEMAKER_MODEL_SERVER_TIMEOUT) passed "
                "before its work was done"),
    504: Status("a worker did not answer within SAGEMAKER_MODEL_SERVER_TIMEOUT + 10 s",
                "the model server did not answer within {upstream_timeout} s"),
}


def encode_error(status: int, message: str) -> bytes:
    return json.dumps({"error": message, "status": status}).encode()


def markdown_table(table: str) -> str:
    """The manual's table of "content-types", "accept" values or "statuses"."""
    header, rows = {"content-types": (("Content-Type", "What it carries"), REQUEST_TYPES),
                    "accept": (("Accept", "What it answers"), RESPONSE_TYPES),
                    "statuses": (("Status", "When"), STATUSES)}[table]
    cells = ((f"`{key}`", getattr(row, "doc", None) or row.when) for key, row in rows.items())
    return reference.markdown_table(header, cells)
