"""nginx in front of gunicorn: its configuration (nginx.conf beside this module, filled in) and its command."""

from __future__ import annotations

import re
import shutil
from importlib import resources
from pathlib import Path

from ..config import ServingConfig
from .codecs import STATUSES, encode_error
from .health import FAILED, READY

SHUTDOWN_GRACE_SECONDS = 25  # SageMaker sends SIGKILL 30 s after SIGTERM; both servers stop within this


def _error_pages(values: dict) -> str:
    """One internal location per status nginx answers itself, and its codes that map onto it."""
    lines = []
    for status, row in STATUSES.items():
        if row.proxy is None:
            continue
        body = encode_error(status, row.proxy.format(**values)).decode().replace("\\", "\\\\").replace("'", "\\'")
        for code in (status, *row.nginx_codes):
            lines.append(f"    error_page {code}{'' if code == status else f' ={status}'} /_error/{status};")
        lines.append(f"    location = /_error/{status} {{ internal; default_type application/json; "
                     f"return {status} '{body}'; }}")
    return "\n".join(lines)


def nginx_config(config: ServingConfig, run_dir: Path, health_dir: Path, user: str | None) -> str:
    """nginx.conf for this server; ``user`` runs nginx's workers when it starts as root."""
    values = {
        "run": run_dir, "health": health_dir, "ready": READY, "failed": FAILED,
        "listen": f"[{config.host}]:{config.port}" if ":" in config.host else f"{config.host}:{config.port}",
        "user": f"user {user};" if user else "",
        "max_connections": config.max_connections, "nofile": 2 * config.max_connections + 64,
        "max_payload_bytes": config.max_payload_bytes, "client_timeout": config.client_timeout,
        # the app answers its own deadline (SAGEMAKER_MODEL_SERVER_TIMEOUT) first; this is the backstop
        "upstream_timeout": config.timeout + 10,
        "grace": SHUTDOWN_GRACE_SECONDS,
    }
    values["error_pages"] = _error_pages(values)
    template = resources.files(__package__).joinpath("nginx.conf").read_text()
    return re.sub(r"@(\w+)@", lambda match: str(values[match[1]]), template)


def find_nginx() -> str | None:
    """nginx's path; Debian and Ubuntu put it in /usr/sbin, which a non-root PATH may lack."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def nginx_command(binary: str, run_dir: Path) -> list[str]:
    return [binary, "-p", str(run_dir), "-c", str(run_dir / "nginx.conf"), "-e", "stderr", "-g", "daemon off;"]
