"""Image decoding and preprocessing shared by training and serving: bytes -> uint8 CHW -> the model's input."""

from __future__ import annotations

import functools
import io
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import ExifTags, Image, ImageFile, ImageOps, TiffImagePlugin, UnidentifiedImageError
from torchvision.transforms.v2 import functional as F

from .resources import DECODE_BYTES_PER_PIXEL

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_RATIO = 0.875  # 224-pixel crop from a 256-pixel resize, as torchvision's references do

# Pillow raises DecompressionBombError beyond twice its own limit; we check ours first.
Image.MAX_IMAGE_PIXELS = None
# A TIFF tile is decoded whole: a tiny image may declare one huge tile (a bomb the pixel count misses).
MAX_TIFF_TILE_PIXELS = 1024 * 1024
# Image.reduce works on these; "1", "P", "PA" and "I;16*" are converted first (see _reducible).
BAND_PIXELS = 1024 * 1024  # source pixels reduced at a time (_reduce_in_bands)
REDUCIBLE_MODES = frozenset({"L", "LA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "F"})


class ImageError(ValueError):
    """The bytes are not an image we can use."""


class ImageTooLarge(ImageError):
    """The image declares more pixels than allowed."""


class UnsupportedFormat(ImageError):
    """The image is in a format we do not decode."""


def _check_tiff(image: ImageFile.ImageFile) -> None:
    width, height = image.size
    tile_w, tile_h = image.tag_v2.get(TiffImagePlugin.TILEWIDTH, 0), image.tag_v2.get(TiffImagePlugin.TILELENGTH, 0)
    if tile_w * tile_h > max(width * height, MAX_TIFF_TILE_PIXELS):
        raise ImageTooLarge(f"TIFF tile of {tile_w}x{tile_h} pixels in a {width}x{height} image")


def _check_bmp(image: ImageFile.ImageFile) -> None:
    if any(tile.codec_name == "bmp_rle" for tile in image.tile):
        raise UnsupportedFormat("BMP with RLE compression is not accepted: Pillow decodes it in Python, "
                                "seconds per megapixel; send it uncompressed or as PNG")


@dataclass(frozen=True)
class Format:
    """An accepted format: its decode's peak bytes per pixel (bench/decode_memory.py) and its header's check."""

    bytes_per_pixel: float
    check: Callable[[ImageFile.ImageFile], None] | None = None


# The formats we decode, by Pillow's names (why these: docs/design.md); MPO opens as JPEG.
ACCEPTED_FORMATS: dict[str, Format] = {
    "JPEG": Format(6),  # progressive: libjpeg holds every coefficient; a baseline JPEG decodes scaled down
    "PNG": Format(4),
    "WEBP": Format(16),  # libwebp's canvas and Pillow's copies, all RGBA
    "GIF": Format(1.2),
    "BMP": Format(4, _check_bmp),
    "TIFF": Format(4, _check_tiff),
}


@dataclass(frozen=True)
class ImageSpec:
    """The preprocessing a model was trained with, saved in its model.json."""

    image_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize_size: int = 0  # the shorter side before the center crop; 0: image_size / CROP_RATIO
    interpolation: str = "bilinear"  # of that resize: torchvision's InterpolationMode value

    def __post_init__(self) -> None:
        if not self.resize_size:
            object.__setattr__(self, "resize_size", round(self.image_size / CROP_RATIO))
        if self.resize_size < self.image_size:
            raise ValueError(f"resize_size {self.resize_size} is below image_size {self.image_size}: "
                             "the center crop would not fit")
        if self.interpolation.upper() not in Image.Resampling.__members__:
            raise ValueError(f"interpolation {self.interpolation!r} is not one of Pillow's resampling filters")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        array = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        peak = array.max(initial=0)
        if image.mode == "F" and peak <= 1.0:
            array = array * 255.0  # float images hold 0..1
        elif peak > 255:
            array = array / 257.0  # 16-bit
        image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _format_of(prefix: bytes) -> str | None:
    """The format whose signature Pillow recognises in a file's first bytes, without opening it."""
    Image.init()
    for name, (_, accept) in Image.OPEN.items():
        try:
            if accept and accept(prefix) is True:
                return name
        except (IndexError, struct.error):  # a prefix shorter than the signature
            continue
    return None


def open_image(source: bytes | Path, max_pixels: int, formats: Sequence[str] | None = None) -> ImageFile.ImageFile:
    """Open an image in one of ``formats`` (None: all accepted), check its header; no pixel is decoded yet."""
    formats = formats or tuple(ACCEPTED_FORMATS)
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source,
                           formats=[f for f in formats if f in ACCEPTED_FORMATS])
    except UnidentifiedImageError:
        raise _unaccepted(source, formats) from None
    except Exception as e:
        raise ImageError(f"not a readable image ({type(e).__name__}: {e})") from None
    try:
        _check_header(image, max_pixels)
    except ImageError:
        image.close()
        raise
    return image


def _unaccepted(source: bytes | Path, formats: Sequence[str]) -> ImageError:
    with io.BytesIO(source) if isinstance(source, bytes) else source.open("rb") as stream:
        found = _format_of(stream.read(16))
    if found is None:
        return ImageError(f"not a readable image: it has no signature of {', '.join(formats)}")
    if found in formats:  # the right signature, then a header its decoder could not read
        return ImageError(f"not a readable image: a {found} signature, then a header that is not valid {found}")
    return UnsupportedFormat(f"the image has the signature of {found}, a format not accepted here; "
                             f"send one of {', '.join(formats)}")


def _check_header(image: ImageFile.ImageFile, max_pixels: int) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"image has no pixels ({width}x{height})")
    name = "JPEG" if image.format == "MPO" else str(image.format)
    accepted = ACCEPTED_FORMATS[name]
    limit = min(max_pixels, int(max_pixels * DECODE_BYTES_PER_PIXEL / accepted.bytes_per_pixel))
    if width * height > limit:
        raise ImageTooLarge(f"image is {width}x{height} = {width * height} pixels; the limit for {name} is {limit}")
    if accepted.check:
        accepted.check(image)


def decode_image(source: bytes | Path, min_side: int, max_pixels: int,
                 formats: Sequence[str] | None = None) -> Image.Image:
    """Image bytes or a file -> an upright RGB image, JPEG decoded scaled down while both sides stay >= ``min_side``."""
    with open_image(source, max_pixels, formats) as image:
        try:
            image.draft("RGB", (min_side, min_side))
            ImageOps.exif_transpose(image, in_place=True)
            return _to_rgb(image)
        except Exception as e:
            raise ImageError(f"image data is corrupt or truncated ({type(e).__name__}: {e})") from None


def decode_for_eval(source: bytes, spec: ImageSpec, max_pixels: int,
                    formats: Sequence[str] | None = None) -> torch.Tensor:
    """``eval_preprocess(decode_image(...))``, allocating only the centre square after the decode (docs/serving.md)."""
    with open_image(source, max_pixels, formats) as image:
        try:
            image.draft("RGB", (spec.resize_size, spec.resize_size))
            image.load()
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
            square, side = _center_square(image, spec)
            square = _to_rgb(square)
            # the centre square is the same under every orientation: turn only it, with Pillow's table
            square.getexif()[ExifTags.Base.Orientation] = orientation
            ImageOps.exif_transpose(square, in_place=True)
        except Exception as e:
            raise ImageError(f"image data is corrupt or truncated ({type(e).__name__}: {e})") from None
    return eval_preprocess(square, spec, side)


def _reducible(image: Image.Image) -> Image.Image:
    if image.mode in REDUCIBLE_MODES:
        return image
    if image.mode == "1":
        return image.convert("L")
    if image.mode.startswith("I;16"):
        return image.convert("I")
    if image.mode == "PA" or (image.mode == "P" and "transparency" in image.info):
        return image.convert("RGBA")
    return image.convert("RGB")


def _center_square(image: Image.Image, spec: ImageSpec) -> tuple[Image.Image, float]:
    """The region the centre crop covers, reduced while it stays twice the crop, and the crop's side in it."""
    width, height = image.size
    side = _crop_side(width, height, spec)
    left, top = math.floor((width - side) / 2), math.floor((height - side) / 2)
    factor = max(1, int(side // (2 * spec.image_size)))
    return _reduce_in_bands(image, factor, (left, top, width - left, height - top)), side / factor


def _reduce_in_bands(image: Image.Image, factor: int, box: tuple[int, int, int, int]) -> Image.Image:
    """``image.reduce(factor, box)``, converting and reducing one band of about BAND_PIXELS rows at a time."""
    left, top, right, bottom = box
    rows = factor * max(1, BAND_PIXELS // ((right - left) * factor))
    bands = [_reducible(image.crop((left, y, right, min(y + rows, bottom)))).reduce(factor)
             for y in range(top, bottom, rows)]
    reduced = Image.new(bands[0].mode, (bands[0].width, sum(band.height for band in bands)))
    for i, band in enumerate(bands):
        reduced.paste(band, (0, i * (rows // factor)))
    return reduced


def _crop_side(width: int, height: int, spec: ImageSpec) -> float:
    """The side, in source pixels, of the square that resizing to resize_size and cropping keeps."""
    return min(width, height) * spec.image_size / spec.resize_size


def resize_shorter_side(image: Image.Image, size: int) -> torch.Tensor:
    """Resize so the shorter side is ``size``; returns uint8 CHW."""
    return F.pil_to_tensor(F.resize(image, size, antialias=True))


def eval_preprocess(image: Image.Image, spec: ImageSpec, side: float | None = None) -> torch.Tensor:
    """Resize the shorter side to resize_size and centre-crop image_size (uint8 CHW), as one resize in Pillow."""
    width, height = image.size
    side = side or _crop_side(width, height, spec)
    left, top = (width - side) / 2, (height - side) / 2
    box = (left, top, left + side, top + side)
    return F.pil_to_tensor(image.resize((spec.image_size,) * 2, Image.Resampling[spec.interpolation.upper()], box=box))


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
    """Once per device; ordinary tensors even when first asked for under inference mode, so training can use them."""
    with torch.inference_mode(False):
        return (torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255,
                torch.tensor(std, device=device).view(1, 3, 1, 1) * 255)
