"""Serving speed: our `serve` against its physical limit and a baseline server written the usual way
(PIL decode, fp32, one request at a time: bench/baseline.py).

    python bench/serve.py                        # ResNet-50, 224 px, 133 classes, random weights
    python bench/serve.py --model-dir build/demo/model --requests 300

In one run, on the same cores and the same model files, one after the other: (a) the model alone,
forward only, at its best batch size per precision and memory layout (bench/forward.py); (b) what
decoding and preprocessing the bench JPEG costs per image, ours and the baseline's; (c) our `serve`
and (d) the one-request-at-a-time baseline server (bench/baseline.py), each answering the same
500x375 JPEG at concurrency 1, 8, 32 on loopback; (f) the ratios: ours over the forward-only limit
of the precision `serve` chose, and ours over the baseline.
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
import torch

import forward
from baseline import input_fn
from load import Result, add_level_arguments, print_table, run_levels  # python bench/serve.py: bench/ is on sys.path, as the script's folder
from photos import write_photo_dataset
from random_model import model_dir_or_random

from imgclf import precision
from imgclf.model import load_artifacts
from imgclf.preprocess import ImageSpec
from imgclf.serving import engines

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


def measure(name: str, command: list[str], env: dict, port: int, body: bytes, args, content_type: str = "image/jpeg") -> list:
    process = start(command, env, port)
    try:
        results = run_levels(f"http://127.0.0.1:{port}", body, content_type, args.levels, args.requests, args.seconds)
    finally:
        process.terminate()
        process.wait(60)
    print_table(name, results)
    return results


def limits(model_dir: Path, photo: bytes, args) -> tuple[dict[tuple[str, str, str], forward.Forward], ImageSpec]:
    """(a) and (b): the forward-only sweep and the decode cost, printed; the best batch of each pair."""
    model, spec, _ = load_artifacts(model_dir)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = forward.sweep(model, spec.image, device, args.precisions.split(","), list(forward.LAYOUTS),
                            [int(b) for b in args.batches.split(",")], args.forward_seconds)
    forward.print_forward(results, f"(a) forward only: {spec.arch}, {spec.num_classes} classes, {spec.image.image_size} px, "
                                   f"on {device}, {torch.get_num_threads()} torch threads")
    ours_ms = forward.on_thread(forward.decode_ms, photo, spec.image)
    base_ms = forward.on_thread(forward.timed_ms, lambda: input_fn(photo, spec.image.image_size))
    print(f"(b) decode + preprocess, {len(photo) // 1024} kB 500x375 JPEG, on a second thread: "
          f"imgclf {ours_ms:.1f} ms/image (uint8 crop; normalising is part of the batch), baseline {base_ms:.1f} ms/image")
    return forward.best(results), spec.image


def print_ratios(ours: list[Result], base: list[Result], limit: forward.Forward) -> None:
    print(f"(f) ratios: imgclf / forward-only limit of {limit.engine} {limit.precision}, the engine and precision "
          f"`serve` chose here ({limit.layout}, batch {limit.batch}: {limit.images_per_s:.1f} images/s); imgclf / baseline")
    for o, b in zip(ours, base):
        print(f"  concurrency {o.concurrency:>3}: of the limit {o.rps / limit.images_per_s:5.2f}   "
              f"req/s {o.rps / b.rps:5.2f}x the baseline   p99 {o.p99_ms / b.p99_ms:5.2f}x (lower is better)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, help="artifacts from train (default: a random ResNet-50)")
    add_level_arguments(parser, "1,8,32", 100, 60)
    parser.add_argument("--precisions", default="fp32,bf16", help="forward-only precisions (fp16 needs a GPU)")
    parser.add_argument("--batches", default="1,8,16", help="forward-only batch sizes (serve's default maximum is 8 on CPU)")
    parser.add_argument("--forward-seconds", type=float, default=5, help="at least this long per forward-only point")
    args = parser.parse_args()
    args.levels = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = model_dir_or_random(args.model_dir, Path(tmp))
        photo = next((write_photo_dataset(Path(tmp) / "photos", 1)).rglob("*.jpg")).read_bytes()
        best, _ = limits(model_dir, photo, args)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        serving = {v: k for k, v in forward.PRECISIONS.items()}[
            precision.for_device(os.environ.get("IMGCLF_PRECISION", "auto"), "serve", device)]
        port = free_port()
        ours_env = {**os.environ, "SM_MODEL_DIR": str(model_dir), "SAGEMAKER_BIND_TO_PORT": str(port), "IMGCLF_HOST": "127.0.0.1"}
        engine = engines.choose(os.environ.get("IMGCLF_ENGINE", "auto"), device)
        ours = measure(f"(c) imgclf serve (nginx, gunicorn, cross-request batching, {engine} {serving})",
                       [str(Path(sys.executable).parent / "serve")], ours_env, port, photo, args)
        port = free_port()
        base = measure("(d) baseline (model_fn/input_fn/predict_fn, one request at a time, fp32)",
                       [sys.executable, str(HERE / "baseline.py"), str(model_dir), str(port)], dict(os.environ), port, photo, args)
    limit = max((f for (e, p, _), f in best.items() if (e, p) == (engine, serving)), key=lambda f: f.images_per_s)
    print_ratios(ours, base, limit)


if __name__ == "__main__":
    main()
