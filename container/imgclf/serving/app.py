"""The Flask application: /ping, /invocations and /execution-parameters.

The model loads and warms up in a background thread when the app is created, so
/ping answers at once: 503 while loading, 200 once a warmed model can answer,
500 if loading failed.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from ..config import ServingConfig
from ..preprocess import ImageTooLarge
from . import codecs
from .predictor import BadImage, Predictor

log = logging.getLogger(__name__)


def _json(status: int, body: bytes) -> Response:
    return Response(body, status=status, mimetype=codecs.JSON)


def _error(status: int, message: str) -> Response:
    return _json(status, codecs.encode_error(status, message))


def _load(config: ServingConfig, state: dict) -> None:
    start = time.perf_counter()
    try:
        predictor = Predictor(
            config.model_dir, config.max_batch_size, config.max_batch_wait_ms, config.max_image_pixels, config.precision,
            config.allow_cpu,
        )
        predictor.warm_up()
    except Exception as e:
        log.exception("could not load the model from %s", config.model_dir)
        state["error"] = f"model failed to load from {config.model_dir}: {type(e).__name__}: {e}"
        return
    state["predictor"] = predictor
    log.info(
        "model %s (%d classes, %d px) ready on %s in %s in %.1f s",
        predictor.spec.arch, predictor.spec.num_classes, predictor.spec.image_size, predictor.device, predictor.dtype,
        time.perf_counter() - start,
    )


def create_app(config: ServingConfig) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_payload_bytes
    state: dict = {"predictor": None, "error": None}
    threading.Thread(target=_load, args=(config, state), name="model-loader", daemon=True).start()

    @app.get("/ping")
    def ping() -> Response:
        if state["predictor"] is not None:
            return Response(status=200)
        if state["error"]:
            return _error(500, state["error"])
        return _error(503, "model is loading")

    @app.get("/execution-parameters")
    def execution_parameters() -> Response:
        return app.json.response({
            "MaxConcurrentTransforms": config.max_concurrent_transforms,
            "BatchStrategy": config.batch_strategy,
            "MaxPayloadInMB": config.max_payload_bytes // (1024 * 1024),
        })

    @app.post("/invocations")
    def invocations() -> Response:
        predictor: Predictor | None = state["predictor"]
        if predictor is None:
            return _error(500, state["error"]) if state["error"] else _error(503, "model is still loading; retry shortly")
        if not codecs.accepts_json(request.headers.get("Accept")):
            return _error(406, f"Accept {request.headers.get('Accept')!r} is not supported; use {codecs.JSON}")
        body = request.get_data(cache=False)
        if not body:
            raise codecs.RequestError(400, "request body is empty: send an image or JSON")
        parsed = codecs.decode_request(body, request.content_type, config.max_images_per_request)
        top_k = parsed.top_k or codecs.top_k_from(
            request.args, request.headers.get("X-Amzn-SageMaker-Custom-Attributes")
        ) or config.default_top_k
        try:
            predictions = predictor.classify(parsed.images, top_k, timeout=config.timeout)
        except BadImage as e:
            where = f"instances[{e.index}]: " if request.mimetype == codecs.JSON else ""
            raise codecs.RequestError(413 if isinstance(e.error, ImageTooLarge) else 400, where + str(e)) from None
        except FutureTimeout:
            return _error(503, f"inference took longer than {config.timeout} s; retry or send fewer images")
        return _json(200, codecs.encode_predictions(predictions))

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
