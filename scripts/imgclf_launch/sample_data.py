"""Write the bundled sample data: scikit-learn's handwritten digits as PNG channels.

    python scripts/make_sample_data.py local_test/data

gives train/, valid/ and test/ folders, one class folder per digit (``001.zero`` ... ``010.nine``),
the layout of the dog-breed dataset. No internet needed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPLITS = (("train", 0.70), ("valid", 0.15), ("test", 0.15))


def write_sample_data(out: Path, size: int = 32, seed: int = 0) -> dict[str, int]:
    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.images))
    counts, start = {}, 0
    for i, (split, share) in enumerate(SPLITS):
        end = len(order) if i == len(SPLITS) - 1 else start + round(share * len(order))
        for n in order[start:end]:
            label = int(digits.target[n])
            pixels = (digits.images[n] * (255 / 16)).astype(np.uint8)
            image = Image.fromarray(pixels, "L").resize((size, size), Image.BICUBIC).convert("RGB")
            folder = out / split / f"{label + 1:03d}.{NAMES[label]}"
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f"digit_{n:04d}.png")
        counts[split], start = end - start, end
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder to write train/, valid/ and test/ into")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    args = parser.parse_args()
    counts = write_sample_data(args.out, args.size)
    print(f"wrote {counts} images under {args.out}")


if __name__ == "__main__":
    main()
