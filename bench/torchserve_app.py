"""The same model served the way a TorchServe 0.12 user would serve it: a .mar made by
torch-model-archiver, TorchServe's built-in ``image_classifier`` handler, its batching (batch 8,
5 ms delay, as ``serve`` on a CPU), one worker, on 127.0.0.1 only. Runs in TorchServe's own venv
(make bench-peers), not ours; TorchServe's frontend needs Java 17 or later:

    build/torchserve/bin/python bench/torchserve_app.py setup MODEL_DIR STORE bf16
    build/torchserve/bin/python bench/torchserve_app.py serve STORE PORT

setup checks Java and writes STORE/imgclf.mar: the model traced to TorchScript with the cast to
the serving precision and channels_last inside it (the handler hands it float32 NCHW batches), and
index_to_name.json from classes.json. serve runs TorchServe in the foreground with token
authorization, the metrics API and system metrics off, its config, logs and temporary files in a
temporary folder, until SIGTERM; then ``torchserve --stop``.
POST /invocations (the JPEG as image/jpeg) -> the top 5 labels; GET /ping.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

from peer_model import DTYPES, load_model

BIN = Path(sys.executable).parent  # the venv's bin: torch-model-archiver and torchserve
NAME = "imgclf"
# One worker, as serve runs one model. The handler centre-crops 224 px whatever the model's image size.
MODEL_CONFIG = "minWorkers: 1\nmaxWorkers: 1\nbatchSize: 8\nmaxBatchDelay: 5\nresponseTimeout: 120\n"
JAVA_PACKAGE = "openjdk-17-jre-headless"


class Cast(nn.Module):
    """The model in ``dtype`` and channels_last behind float32 NCHW input and output, as ``serve`` runs it."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model = model.to(dtype=dtype, memory_format=torch.channels_last)
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.dtype).contiguous(memory_format=torch.channels_last)).float()


def java_problem() -> str | None:
    """Why TorchServe's frontend cannot start here (it runs JAVA_HOME's java, else PATH's), or None."""
    home = os.environ.get("JAVA_HOME")
    java = f"{home}/bin/java" if home else shutil.which("java")
    if not java or not os.access(java, os.X_OK):
        return f"TorchServe needs Java 17 or later and there is no java: make java (or apt-get install {JAVA_PACKAGE})"
    said = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60).stderr
    version = re.search(r'version "(?:1\.)?(\d+)', said)
    if not version or int(version[1]) < 17:
        return f"TorchServe needs Java 17 or later; {java} says {said.strip()[:80]!r} (apt-get install {JAVA_PACKAGE})"
    return None


def write_model_files(model_dir: Path, work: Path, precision: str) -> list[Path]:
    """The archive's files in ``work``: the traced model, index_to_name.json, model-config.yaml."""
    model, _ = load_model(model_dir)
    with torch.no_grad():
        traced = torch.jit.trace(Cast(model, DTYPES[precision]), torch.rand(1, 3, 224, 224))
    files = [work / "model.pt", work / "index_to_name.json", work / "model-config.yaml"]
    traced.save(str(files[0]))
    classes = json.loads((model_dir / "classes.json").read_text())
    files[1].write_text(json.dumps({str(c["index"]): c["label"] for c in classes}))
    files[2].write_text(MODEL_CONFIG)
    return files


def setup(model_dir: Path, store: Path, precision: str) -> Path:
    """STORE/imgclf.mar for the built-in image_classifier handler, once Java is known to be there."""
    problem = java_problem()
    if problem:
        sys.exit(problem)
    store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        weights, labels, config = write_model_files(model_dir, Path(work), precision)
        subprocess.run([str(BIN / "torch-model-archiver"), "--model-name", NAME, "--version", "1.0",
                        "--serialized-file", str(weights), "--handler", "image_classifier",
                        "--extra-files", str(labels), "--config-file", str(config),
                        "--export-path", str(store), "--force"], check=True)
    return store / f"{NAME}.mar"


def server_config(store: Path, port: int, tmp: Path) -> str:
    """config.properties: inference on 127.0.0.1:PORT, management on a unix socket in ``tmp``, gRPC
    on loopback ports the system picks, no metrics API, no system metrics, no token authorization."""
    return "\n".join([
        f"inference_address=http://127.0.0.1:{port}",
        f"management_address=unix:{tmp / 'management.sock'}",
        "grpc_inference_address=127.0.0.1", "grpc_management_address=127.0.0.1",
        "grpc_inference_port=0", "grpc_management_port=0",
        "enable_metrics_api=false", "disable_system_metrics=true", "disable_token_authorization=true",
        "enable_model_api=false", "install_py_dep_per_model=false", "default_workers_per_model=1",
        f"model_store={store}", f"load_models={NAME}.mar", "",
    ])


def serve(store: Path, port: int) -> None:
    """TorchServe on ``store`` until SIGTERM; the temporary folder it wrote in is removed after."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with tempfile.TemporaryDirectory(prefix="torchserve-") as tmp:
        config = Path(tmp) / "config.properties"
        config.write_text(server_config(store.resolve(), port, Path(tmp)))
        # TEMP, TMPDIR: TorchServe's pid file, unpacked archive and worker sockets; the LOCATIONs: its logs.
        env = {**os.environ, "TEMP": tmp, "TMPDIR": tmp, "LOG_LOCATION": f"{tmp}/logs",
               "METRICS_LOCATION": f"{tmp}/logs"}
        env.pop("SM_TELEMETRY_LOG", None)  # TorchServe's one telemetry switch
        torchserve = str(BIN / "torchserve")
        server = subprocess.Popen([torchserve, "--start", "--foreground", "--ncs", "--ts-config", str(config)],
                                  cwd=tmp, env=env)
        try:
            server.wait()
        finally:
            subprocess.run([torchserve, "--stop", "--foreground"], cwd=tmp, env=env, timeout=120)
            server.wait(60)
    sys.exit(server.returncode)


def main() -> None:
    if sys.argv[1:2] == ["setup"] and len(sys.argv) == 5:
        print(f"wrote {setup(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4])}")
    elif sys.argv[1:2] == ["serve"] and len(sys.argv) == 4:
        serve(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
