"""Our `serve` beside LitServe and TorchServe with batching, one after the other on the same cores,
model files and JPEG.

    make bench-peers                       # builds build/peers (LitServe) and build/torchserve, then runs this
    python bench/peers.py --model-dir build/demo/model --peers torchserve

Each peer runs in its own venv with the settings ``serve`` uses on a CPU: max batch 8, 5 ms wait,
the same precision, eager torch in channels_last (``serve`` runs the engine IMGCLF_ENGINE picks).
LitServe (bench/litserve_app.py): torchvision transforms, the JPEG as base64 in JSON (LitServe
parses JSON bodies). TorchServe 0.12 (bench/torchserve_app.py): a
.mar with the built-in image_classifier handler, the JPEG as image/jpeg, as ours.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

import forward
from load import Result, add_level_arguments
from photos import write_photo_dataset
from random_model import model_dir_or_random
from serve import HERE, free_port, measure

from imgclf import precision
from imgclf.serving import engines


def peer_env() -> dict:
    """Our environment less PYTHONPATH: a peer's venv must not import our packages."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def litserve(python: str, model_dir: Path, tmp: Path, photo: bytes, serving: str, args) -> list[Result]:
    port = free_port()
    body = json.dumps({"image": base64.b64encode(photo).decode()}).encode()
    return measure(f"LitServe, batching 8 / 5 ms ({serving} channels_last)",
                   [python, str(HERE / "litserve_app.py"), str(model_dir), str(port), serving],
                   peer_env(), port, body, args, "application/json")


def torchserve(python: str, model_dir: Path, tmp: Path, photo: bytes, serving: str, args) -> list[Result]:
    app, store = str(HERE / "torchserve_app.py"), tmp / "torchserve-store"
    subprocess.run([python, app, "setup", str(model_dir), str(store), serving], env=peer_env(), check=True)
    port = free_port()
    return measure(f"TorchServe, image_classifier handler, batching 8 / 5 ms ({serving} channels_last)",
                   [python, app, "serve", str(store), str(port)], peer_env(), port, photo, args)


PEERS = {"litserve": ("LitServe", litserve), "torchserve": ("TorchServe", torchserve)}


def print_ratios(ours: list[Result], peer: list[Result], name: str) -> None:
    print(f"ratios (imgclf / {name})")
    for o, p in zip(ours, peer):
        print(f"  concurrency {o.concurrency:>3}: req/s {o.rps / p.rps:5.2f}x   "
              f"p99 {o.p99_ms / p.p99_ms:5.2f}x (lower is better)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, help="artifacts from train (default: a random ResNet-50)")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated, of {', '.join(PEERS)}")
    parser.add_argument("--litserve-python", default="build/peers/bin/python", help="the python of LitServe's venv")
    parser.add_argument("--torchserve-python", default="build/torchserve/bin/python",
                        help="the python of TorchServe's venv")
    add_level_arguments(parser, "1,8,32", 100, 60)
    args = parser.parse_args()
    args.levels = [int(c) for c in args.concurrency.split(",")]
    peers = args.peers.split(",")
    if not set(peers) <= set(PEERS):
        parser.error(f"--peers {args.peers}: each must be one of {', '.join(PEERS)}")
    cpu = torch.device("cpu")
    serving = {v: k for k, v in forward.PRECISIONS.items()}[
        precision.for_device(os.environ.get("IMGCLF_PRECISION", "auto"), "serve", cpu)]
    engine = engines.choose(os.environ.get("IMGCLF_ENGINE", "auto"), cpu)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = model_dir_or_random(args.model_dir, Path(tmp))
        photo = next((write_photo_dataset(Path(tmp) / "photos", 1)).rglob("*.jpg")).read_bytes()
        port = free_port()
        env = {**os.environ, "SM_MODEL_DIR": str(model_dir), "SAGEMAKER_BIND_TO_PORT": str(port),
               "IMGCLF_HOST": "127.0.0.1"}
        ours = measure(f"imgclf serve ({engine} {serving})", [str(Path(sys.executable).parent / "serve")],
                       env, port, photo, args)
        results = {p: PEERS[p][1](getattr(args, f"{p}_python"), model_dir, Path(tmp), photo, serving, args)
                   for p in peers}
    for p, peer in results.items():
        print_ratios(ours, peer, PEERS[p][0])


if __name__ == "__main__":
    main()
