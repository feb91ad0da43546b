"""Images that cost far more memory to decode than their size in bytes (decompression and memory bombs)."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def tiff_with_one_huge_tile(side: int = 32, tile: int = 16384) -> bytes:
    """A side x side greyscale TIFF stored as one deflated tile x tile tile (a few hundred kB)."""
    data = zlib.compress(bytes(tile * tile), 9)
    entries = [  # (tag, type, value): SHORT=3, LONG=4
        (256, 4, side), (257, 4, side), (258, 3, 8), (259, 3, 8), (262, 3, 1), (277, 3, 1),
        (322, 4, tile), (323, 4, tile), (324, 4, 0), (325, 4, len(data)),
    ]
    ifd_size = 2 + 12 * len(entries) + 4
    data_offset = 8 + ifd_size
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        value = data_offset if tag == 324 else value
        packed = struct.pack("<HI", value, 0)[:4] if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, 1) + packed
    return b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + data


def bombs() -> dict[str, bytes]:
    return {
        "png 300000x1": encoded(Image.new("RGB", (300_000, 1), "red"), "PNG"),
        "png 100000x1": encoded(Image.new("RGB", (100_000, 1), "red"), "PNG"),
        "tiff 32x32 with a 16384x16384 tile": tiff_with_one_huge_tile(),
        "rgba png 8000x8000": encoded(Image.new("RGBA", (8000, 8000), (10, 20, 30, 128)), "PNG"),
        "1-bit png 64000000x1": encoded(Image.new("1", (64_000_000, 1)), "PNG"),
        "16-bit png 8000x8000": encoded(Image.new("I;16", (8000, 8000)), "PNG"),
        "palette png 8000x8000": encoded(Image.new("P", (8000, 8000)), "PNG"),
    }
