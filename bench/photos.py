"""A benchmark dataset shaped like the dog photos: 500x375 colour JPEGs of about 100 KB.

Made offline from scikit-learn's digits (upscaled, tinted, noisy), so that decoding costs what a
real photo costs; what the pictures show does not matter for speed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def write_photo_dataset(out: Path, images: int, size: tuple[int, int] = (500, 375), seed: int = 0) -> Path:
    """Write ``images`` JPEGs into out/<class>/ (10 classes); reuses a complete earlier run."""
    marker = out / f".done-{images}"
    if marker.exists():
        return out
    digits = load_digits()
    rng = np.random.default_rng(seed)
    for n in range(images):
        label = int(digits.target[n % len(digits.target)])
        gray = Image.fromarray((digits.images[n % len(digits.images)] * 15).astype(np.uint8)).resize(size, Image.BICUBIC)
        tint = rng.uniform(0.4, 1.0, 3)
        pixels = np.asarray(gray, dtype=np.float32)[..., None] * tint + rng.normal(40, 20, (size[1], size[0], 3))
        folder = out / f"{label + 1:03d}.digit_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{n:05d}.jpg", quality=90)
    marker.touch()
    return out
