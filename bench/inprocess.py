"""The Flask app in this process behind werkzeug's threaded server: no nginx, no gunicorn, so a
benchmark can look inside it (bench/stages.py) or run where neither is installed (bench/gpu_check.py)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests


def wait_ready(url: str, photo: bytes, seconds: float = 300) -> None:
    """Until /invocations answers 200 (the model loads and warms up in the background)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if requests.post(url + "/invocations", data=photo, headers={"Content-Type": "image/jpeg"}, timeout=60).ok:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the app answered no /invocations within {seconds:.0f} s")


@contextmanager
def app_server(model_dir: Path, photo: bytes, environ: dict[str, str] | None = None) -> Iterator[tuple[str, object]]:
    """(url, ServingConfig) of the app serving ``model_dir``, ready; ``environ``: serving settings (IMGCLF_*)."""
    from werkzeug.serving import make_server

    from imgclf import gpu
    from imgclf.config import ServingConfig
    from imgclf.serving.app import create_app, load_model

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    config = ServingConfig.from_environ(gpus=gpu.usable_gpu_count(), cpus=os.cpu_count() or 1,
                                        environ={**(environ or {}), "SM_MODEL_DIR": str(model_dir)})
    server = make_server("127.0.0.1", 0, create_app(config, load_model(config)), threaded=True)
    threading.Thread(target=server.serve_forever, name="bench-http", daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        wait_ready(url, photo)
        yield url, config
    finally:
        server.shutdown()
