"""The ``serve`` command: nginx in front of gunicorn (the Flask app), started and watched (docs/serving.md)."""

from __future__ import annotations

import grp
import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from gunicorn.app.base import BaseApplication

from ..config import ConfigError, ServingConfig
from .. import gpu, resources
from ..logs import setup_logging
from .app import create_app, load_model
from .health import Health
from .proxy import SHUTDOWN_GRACE_SECONDS, find_nginx, nginx_command, nginx_config

log = logging.getLogger("imgclf.serve")


def _pre_fork(server, worker) -> None:
    """In the master: give the new worker the lowest GPU no live worker holds."""
    gpus = server.app.config.gpus
    if gpus:
        taken = {getattr(w, "gpu", None) for w in server.WORKERS.values()}
        worker.gpu = min(set(range(gpus)) - taken, default=worker.age % gpus)


# Read when the process starts: images (Pillow's blocks) are mapped apart and unmapped when freed, the
# model's activations are reused from the heap (docs/design.md: "Freed image memory goes back, activations stay").
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024), "PILLOW_BLOCK_SIZE": "64m"}


def start_with_allocator_env() -> None:
    """Start this process again, the same way, with MALLOC_ENV set where it is not (read only at start).
    Empty counts as not set: glibc reads an empty MALLOC_MMAP_THRESHOLD_ as 0, an mmap for every malloc."""
    missing = {name: value for name, value in MALLOC_ENV.items() if not os.environ.get(name)}
    if missing:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, **missing})


def _check_allocator_env() -> None:
    """glibc reads MALLOC_MMAP_THRESHOLD_ up to its first non-digit: "32m" is 32 bytes, an mmap per malloc."""
    value = os.environ.get("MALLOC_MMAP_THRESHOLD_", "")
    if not re.fullmatch(r"\s*(\d+|0[xX][0-9a-fA-F]+)\s*", value):
        digits = re.match(r"\s*\d*", value).group().strip()
        raise ConfigError(f"environment variable MALLOC_MMAP_THRESHOLD_={value!r} must be a number of bytes (glibc "
                          f"takes no unit: it would read {int(digits or 0)} bytes, an mmap for every allocation)")


def _log_allocator() -> None:
    """The allocator settings in effect, naming those set before ``serve`` started (kept as they were)."""
    yours = [name for name, value in MALLOC_ENV.items() if os.environ.get(name) != value]
    log.info("allocator: %s%s", ", ".join(f"{name}={os.environ.get(name)}" for name in MALLOC_ENV),
             f" ({', '.join(yours)} as set before serve started)" if yours else "")


def _post_fork(server, worker) -> None:
    """In the worker, before CUDA loads: pin its GPU and threads, read the model files, then drop to the serve user."""
    app: Server = server.app
    config = app.config
    if config.gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        ids = visible.split(",") if visible else [str(i) for i in range(config.gpus)]
        os.environ["CUDA_VISIBLE_DEVICES"] = ids[worker.gpu % len(ids)]
    torch.set_num_threads(config.torch_threads)
    app.loaded = load_model(config)  # gunicorn switches to the serve user right after this hook
    log.info("worker %d: %s, %d torch threads", os.getpid(),
             f"GPU {os.environ['CUDA_VISIBLE_DEVICES']}" if config.gpus else "CPU", config.torch_threads)


def _child_exit(server, worker) -> None:
    """In the master: a dead worker no longer counts as ready."""
    server.app.health.forget(worker.pid)


class Server(BaseApplication):
    """gunicorn behind nginx, whose own limits on request lines and headers answer in JSON, so gunicorn's are lifted."""

    def __init__(self, config: ServingConfig, run_dir: Path, health: Health, user: pwd.struct_passwd | None):
        self.config, self.run_dir, self.health, self.user = config, run_dir, health, user
        self.loaded: tuple | str = "model not loaded"
        super().__init__()

    def load_config(self) -> None:
        c = self.config
        options = {
            "bind": f"unix:{self.run_dir / 'app.sock'}",
            "umask": 0o000,  # nginx's worker, another user, connects to the socket
            "workers": c.workers,
            "worker_class": "gthread",
            "threads": c.threads_per_worker,
            "worker_connections": c.max_connections,  # never the limit: nginx holds at most this many
            "backlog": 2048,
            "timeout": c.timeout,
            "graceful_timeout": SHUTDOWN_GRACE_SECONDS,
            "limit_request_line": 0,
            "limit_request_fields": 32768,
            "limit_request_field_size": 0,
            "worker_tmp_dir": "/dev/shm" if os.path.isdir("/dev/shm") else None,
            "errorlog": "-",
            "pre_fork": _pre_fork,
            "post_fork": _post_fork,
            "child_exit": _child_exit,
            "user": self.user.pw_uid if self.user else None,
            "group": self.user.pw_gid if self.user else None,
            "initgroups": True if self.user else None,  # drop root's supplementary groups too
        }
        for key, value in options.items():
            if value is not None:
                self.cfg.set(key, value)

    def load(self):
        return create_app(self.config, self.loaded, self.health)


def _serve_user(config: ServingConfig) -> pwd.struct_passwd | None:
    """Started as root: IMGCLF_SERVE_USER, else root; None when started as another user (nobody to switch to)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(config.serve_user) if config.serve_user else pwd.getpwuid(0)
    except KeyError:
        raise ConfigError(f"IMGCLF_SERVE_USER={config.serve_user!r} is not a user on this system") from None


def _make_run_dir(user: pwd.struct_passwd | None) -> tuple[Path, Path]:
    run_dir = Path(tempfile.mkdtemp(prefix="imgclf-serve-"))
    health_dir = run_dir / "health"
    health_dir.mkdir()
    if user:
        run_dir.chmod(0o755)
        os.chown(health_dir, user.pw_uid, user.pw_gid)
    return run_dir, health_dir


def _start_gunicorn(config: ServingConfig, run_dir: Path, health: Health, user: pwd.struct_passwd | None) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            Server(config, run_dir, health, user).run()
            os._exit(0)
        except SystemExit as e:
            os._exit(e.code if isinstance(e.code, int) else 1)
        finally:
            os._exit(1)  # anything else
    return pid


def _supervise(children: dict[int, str]) -> int:
    """Wait for both; on SIGTERM stop both gracefully; if one dies on its own, stop the other, exit 1."""
    stopping, code = False, 0

    def stop(signum: int, _frame) -> None:
        nonlocal stopping
        stopping = True
        for pid, name in list(children.items()):
            try:
                os.kill(pid, signal.SIGQUIT if name == "nginx" else signal.SIGTERM)  # each one's graceful stop
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while children:
        pid, status = os.wait()
        name = children.pop(pid, None)  # None: an orphan reaped, not one of ours
        if name is not None and not stopping:
            log.error("%s exited with %d on its own: stopping serve", name, os.waitstatus_to_exitcode(status))
            code = 1
            stop(signal.SIGTERM, None)
    return code


def _log_envelope(config: ServingConfig, limits: resources.Resources) -> None:
    decoding = resources.decoding_bytes(config.workers, config.decode_slots, config.max_image_pixels)
    reserved = resources.reserved_bytes(config.workers, resources.model_bytes(config.model_dir))
    log.info("memory: %.2f GB, %d CPU(s); %d decode slot(s) per worker, images up to %d pixels: decoding at most "
             "%.2f GB besides %.2f GB for the model and runtime", limits.memory_bytes / 1e9, limits.cpus,
             config.decode_slots, config.max_image_pixels, decoding / 1e9, reserved / 1e9)
    if decoding + reserved > limits.memory_bytes:
        log.warning("the decoding envelope does not fit the container's %.2f GB: give it more memory, or lower "
                    "IMGCLF_DECODE_SLOTS or IMGCLF_MAX_IMAGE_PIXELS", limits.memory_bytes / 1e9)


def main() -> int:
    start_with_allocator_env()
    setup_logging()  # workers inherit it through fork
    nginx = find_nginx()
    try:
        _check_allocator_env()
        limits = resources.read()
        config = ServingConfig.from_environ(gpus=gpu.usable_gpu_count(), cpus=limits.cpus,
                                            memory_bytes=limits.memory_bytes)
        user = _serve_user(config)
    except ConfigError as e:
        log.error("cannot start: %s", e)
        return 2
    if nginx is None:
        log.error("cannot start: nginx is not installed (Debian/Ubuntu: apt-get install nginx)")
        return 2
    run_dir, health_dir = _make_run_dir(user)
    health = Health(health_dir, config.workers)
    nginx_user = f"{user.pw_name} {grp.getgrgid(user.pw_gid).gr_name}" if user else None
    (run_dir / "nginx.conf").write_text(nginx_config(config, run_dir, health_dir, nginx_user))
    log.info(
        "serving %s on %s:%d with nginx -> %d worker(s) x %d threads, %d GPU(s), timeout %d s, max body %d bytes, "
        "request handling as %s", config.model_dir, config.host, config.port, config.workers,
        config.threads_per_worker, config.gpus, config.timeout, config.max_payload_bytes,
        user.pw_name if user else f"uid {os.getuid()}",
    )
    _log_envelope(config, limits)
    _log_allocator()
    try:
        children = {_start_gunicorn(config, run_dir, health, user): "gunicorn"}
        children[subprocess.Popen(nginx_command(nginx, run_dir)).pid] = "nginx"
        return _supervise(children)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
