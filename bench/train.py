"""Training speed: our training program against a baseline written the usual way (ImageFolder + PIL
transforms, fp32: bench/baseline.py), same data and hardware.

    python bench/train.py                                   # CPU-sized defaults
    python bench/train.py --arch resnet50 --image-size 224 --images 4096 --batch-size 128   # on a GPU
    python bench/train.py --tensorboard                     # also each of ours with TensorBoard on

Both train the same architecture from scratch on the same photo-sized JPEGs for the same epochs;
images/s is over the whole run, first epoch (and our one-time decode) included.
"""

from __future__ import annotations

import argparse
import os
import logging
import tempfile
import time
from pathlib import Path

import torch

from baseline import train_baseline  # python bench/train.py: bench/ is on sys.path, as the script's folder
from photos import write_photo_dataset

from imgclf.config import TrainingEnv
from imgclf import precision
from imgclf.hyperparameters import Hyperparameters
from imgclf.tensorboard import Board
from imgclf.train import train

BOARD_SECONDS = [0.0]  # time spent inside the TensorBoard board's methods: its direct cost
_depth = [0]


def timed(method):
    def wrapper(*args, **kwargs):
        _depth[0] += 1
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            _depth[0] -= 1
            if _depth[0] == 0:  # outermost call only
                BOARD_SECONDS[0] += time.perf_counter() - start

    return wrapper


for _name in ("__init__", "see_inputs", "after_step", "after_epoch", "finish"):
    setattr(Board, _name, timed(getattr(Board, _name)))


def train_ours(data: Path, args: argparse.Namespace, augment_on: str, tensorboard: bool = False) -> float:
    hp = Hyperparameters(arch=args.arch, pretrained=False, epochs=args.epochs, batch_size=args.batch_size,
                         image_size=args.image_size, augment_on=augment_on, tensorboard=str(tensorboard).lower())
    with tempfile.TemporaryDirectory() as tmp:
        env = TrainingEnv(model_dir=Path(tmp) / "model", output_dir=Path(tmp) / "output",
                          output_data_dir=Path(tmp) / "output" / "data", checkpoint_dir=Path(tmp) / "checkpoints",
                          input_config_dir=Path(tmp) / "config",
                          channels={"train": data}, num_cpus=torch.get_num_threads(),
                          current_host="localhost", hosts=("localhost",))
        start = time.perf_counter()
        train(hp, env)
        return args.images * args.epochs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data", type=Path, default=Path("build/bench_photos"))
    parser.add_argument("--tensorboard", action="store_true", help="also run each of ours with TensorBoard event files on")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if os.environ.get("BENCH_VERBOSE") else logging.WARNING)
    data = write_photo_dataset(args.data / str(args.images), args.images)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    hardware = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"training {args.arch} at {args.image_size} px, {args.images} JPEGs (500x375) x {args.epochs} epochs, "
          f"batch {args.batch_size}, on {hardware}")
    torch.manual_seed(0)
    baseline = train_baseline(data, args.arch, args.image_size, args.epochs, args.batch_size, device)
    print(f"  baseline (ImageFolder + PIL each epoch, fp32): {baseline:8.1f} images/s")
    chosen = {v: k for k, v in precision.DTYPES.items()}[precision.for_device("auto", "train", device)]
    for augment_on in ("cpu", "device"):
        ours = train_ours(data, args, augment_on)
        print(f"  imgclf, augmentation on the {augment_on:6} (decode once, {chosen}): {ours:8.1f} images/s"
              f"  = {ours / baseline:.2f}x the baseline")
        if args.tensorboard:
            BOARD_SECONDS[0] = 0.0
            start = time.perf_counter()
            board = train_ours(data, args, augment_on, tensorboard=True)
            seconds = time.perf_counter() - start
            print(f"  the same with TensorBoard event files on:                     {board:8.1f} images/s"
                  f"  = {board / baseline:.2f}x the baseline, {100 * (1 - board / ours):+.1f}% slower than off;"
                  f" {BOARD_SECONDS[0]:.2f} s of {seconds:.1f} s ({100 * BOARD_SECONDS[0] / seconds:.1f}%) inside TensorBoard's code")


if __name__ == "__main__":
    main()
