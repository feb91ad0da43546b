"""Serving speed: our `serve` against a one-request-at-a-time server written like the original project.

    python bench/serve.py                        # ResNet-50, 224 px, 133 classes, random weights
    python bench/serve.py --model-dir build/demo/model --requests 300

Both servers load the same model files and answer the same 500x375 JPEG at concurrency 1, 8, 32,
on loopback, one after the other.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from load import print_table, run_levels  # python bench/serve.py: bench/ is on sys.path, as the script's folder
from photos import write_photo_dataset
from random_model import write_random_model

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list[str], env: dict, port: int) -> subprocess.Popen:
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                return process
        except requests.ConnectionError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"{command[0]} exited with {process.returncode}")
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{command} never became healthy")


def measure(name: str, command: list[str], env: dict, port: int, body: bytes, args) -> list:
    process = start(command, env, port)
    try:
        results = run_levels(f"http://127.0.0.1:{port}", body, "image/jpeg", args.levels, args.requests, args.seconds)
    finally:
        process.terminate()
        process.wait(60)
    print_table(name, results)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, help="artifacts from train (default: a random ResNet-50)")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--requests", type=int, default=100, help="at most this many requests per level")
    parser.add_argument("--seconds", type=float, default=60, help="at most this long per level")
    args = parser.parse_args()
    args.levels = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            model_dir = Path(tmp) / "model"
            write_random_model(model_dir, "resnet50", 133, 224)
        photo = next((write_photo_dataset(Path(tmp) / "photos", 1)).rglob("*.jpg")).read_bytes()
        port = free_port()
        ours_env = {**os.environ, "SM_MODEL_DIR": str(model_dir), "SAGEMAKER_BIND_TO_PORT": str(port), "IMGCLF_HOST": "127.0.0.1"}
        ours = measure("imgclf serve (cross-request batching, torch-free request threads, fp16 on GPU / bf16 on CPU)",
                       [str(Path(sys.executable).parent / "serve")], ours_env, port, photo, args)
        port = free_port()
        base = measure("baseline (model_fn/input_fn/predict_fn, one request at a time)",
                       [sys.executable, str(HERE / "baseline.py"), str(model_dir), str(port)], dict(os.environ), port, photo, args)
    print("ratios (imgclf / baseline)")
    for o, b in zip(ours, base):
        print(f"  concurrency {o.concurrency:>3}: req/s {o.rps / b.rps:5.2f}x   p99 {o.p99_ms / b.p99_ms:5.2f}x (lower is better)")


if __name__ == "__main__":
    main()
