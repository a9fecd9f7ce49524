"""The first pixel column of a plain PNG, decoded without decoding the image.

Pure. A stealth pnginfo header sits in the first column (see
node.metadata.stealth), and in a PNG the first pixel of a row depends only on
its filter byte and the first pixel of the row above: with no left neighbour,
Sub adds 0, Up and Paeth add the pixel above, Average adds half of it. So the
rows that hold the header need inflating, but not unfiltering whole, which
makes "no stealth payload here" several times cheaper to establish than a
full decode. Only 8-bit RGB and RGBA, not interlaced, take this path; for
anything else, or anything odd, the answer is None and the caller decodes the
image with Pillow.
"""

from __future__ import annotations

import struct
import zlib

from node.metadata.png import SIGNATURE

CHANNELS = {2: 3, 6: 4}  # PNG colour type → bytes per pixel at 8 bits: RGB, RGBA
MAX_CHUNKS = 10_000  # before the pixels; past it the fast path gives up and Pillow decides


def channels_of(data: bytes) -> int | None:
    """3 (RGB) or 4 (RGBA) for a PNG this module reads (8-bit, not interlaced); None for any other."""
    if not data.startswith(SIGNATURE) or len(data) < 33 or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour, _, _, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    channels = CHANNELS.get(colour)
    if channels is None or depth != 8 or interlace != 0 or width == 0 or height == 0:
        return None
    return channels


def first_column(data: bytes, rows: int) -> tuple[int, bytes] | None:
    """(channels, the first pixel of each of the first rows, channels bytes each), or None if not simple."""
    channels = channels_of(data)
    if channels is None:
        return None
    width, height = struct.unpack_from(">II", data, 16)
    if not 0 < rows <= height:
        return None
    stride = 1 + width * channels
    pixels = _inflate_idat(data, rows * stride)
    if pixels is None:
        return None
    out = bytearray()
    above = bytes(channels)
    for row in range(rows):
        start = row * stride
        kind = pixels[start]
        raw = pixels[start + 1:start + 1 + channels]
        if kind in (0, 1):
            pixel = raw
        elif kind in (2, 4):
            pixel = bytes((value + up) & 0xFF for value, up in zip(raw, above, strict=True))
        elif kind == 3:
            pixel = bytes((value + (up >> 1)) & 0xFF for value, up in zip(raw, above, strict=True))
        else:
            return None  # no such filter: let the decoder say what is wrong
        out += pixel
        above = pixel
    return channels, bytes(out)


def _inflate_idat(data: bytes, wanted: int) -> bytes | None:
    """The first `wanted` bytes of the image data stream (inflated IDAT chunks), or None."""
    inflater = zlib.decompressobj()
    pieces: list[bytes] = []
    have = 0
    at = len(SIGNATURE)
    for _ in range(MAX_CHUNKS):
        if at + 12 > len(data):
            return None
        length, kind = struct.unpack_from(">I4s", data, at)
        end = at + 8 + length
        if end + 4 > len(data) or kind in (b"IEND", b"tRNS"):  # tRNS: an alpha of its own, left to Pillow
            return None
        if kind == b"IDAT":
            try:
                piece = inflater.decompress(memoryview(data)[at + 8:end], wanted - have)
            except zlib.error:
                return None
            pieces.append(piece)
            have += len(piece)
            if have >= wanted:  # (never more: max_length holds the rest back)
                return b"".join(pieces)
        at = end + 4
    return None
