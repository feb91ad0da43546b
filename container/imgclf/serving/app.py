"""The Flask app: /invocations (its stages top-down in ``_invoke``) and /execution-parameters; nginx answers /ping."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from ..config import ServingConfig
from ..model import load_artifacts
from ..preprocess import ImageTooLarge, UnsupportedFormat
from . import codecs
from .health import BROKEN, LOADING, WARMED, Health
from .predictor import Abandoned, BadImage, NotANumber, Predictor, Ticket

log = logging.getLogger(__name__)

START_HEADER = "X-Imgclf-Start"  # set by nginx: when it handed the request over (epoch seconds)


def _error(status: int, message: str) -> Response:
    return Response(codecs.encode_error(status, message), status=status, mimetype=codecs.JSON)


def _load_failure(config: ServingConfig, e: Exception) -> str:
    log.exception("could not load the model from %s", config.model_dir)
    return f"model failed to load from {config.model_dir}: {type(e).__name__}: {e}"


def load_model(config: ServingConfig) -> tuple | str:
    """The model files as loaded artifacts, or the reason they could not be loaded."""
    try:
        return load_artifacts(config.model_dir)
    except Exception as e:
        return _load_failure(config, e)


def _warm(config: ServingConfig, artifacts: tuple, state: dict, health: Health | None) -> None:
    start = time.perf_counter()
    try:
        predictor = Predictor(artifacts, config)
        predictor.warm_up()
    except Exception as e:
        state["error"] = _load_failure(config, e)
        if health:
            health.report(os.getpid(), BROKEN, state["error"])
        return
    state["predictor"] = predictor
    if health:
        health.report(os.getpid(), WARMED)
    model_spec = predictor.model_spec
    log.info(
        "model %s (%d classes, %d px) ready on %s in %s, run by %s, in %.1f s",
        model_spec.arch, model_spec.num_classes, model_spec.image.image_size, predictor.device, predictor.dtype,
        predictor.engine,
        time.perf_counter() - start,
    )


def _client_gone(sock: socket.socket | None) -> Callable[[], bool]:
    """Whether the peer (nginx, which closes when its client leaves) has closed the connection."""
    def gone() -> bool:
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True
    return gone if sock is not None else (lambda: False)


def _ticket(timeout: int) -> Ticket:
    try:
        waited = max(0.0, time.time() - float(request.headers.get(START_HEADER, "")))
    except ValueError:
        waited = 0.0
    return Ticket(time.monotonic() + timeout - waited, _client_gone(request.environ.get("gunicorn.socket")))


def create_app(config: ServingConfig, loaded: tuple | str, health: Health | None = None) -> Flask:
    """``loaded``: load_model's answer; ``health``: where to report this worker's state."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_payload_bytes
    state: dict = {"predictor": None, "error": loaded if isinstance(loaded, str) else None}
    if health:
        health.report(os.getpid(), BROKEN if state["error"] else LOADING, state["error"])
    if not state["error"]:
        threading.Thread(target=_warm, args=(config, loaded, state, health), name="model-loader", daemon=True).start()

    @app.get("/execution-parameters")
    def execution_parameters() -> Response:
        return app.json.response({
            "MaxConcurrentTransforms": config.max_concurrent_transforms,
            "BatchStrategy": config.batch_strategy,
            "MaxPayloadInMB": config.max_payload_bytes // (1024 * 1024),
        })

    @app.post("/invocations")
    def invocations() -> Response:
        if state["predictor"] is None:
            return _error(500, state["error"]) if state["error"] else _error(
                503, "model is still loading; retry shortly")
        return _invoke(state["predictor"], config)

    @app.errorhandler(codecs.RequestError)
    def request_error(e: codecs.RequestError) -> Response:
        return _error(e.status, e.message)

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> Response:
        if e.code == 413:
            return _error(413, f"request body is larger than the {config.max_payload_bytes} byte limit")
        return _error(e.code or 500, e.description or e.name)

    @app.errorhandler(Exception)
    def unexpected(e: Exception) -> Response:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return _error(500, f"internal error: {type(e).__name__}")

    return app


def _invoke(predictor: Predictor, config: ServingConfig) -> Response:
    """One request's stages: split the body (codecs), decode, batch, predict, unbatch (Predictor), encode (codecs)."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        return _error(415, f"Content-Encoding {encoding!r} is not supported; send the body uncompressed")
    kind = codecs.request_type(request.mimetype)
    answer = codecs.response_type(request.accept_mimetypes, kind.answer)
    ticket = _ticket(config.timeout)
    body = request.get_data(cache=False)
    if not body:
        raise codecs.RequestError(400, "request body is empty: send an image or JSON")
    images, top_k = kind.split(body, config.max_images_per_request)
    top_k = top_k or codecs.top_k_from(
        _query(), request.headers.get("X-Amzn-SageMaker-Custom-Attributes")) or config.default_top_k
    try:
        predictions = _classify(predictor, images, top_k, ticket, kind.formats, config.max_images_per_request)
    except BadImage as e:
        where = kind.item.format(i=e.index, n=e.index + 1)
        status = 413 if isinstance(e.error, ImageTooLarge) else 415 if isinstance(e.error, UnsupportedFormat) else 400
        raise codecs.RequestError(status, f"{where}: {e}" if where else str(e)) from None
    except Abandoned as e:
        log.warning("request dropped: %s", e)
        return _error(503, f"{e} (the limit is {config.timeout} s); retry or send fewer images")
    except NotANumber as e:
        log.error("%s", e)
        return _error(500, str(e))
    return Response(codecs.RESPONSE_TYPES[answer].encode(predictions), status=200, mimetype=answer)


def _classify(predictor: Predictor, images: list[bytes], top_k: int, ticket: Ticket,
              formats: tuple[str, ...] | None, at_once: int) -> list[list[dict]]:
    """``images`` classified ``at_once`` at a time, so a long JSON Lines body holds one slice's crops at once."""
    predictions: list[list[dict]] = []
    for start in range(0, len(images), at_once):
        try:
            predictions += predictor.classify(images[start : start + at_once], top_k, ticket, formats)
        except BadImage as e:
            raise BadImage(start + e.index, e.error) from None
    return predictions


def _query() -> Mapping[str, str]:
    try:
        return request.args
    except UnicodeDecodeError:
        raise codecs.RequestError(400, "the query string is not valid UTF-8") from None
