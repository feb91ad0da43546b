"""Write model artifacts with random weights, to measure serving speed without training.

    python bench/random_model.py build/resnet50 --arch resnet50 --classes 133 --image-size 224
"""

from __future__ import annotations

import argparse
from pathlib import Path

from imgclf.data import ClassInfo
from imgclf.model import ModelSpec, build_model, save_artifacts
from imgclf.preprocess import IMAGENET_MEAN, IMAGENET_STD, ImageSpec


def write_random_model(model_dir: Path, arch: str, classes: int, image_size: int) -> None:
    infos = [ClassInfo(i, f"{i + 1:03d}.class_{i}", f"class {i}") for i in range(classes)]
    model_spec = ModelSpec(arch, classes, ImageSpec(image_size, IMAGENET_MEAN, IMAGENET_STD))
    save_artifacts(model_dir, build_model(arch, classes).state_dict(), model_spec, infos, {"note": "random weights, for benchmarks"})


def model_dir_or_random(model_dir: Path | None, tmp: Path) -> Path:
    """The benchmarks' model: ``model_dir`` as given, or a random ResNet-50 (133 classes, 224 px) in ``tmp``."""
    if model_dir is not None:
        return model_dir
    write_random_model(tmp / "model", "resnet50", 133, 224)
    return tmp / "model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--classes", type=int, default=133)
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()
    write_random_model(args.model_dir, args.arch, args.classes, args.image_size)
    print(f"wrote {args.arch} ({args.classes} classes, {args.image_size} px, random weights) to {args.model_dir}")


if __name__ == "__main__":
    main()
