"""Image preprocessing shared by training and serving.

Images travel as uint8 CHW tensors (small to cache, pin and copy to the GPU);
``normalize`` turns a batch into the model's float input on the device.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_RATIO = 0.875  # 224-pixel crop from a 256-pixel resize, as torchvision's references do

# Pillow raises DecompressionBombError beyond twice its own limit; we check ours first.
Image.MAX_IMAGE_PIXELS = None


class ImageError(ValueError):
    """The bytes are not an image we can use."""


class ImageTooLarge(ImageError):
    """The image declares more pixels than allowed."""


@dataclass(frozen=True)
class ImageSpec:
    """What the model expects: saved with the model, read by the server."""

    image_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def resize_size(self) -> int:
        return round(self.image_size / CROP_RATIO)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        array = np.asarray(image, dtype=np.float32)
        if image.mode != "F":
            array = array / 257.0 if array.max(initial=0) > 255 else array
        image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode_image(source: bytes | Path, min_side: int, max_pixels: int) -> Image.Image:
    """Decode JPEG/PNG/... bytes or a file into an upright RGB image.

    ``min_side`` lets the JPEG decoder scale down by 1/2, 1/4 or 1/8 while keeping
    both sides at least that long; ``max_pixels`` refuses decompression bombs
    before any pixel is decoded.
    """
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except Exception as e:
        raise ImageError(f"not a readable image ({type(e).__name__}: {e})") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLarge(f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
    try:
        image.draft("RGB", (min_side, min_side))
        image = ImageOps.exif_transpose(image)
        image.load()
        return _to_rgb(image)
    except Exception as e:
        raise ImageError(f"image data is corrupt or truncated ({type(e).__name__}: {e})") from None


def resize_shorter_side(image: Image.Image, size: int) -> torch.Tensor:
    """Resize so the shorter side is ``size``; returns uint8 CHW."""
    return F.pil_to_tensor(F.resize(image, size, antialias=True))


def eval_preprocess(image: Image.Image, spec: ImageSpec) -> torch.Tensor:
    """The evaluation/serving transform: resize, center crop; uint8 CHW.

    The pixel work happens in Pillow and the result is a view of its buffer, so no torch
    kernel (and no OpenMP thread team) runs in the calling thread.
    """
    resized = F.resize(image, spec.resize_size, antialias=True)
    return F.pil_to_tensor(F.center_crop(resized, spec.image_size))


def normalize(
    batch: torch.Tensor,
    spec: ImageSpec,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 NCHW batch -> normalized float tensor on ``device`` in channels_last layout."""
    batch = batch.to(device, non_blocking=True).to(memory_format=torch.channels_last)
    mean, std = _scaled_mean_std(spec.mean, spec.std, device)
    return ((batch.float() - mean) / std).to(dtype)


@functools.lru_cache(maxsize=8)
def _scaled_mean_std(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Built once per device, not copied to it on every batch; ordinary tensors even when first
    asked for under inference mode, so training can use them too."""
    with torch.inference_mode(False):
        return (torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255,
                torch.tensor(std, device=device).view(1, 3, 1, 1) * 255)
