"""Image preprocessing shared by training and serving.

Images travel as uint8 CHW tensors (small to cache, pin and copy to the GPU);
``normalize`` turns a batch into the model's float input on the device.
"""

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
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError
from torchvision.transforms.v2 import functional as F

from .resources import DECODE_BYTES_PER_PIXEL

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_RATIO = 0.875  # 224-pixel crop from a 256-pixel resize, as torchvision's references do

# Pillow raises DecompressionBombError beyond twice its own limit; we check ours first.
Image.MAX_IMAGE_PIXELS = None
# A TIFF tile is decoded whole: a tiny image may declare one huge tile (a bomb the pixel count misses).
MAX_TIFF_TILE_PIXELS = 1024 * 1024
TIFF_TILE_WIDTH, TIFF_TILE_LENGTH = 322, 323
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
    tile_w, tile_h = image.tag_v2.get(TIFF_TILE_WIDTH, 0), image.tag_v2.get(TIFF_TILE_LENGTH, 0)
    if tile_w * tile_h > max(width * height, MAX_TIFF_TILE_PIXELS):
        raise ImageTooLarge(f"TIFF tile of {tile_w}x{tile_h} pixels in a {width}x{height} image")


def _check_bmp(image: ImageFile.ImageFile) -> None:
    if any(tile.codec_name == "bmp_rle" for tile in image.tile):
        raise UnsupportedFormat("BMP with RLE compression is not accepted: Pillow decodes it in Python, "
                                "seconds per megapixel; send it uncompressed or as PNG")


@dataclass(frozen=True)
class Format:
    """An accepted format: the peak memory of its serving decode per pixel (bytes, measured at
    8000x8000 by bench/decode_memory.py, its costliest kind), and the check of what its header
    declares, run before any pixel is decoded."""

    bytes_per_pixel: float
    check: Callable[[ImageFile.ImageFile], None] | None = None


# The formats we decode (Pillow's names). Each one's decoder is C and works in bounded steps. A
# format costlier than resources.DECODE_BYTES_PER_PIXEL gets a proportionally smaller pixel cap,
# so that no accepted image decodes to more than the cap times that. Left out: ICO and ICNS
# (Pillow decodes their embedded images while opening them, before any check), JPEG 2000 and
# AVIF (one long call holding the GIL, about 1 GB at 8000x8000), and everything else Pillow
# reads. MPO, the multi-picture JPEG that cameras write, opens as JPEG.
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
    """What the model expects: saved with the model (model.json), read back by the server, so a
    model keeps the preprocessing it was trained with."""

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


def open_image(source: bytes | Path, max_pixels: int, formats: Sequence[str] = tuple(ACCEPTED_FORMATS)) -> ImageFile.ImageFile:
    """Open an image in one of ``formats`` (a subset of ACCEPTED_FORMATS) and check its header
    only: no pixel is decoded yet.

    Refuses what would cost more memory than its pixel count says: more than ``max_pixels``, or
    what the format's own check in ACCEPTED_FORMATS refuses. Bytes of another format are never
    handed to its decoder: UnsupportedFormat names what they are.
    """
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
                 formats: Sequence[str] = tuple(ACCEPTED_FORMATS)) -> Image.Image:
    """Decode image bytes or a file in one of ``formats`` into an upright RGB image.

    ``min_side`` lets the JPEG decoder scale down by 1/2, 1/4 or 1/8 while keeping
    both sides at least that long; ``max_pixels`` refuses decompression bombs
    before any pixel is decoded.
    """
    with open_image(source, max_pixels, formats) as image:
        try:
            image.draft("RGB", (min_side, min_side))
            ImageOps.exif_transpose(image, in_place=True)
            return _to_rgb(image)
        except Exception as e:
            raise ImageError(f"image data is corrupt or truncated ({type(e).__name__}: {e})") from None


def decode_for_eval(source: bytes, spec: ImageSpec, max_pixels: int,
                    formats: Sequence[str] = tuple(ACCEPTED_FORMATS)) -> torch.Tensor:
    """Image bytes -> the evaluation crop (uint8 CHW), as ``eval_preprocess(decode_image(...))``
    computes it, but touching only the pixels that crop uses.

    After the decode itself, every step allocates only the centre square, reduced by an integer
    factor while it stays at least twice the crop: a 300,000x1 strip costs a few pixels, not a
    resize to 256 px on its short side. Peak memory is the decoded image plus that square.
    """
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
    """The region of ``image`` the centre crop covers (whole rows and columns, symmetric), reduced
    while it stays at least twice the crop; returns it with the crop's side in its pixels."""
    width, height = image.size
    side = _crop_side(width, height, spec)
    left, top = math.floor((width - side) / 2), math.floor((height - side) / 2)
    factor = max(1, int(side // (2 * spec.image_size)))
    return _reduce_in_bands(image, factor, (left, top, width - left, height - top)), side / factor


def _reduce_in_bands(image: Image.Image, factor: int, box: tuple[int, int, int, int]) -> Image.Image:
    """``image.reduce(factor, box)``, one band of rows (a multiple of ``factor``, about
    BAND_PIXELS) at a time, so that what it allocates besides the result is one band: Pillow's
    reduce converts a whole RGBA image to premultiplied alpha first, and modes it cannot reduce
    must be converted. Each output pixel averages one factor x factor block, so bands give the
    same result."""
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
    """The evaluation/serving transform: resize the shorter side to resize_size, center crop
    image_size; uint8 CHW. Done as one resize of the centre square (of ``side`` pixels, by
    default the one that transform keeps) straight to the crop, so only the crop is allocated.

    The pixel work happens in Pillow and the result is a view of its buffer, so no torch
    kernel (and no OpenMP thread team) runs in the calling thread.
    """
    width, height = image.size
    side = side or _crop_side(width, height, spec)
    left, top = (width - side) / 2, (height - side) / 2
    crop = image.resize((spec.image_size,) * 2, Image.Resampling[spec.interpolation.upper()], box=(left, top, left + side, top + side))
    return F.pil_to_tensor(crop)


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
