"""Images that cost far more memory or time to decode than their size in bytes, and the costliest
image of each accepted format at 8000x8000 (what bench/decode_memory.py measures).

Each is built on first use and kept for the process: the JPEG 2000 and AVIF bombs take seconds
to encode.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Callable

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


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def transparent_png(side: int, depth: int = 8, rows_per_block: int = 100) -> bytes:
    """A valid side x side RGBA PNG (``depth`` bits a sample) of transparent black, about
    side^2 x 4 x depth / 8000 bytes, built
    without holding its pixels: one block of rows is compressed once and its output repeated
    (a full flush resets the compressor, so every block compresses to the same bytes)."""
    block = bytes((1 + 4 * side * depth // 8) * rows_per_block)
    compressor = zlib.compressobj(9)
    header = compressor.compress(b"") + compressor.flush(zlib.Z_NO_FLUSH)
    first = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    blocks, checksum = side // rows_per_block, 1
    for _ in range(blocks):
        checksum = zlib.adler32(block, checksum)
    tail = compressor.flush()[:-4] + struct.pack(">I", checksum)  # Z_FINISH's end block, our checksum
    stream = header + first + again * (blocks - 1) + tail
    ihdr = struct.pack(">IIBBBBB", side, blocks * rows_per_block, depth, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", stream) + _chunk(b"IEND", b"")


def ico_holding(png: bytes) -> bytes:
    """An ICO whose directory says 16x16 and whose one entry is ``png`` (Pillow decodes it while opening)."""
    return struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(png), 22) + png


def icns_holding(png: bytes) -> bytes:
    """An ICNS whose one 1024x1024 ("ic10") entry is ``png``."""
    return b"icns" + struct.pack(">I", 16 + len(png)) + b"ic10" + struct.pack(">I", 8 + len(png)) + png


def rle4_bmp(side: int) -> bytes:
    """A side x side 4-bit BMP in RLE4, runs of 255 pixels (500 kB at 8000x8000): Pillow decodes
    it in Python, pixel by pixel."""
    row = b"\xff\x12" * (side // 255) + bytes([side % 255, 0x12]) * bool(side % 255) + b"\0\0"
    data = row * side + b"\0\1"
    palette = b"".join(bytes([17 * i, 17 * i, 17 * i, 0]) for i in range(16))
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 4, 2, len(data), 2835, 2835, 16, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset) + info + palette + data


RGBA = (10, 20, 30, 128)
BOMBS: dict[str, Callable[[], bytes]] = {
    "png 300000x1": lambda: encoded(Image.new("RGB", (300_000, 1), "red"), "PNG"),
    "png 100000x1": lambda: encoded(Image.new("RGB", (100_000, 1), "red"), "PNG"),
    "tiff 32x32 with a 16384x16384 tile": tiff_with_one_huge_tile,
    "rgba png 8000x8000": lambda: encoded(Image.new("RGBA", (8000, 8000), RGBA), "PNG"),
    "1-bit png 64000000x1": lambda: encoded(Image.new("1", (64_000_000, 1)), "PNG"),
    "16-bit png 8000x8000": lambda: encoded(Image.new("I;16", (8000, 8000)), "PNG"),
    "palette png 8000x8000": lambda: encoded(Image.new("P", (8000, 8000)), "PNG"),
    "ico 16x16 holding a 30000x30000 rgba png": lambda: ico_holding(transparent_png(30000)),
    "icns holding a 30000x30000 rgba png": lambda: icns_holding(transparent_png(30000)),
    "jpeg 2000 rgba 8000x8000": lambda: encoded(Image.new("RGBA", (8000, 8000), RGBA), "JPEG2000"),
    "avif rgba 8000x8000": lambda: encoded(Image.new("RGBA", (8000, 8000), RGBA), "AVIF", speed=10),
    "rle4 bmp 8000x8000": lambda: rle4_bmp(8000),
}


def _noise(mode: str, side: int) -> Image.Image:
    """Incompressible-ish content, so that no decoder takes a shortcut (a 512-pixel noise tile, repeated)."""
    tile = Image.frombytes(mode, (512, 512), bytes(range(256)) * (512 * 512 * len(mode) // 256))
    image = Image.new(mode, (side, side))
    for x in range(0, side, 512):
        for y in range(0, side, 512):
            image.paste(tile, (x, y))
    return image


# The costliest image of each accepted format at 8000x8000 (the most bytes per pixel it decodes to),
# and WEBP at its smaller cap.
LARGEST: dict[str, Callable[[], bytes]] = {
    "jpeg rgb 4:4:4 progressive": lambda: encoded(_noise("RGB", 8000), "JPEG", subsampling=0, progressive=True),
    "jpeg cmyk": lambda: encoded(_noise("CMYK", 8000), "JPEG"),
    "png rgba": BOMBS["rgba png 8000x8000"],
    "png rgba 16-bit": lambda: transparent_png(8000, depth=16),
    "png 16-bit grey": BOMBS["16-bit png 8000x8000"],
    "webp rgba lossless": lambda: encoded(Image.new("RGBA", (8000, 8000), RGBA), "WEBP", lossless=True),
    "webp rgba lossless 4800x4800": lambda: encoded(Image.new("RGBA", (4800, 4800), RGBA), "WEBP", lossless=True),
    "gif with transparency": lambda: encoded(Image.new("P", (8000, 8000)), "GIF", transparency=0),
    "bmp rgba": lambda: encoded(Image.new("RGBA", (8000, 8000), RGBA), "BMP"),
    "tiff rgba deflate": lambda: encoded(Image.new("RGBA", (8000, 8000), RGBA), "TIFF", compression="tiff_adobe_deflate"),
    "tiff float": lambda: encoded(Image.new("F", (8000, 8000), 0.5), "TIFF", compression="tiff_adobe_deflate"),
}


@functools.cache
def bomb(name: str) -> bytes:
    return (BOMBS.get(name) or LARGEST[name])()


def bombs() -> dict[str, bytes]:
    return {name: bomb(name) for name in BOMBS}


def largest() -> dict[str, bytes]:
    return {name: bomb(name) for name in LARGEST}
