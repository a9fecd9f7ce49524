"""WebP RIFF chunks walked by hand: canvas size, animation frames, EXIF, XMP and C2PA.

Pure. Never decodes pixels, never reads past a chunk's declared size or the data.

Entries: EXIF tags from the EXIF chunk (with or without an "Exif\\0\\0" prefix)
as ("exif", name, value); ("webp:XMP", "xmp", text); ("webp:C2PA", "jumbf", bytes).
"""

from __future__ import annotations

import struct

from node.metadata.exif import read_exif
from node.metadata.limits import MAX_CHUNKS, Reading, utf8_or_bytes
from node.metadata.raw import Container


def is_webp(data: bytes) -> bool:
    return len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def read_webp(data: bytes, reading: Reading | None = None) -> Container:
    """Walk a WebP (data starts with RIFF....WEBP) into a Container."""
    reading = reading or Reading()
    size: tuple[int, int] | None = None
    canvas: tuple[int, int] | None = None
    frames = 0
    (riff_size,) = struct.unpack_from("<I", data, 4)
    end = min(len(data), 8 + riff_size)
    if 8 + riff_size > len(data):
        reading.problem(f"WebP declares {riff_size + 8} bytes but the file has {len(data)}")
    at = 12
    for count in range(MAX_CHUNKS + 1):
        if at + 8 > end:
            break
        if count == MAX_CHUNKS:
            reading.problem(f"WebP has more than {MAX_CHUNKS} chunks; the rest is not read")
            break
        kind, length = struct.unpack_from("<4sI", data, at)
        name = kind.decode("latin-1")
        if at + 8 + length > end:
            reading.overrun(f"WebP chunk {name!r}", at, length, end - at - 8)
            break
        body = data[at + 8:at + 8 + length]
        at += 8 + length + (length & 1)
        if kind == b"VP8X" and length >= 10:
            canvas = (int.from_bytes(body[4:7], "little") + 1, int.from_bytes(body[7:10], "little") + 1)
        elif kind in (b"VP8 ", b"VP8L") and size is None:
            size = bitstream_size(kind, body)
        elif kind == b"ANMF":
            frames += 1
        elif kind == b"EXIF":
            read_exif(body, reading, "webp:EXIF")
        elif kind == b"XMP ":
            reading.add("webp:XMP", "xmp", utf8_or_bytes(body))
        elif kind == b"C2PA":
            reading.add("webp:C2PA", "jumbf", body)
    width, height = canvas or size or (None, None)
    if width is None:
        reading.problem("WebP without a VP8/VP8L/VP8X chunk giving its size")
    return reading.container("WEBP", width, height, max(frames, 1))


def bitstream_size(kind: bytes, body: bytes) -> tuple[int, int] | None:
    """Width and height from a VP8 key frame header or a VP8L header; None when cut short."""
    if kind == b"VP8 " and len(body) >= 10 and body[3:6] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", body, 6)
        return width & 0x3FFF, height & 0x3FFF
    if kind == b"VP8L" and len(body) >= 5 and body[0] == 0x2F:
        (bits,) = struct.unpack_from("<I", body, 1)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None
