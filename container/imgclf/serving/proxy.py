"""nginx in front of gunicorn, as AWS's bring-your-own-container example runs it.

nginx takes the connections: it reads whole requests (timing out clients that send too slowly),
refuses bodies over the limit (chunked ones too) and malformed requests with JSON errors, holds
thousands of idle connections for a few kB each, and hands gunicorn only complete requests over a
unix socket. So slow or idle clients never hold a gunicorn thread, and gunicorn's gthread worker
never meets its connection-limit bug (benoitc/gunicorn#3407: 22.0 and 23.0 spin forever once
``worker_connections`` idle sockets close; the fixes, PRs #3408 and #3157, are unreleased).
/ping is answered by nginx itself from the health files (see ``health``), never by a Python thread.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..config import ServingConfig
from .codecs import encode_error
from .health import FAILED, READY

SHUTDOWN_GRACE_SECONDS = 25  # SageMaker sends SIGKILL 30 s after SIGTERM; both servers stop within this

# nginx's own refusals, each answered with our JSON error body. 494 is nginx's code for
# headers too large; it answers it as 431 here.
NGINX_ERRORS = {
    400: "malformed HTTP request",
    408: "the client sent its request too slowly",
    411: "a Content-Length or chunked body is required",
    413: "request body is larger than the {max_payload_bytes} byte limit",
    414: "the request line is too long",
    431: "the request headers are too large",
    500: "internal error in the proxy",
    501: "unsupported Transfer-Encoding",
    502: "the model server is not answering (restarting?); retry shortly",
    504: "the model server did not answer within {upstream_timeout} s",
}

TEMPLATE = """\
worker_processes 1;
worker_shutdown_timeout %(grace)ds;
worker_rlimit_nofile %(nofile)d;
pid %(run)s/nginx.pid;
error_log stderr warn;
%(user)s
events { worker_connections %(max_connections)d; }
http {
  log_format imgclf '$remote_addr "$request" $status $body_bytes_sent bytes ${request_time}s';
  access_log /dev/stdout imgclf;
  server_tokens off;
  client_body_temp_path %(run)s/body;
  proxy_temp_path %(run)s/proxy;
  fastcgi_temp_path %(run)s/fastcgi;
  uwsgi_temp_path %(run)s/uwsgi;
  scgi_temp_path %(run)s/scgi;
  client_max_body_size %(max_payload_bytes)d;
  client_body_buffer_size 1m;
  client_header_timeout %(client_timeout)ds;
  client_body_timeout %(client_timeout)ds;
  send_timeout %(client_timeout)ds;
  keepalive_timeout 75s;
  reset_timedout_connection on;
  large_client_header_buffers 4 16k;
  upstream app { server unix:%(run)s/app.sock max_fails=0; }
  server {
    listen %(listen)s backlog=4096;
%(error_pages)s
    location = /ping {
      error_page 500 /_health/%(failed)s;
      if (-f %(health)s/%(failed)s) { return 500; }
      if (-f %(health)s/%(ready)s) { return 200; }
      default_type application/json;
      return 503 '%(loading)s';
    }
    location = /_health/%(failed)s { internal; default_type application/json; alias %(health)s/%(failed)s; }
    location / {
      proxy_pass http://app;
      proxy_set_header Host $host;
      proxy_set_header X-Imgclf-Start $msec;
      proxy_next_upstream off;
      proxy_connect_timeout %(upstream_timeout)ds;
      proxy_send_timeout %(upstream_timeout)ds;
      proxy_read_timeout %(upstream_timeout)ds;
    }
  }
}
"""


def _nginx_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _error_pages(values: dict) -> str:
    lines = []
    for status, message in NGINX_ERRORS.items():
        body = _nginx_string(encode_error(status, message.format(**values)).decode())
        lines.append(f"    error_page {'494 =431' if status == 431 else status} /_error/{status};")
        lines.append(f"    location = /_error/{status} {{ internal; default_type application/json; return {status} '{body}'; }}")
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
        "loading": _nginx_string(json.dumps({"error": "model is loading", "status": 503})),
    }
    return TEMPLATE % {**values, "error_pages": _error_pages(values)}


def find_nginx() -> str | None:
    """nginx's path; Debian and Ubuntu put it in /usr/sbin, which a non-root PATH may lack."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def nginx_command(binary: str, run_dir: Path) -> list[str]:
    return [binary, "-p", str(run_dir), "-c", str(run_dir / "nginx.conf"), "-e", "stderr", "-g", "daemon off;"]
