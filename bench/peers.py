"""Our `serve` beside LitServe with batching, one after the other on the same cores, model files and JPEG.

    make bench-peers                       # builds build/peers (LitServe, torch), then runs this
    python bench/peers.py --peers-python build/peers/bin/python --model-dir build/demo/model

LitServe (bench/litserve_app.py) runs in its own venv with the settings ``serve`` uses on a CPU:
max batch 8, 5 ms wait, the same precision and channels_last; its clients send the JPEG as base64
in JSON (LitServe parses JSON bodies), ours send it as image/jpeg.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

import forward
from load import add_level_arguments
from photos import write_photo_dataset
from random_model import model_dir_or_random
from serve import HERE, free_port, measure

from imgclf import precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, help="artifacts from train (default: a random ResNet-50)")
    parser.add_argument("--peers-python", default="build/peers/bin/python", help="the python of LitServe's venv")
    add_level_arguments(parser, "1,8,32", 100, 60)
    args = parser.parse_args()
    args.levels = [int(c) for c in args.concurrency.split(",")]
    serving = {v: k for k, v in forward.PRECISIONS.items()}[
        precision.for_device(os.environ.get("IMGCLF_PRECISION", "auto"), "serve", torch.device("cpu"))]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = model_dir_or_random(args.model_dir, Path(tmp))
        photo = next((write_photo_dataset(Path(tmp) / "photos", 1)).rglob("*.jpg")).read_bytes()
        port = free_port()
        env = {**os.environ, "SM_MODEL_DIR": str(model_dir), "SAGEMAKER_BIND_TO_PORT": str(port), "IMGCLF_HOST": "127.0.0.1"}
        ours = measure(f"imgclf serve ({serving} channels_last)", [str(Path(sys.executable).parent / "serve")],
                       env, port, photo, args)
        port = free_port()
        body = json.dumps({"image": base64.b64encode(photo).decode()}).encode()
        peer = measure(f"LitServe, batching 8 / 5 ms ({serving} channels_last)",
                       [args.peers_python, str(HERE / "litserve_app.py"), str(model_dir), str(port), serving],
                       {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, port, body, args, "application/json")
    print("ratios (imgclf / LitServe)")
    for o, p in zip(ours, peer):
        print(f"  concurrency {o.concurrency:>3}: req/s {o.rps / p.rps:5.2f}x   p99 {o.p99_ms / p.p99_ms:5.2f}x (lower is better)")


if __name__ == "__main__":
    main()
