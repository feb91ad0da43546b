"""The ``serve`` command: gunicorn running the Flask app, as SageMaker hosting expects.

No nginx in front: gunicorn's threaded workers take the connections themselves, so there
is one timeout to keep in step, not two. Each worker loads one model copy; with GPUs,
each worker owns one GPU.
"""

from __future__ import annotations

import logging
import os
import sys

import torch
from gunicorn.app.base import BaseApplication

from ..config import ConfigError, ServingConfig
from .. import gpu
from ..logs import setup_logging
from .app import create_app

log = logging.getLogger("imgclf.serve")

ACCESS_LOG_FORMAT = '%(h)s "%(m)s %(U)s" %(s)s %(B)s bytes %(M)s ms'
SHUTDOWN_GRACE_SECONDS = 25  # SageMaker sends SIGKILL 30 s after SIGTERM


def _pre_fork(server, worker) -> None:
    """In the master: give the new worker the lowest GPU no live worker holds."""
    gpus = server.app.config.gpus
    if gpus:
        taken = {getattr(w, "gpu", None) for w in server.WORKERS.values()}
        worker.gpu = min(set(range(gpus)) - taken, default=worker.age % gpus)


def _post_fork(server, worker) -> None:
    """In the worker, before the app (and CUDA) loads: pin its GPU and its CPU threads."""
    config: ServingConfig = server.app.config
    if config.gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        ids = visible.split(",") if visible else [str(i) for i in range(config.gpus)]
        os.environ["CUDA_VISIBLE_DEVICES"] = ids[worker.gpu % len(ids)]
    torch.set_num_threads(config.torch_threads)
    log.info("worker %d: %s, %d torch threads", os.getpid(),
             f"GPU {os.environ['CUDA_VISIBLE_DEVICES']}" if config.gpus else "CPU", config.torch_threads)


class Server(BaseApplication):
    def __init__(self, config: ServingConfig):
        self.config = config
        super().__init__()

    def load_config(self) -> None:
        c = self.config
        options = {
            "bind": f"{c.host}:{c.port}",
            "workers": c.workers,
            "worker_class": "gthread",
            "threads": c.threads_per_worker,
            "timeout": c.timeout,
            "graceful_timeout": SHUTDOWN_GRACE_SECONDS,
            "keepalive": 75,
            "worker_tmp_dir": "/dev/shm" if os.path.isdir("/dev/shm") else None,
            "accesslog": "-",
            "access_log_format": ACCESS_LOG_FORMAT,
            "errorlog": "-",
            "pre_fork": _pre_fork,
            "post_fork": _post_fork,
        }
        for key, value in options.items():
            if value is not None:
                self.cfg.set(key, value)

    def load(self):
        return create_app(self.config)


def main() -> int:
    setup_logging()  # workers inherit it through fork
    try:
        config = ServingConfig.from_environ(gpus=gpu.usable_gpu_count(), cpus=os.cpu_count() or 1)
    except ConfigError as e:
        log.error("cannot start: %s", e)
        return 2
    log.info(
        "serving %s on %s:%d with %d worker(s) x %d threads, %d GPU(s), timeout %d s, max body %d bytes",
        config.model_dir, config.host, config.port, config.workers, config.threads_per_worker, config.gpus,
        config.timeout, config.max_payload_bytes,
    )
    Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
