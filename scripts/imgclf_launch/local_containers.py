"""The serving containers of the SDK's local mode on this machine, through the docker CLI
(docs/launchers.md, "Local endpoints from the shell")."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .flags import LaunchError

PORT = 8080  # local mode's published serving port (sagemaker/local/image.py, _create_docker_host)
LOCAL_NAME = "IMGCLF_LOCAL_NAME"  # the local endpoint or transform a serving container belongs to
STOP_SECONDS = 30  # docker stop's grace: serve drains its requests on SIGTERM


class Stopped(Exception):
    """SIGTERM or SIGHUP arrived: unwind, stopping what this process started."""


def docker(*args: str) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise LaunchError(f"docker {args[0]}: {result.stderr.strip() or result.returncode}")
    return result.stdout


def containers(publishing: int | None = PORT, name: str | None = None) -> list[dict[str, str]]:
    """Running containers that publish ``publishing`` and/or carry LOCAL_NAME=``name``, with their owner."""
    filters = ["--filter", f"publish={publishing}"] if publishing else []
    filters += ["--filter", "label=com.docker.compose.service"] if name else []
    found = []
    for line in docker("ps", *filters, "--format", "{{.ID}}\t{{.Names}}\t{{.Image}}").splitlines():
        ident, container_name, image = line.split("\t")
        env = docker("inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", ident).splitlines()
        owner = next((v.partition("=")[2] for v in env if v.startswith(f"{LOCAL_NAME}=")), "")
        if name is None or owner == name:
            found.append({"id": ident, "name": container_name, "image": image, "owner": owner})
    return found


def check_port_free() -> None:
    """Before a local endpoint or transform: nothing may hold port 8080, or requests would go to it."""
    for held in containers():
        how = (f"python scripts/deploy.py --delete --local --endpoint {held['owner']}" if held["owner"]
               else f"docker stop {held['name']}")
        raise LaunchError(f"port {PORT} is held by container {held['name']} (image {held['image']}"
                          + (f", local job {held['owner']}" if held["owner"] else "")
                          + f"): a new local job would be answered by that model; stop it first: {how}")
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections closing on the port do not count
        try:
            probe.bind(("0.0.0.0", PORT))
        except OSError as e:
            raise LaunchError(f"port {PORT} is in use by a program outside docker ({e.strerror}); "
                              "local mode serves there: stop that program first") from None


def stop(name: str) -> list[str]:
    """Stop the serving containers of local job ``name``; returns their container names."""
    held = containers(publishing=None, name=name)
    for container in held:
        subprocess.run(["docker", "stop", "-t", str(STOP_SECONDS), container["id"]], capture_output=True)
    return [container["name"] for container in held]


def _raise_stopped(signum: int, _frame) -> None:
    raise Stopped(signal.Signals(signum).name)


def _one_line(args: threading.ExceptHookArgs) -> None:
    """Local mode's compose thread raises when its container stops: one line, not a thread traceback."""
    print(f"local mode: {args.exc_value}", file=sys.stderr)


@contextmanager
def owned(name: str) -> Iterator[None]:
    """Run local job ``name`` on a free port; its containers are stopped however it ends (SIGTERM, SIGHUP too)."""
    check_port_free()
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in (signal.SIGTERM, signal.SIGHUP)}
    hook, threading.excepthook = threading.excepthook, _one_line
    try:
        yield
    finally:
        try:
            stop(name)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            threading.excepthook = hook


def hold(name: str, poll_seconds: float = 2.0) -> str:
    """Keep this process, which holds local mode's endpoint, until its container is gone; returns why."""
    try:
        while containers(publishing=None, name=name):
            time.sleep(poll_seconds)
    except (KeyboardInterrupt, Stopped) as e:
        return f"stopped by {type(e).__name__ if isinstance(e, KeyboardInterrupt) else e}"
    return "its container was stopped"


@contextmanager
def staged_model(model_data: str) -> Iterator[str]:
    """A file:// model tarball copied into a temporary folder (local mode unpacks it beside itself)."""
    path = Path(model_data.removeprefix("file://"))
    if not model_data.startswith("file://") or not path.is_file():
        yield model_data
        return
    folder = Path(tempfile.mkdtemp(prefix="imgclf-model-"))
    try:
        shutil.copy(path, folder / path.name)
        yield f"file://{folder / path.name}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)
