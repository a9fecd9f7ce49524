"""A1111 "stealth pnginfo": metadata hidden in the least significant bits of the pixels.

Pure, but costly: it decodes the pixels with Pillow (about 10–40 ms for a
1024×1024 PNG), so it runs only when the caller asks (read_container(...,
stealth=True)) and only on images of at most MAX_STEALTH_PIXELS, checked from
the header before anything is decoded.

The scheme (extension sd_webui_stealth_pnginfo, also used by NovelAI): pixels
read column by column (x outer, y inner); either the alpha LSBs (one bit per
pixel) or the R, G and B LSBs in turn (three bits per pixel); a 15-byte
signature, a 32-bit big-endian count of payload bits, the payload MSB first,
gzip-compressed for the *comp signatures.

Entries: ("stealth:alpha" | "stealth:rgb", signature, text) — the payload as
UTF-8 text, or its exact bytes when it is not UTF-8 (or cannot be inflated).
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

from PIL import Image

from node.metadata import png_column
from node.metadata.limits import MAX_TEXT_BYTES, Reading, utf8_or_bytes

MAX_STEALTH_PIXELS = 50_000_000  # below Pillow's own 89.5 MP bomb warning; larger images are not decoded

SIGNATURE_BITS = 15 * 8
HEADER_BITS = SIGNATURE_BITS + 32
ALPHA_SIGNATURES = (b"stealth_pnginfo", b"stealth_pngcomp")
RGB_SIGNATURES = (b"stealth_rgbinfo", b"stealth_rgbcomp")
LSB_TO_ASCII = bytes(ord("0") + (value & 1) for value in range(256))  # a byte's LSB as '0' or '1'

# What Pillow raises on damaged or hostile image data.
PILLOW_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error,
                 Image.DecompressionBombError)


def read_stealth(data: bytes, width: int | None, height: int | None, reading: Reading) -> None:
    """Look for a stealth payload in the alpha LSBs, then the RGB LSBs, of this PNG or WebP."""
    if width is None or height is None:
        reading.problem("stealth: image size unknown; pixels not decoded")
        return
    if width * height > MAX_STEALTH_PIXELS:
        reading.problem(f"stealth: {width}×{height} is more than {MAX_STEALTH_PIXELS} pixels; not decoded")
        return
    if first_column_is_clear(data, height):
        return
    try:
        with Image.open(io.BytesIO(data), formats=["PNG", "WEBP"]) as image:
            if image.width * image.height > MAX_STEALTH_PIXELS:
                reading.problem(f"stealth: decoder sees {image.width}×{image.height}; not decoded")
                return
            image.load()
            planes: list[tuple[str, Plane, tuple[bytes, ...]]] = []
            if "A" in image.getbands() or "transparency" in image.info:
                planes.append(("stealth:alpha", Plane(image, 1), ALPHA_SIGNATURES))
            planes.append(("stealth:rgb", Plane(image, 3), RGB_SIGNATURES))
            for source, plane, signatures in planes:
                if read_plane(source, plane, signatures, reading):
                    return
    except PILLOW_ERRORS as exc:
        reading.problem(f"stealth: pixels cannot be decoded ({type(exc).__name__}: {exc})")


def first_column_is_clear(data: bytes, height: int) -> bool:
    """True if this is a plain PNG whose first column shows no stealth signature, so no pixel needs decoding.

    A payload's signature starts every plane at the top of the first column:
    SIGNATURE_BITS rows of alpha, a third as many of RGB, and only those rows
    are inflated. False means: decode the image and look properly (a
    signature is there, the column is too short to hold one, or the PNG is
    not one png_column reads).
    """
    channels = png_column.channels_of(data)
    if channels is None:
        return False
    rows = SIGNATURE_BITS if channels == 4 else -(-SIGNATURE_BITS // 3)
    column = png_column.first_column(data, min(height, rows))
    if column is None:
        return False
    pixels = column[1]
    rgb = pixels if channels == 3 else b"".join(pixels[at:at + 3] for at in range(0, len(pixels), 4))
    planes = [(rgb, RGB_SIGNATURES)]
    if channels == 4:
        planes.append((pixels[3::4], ALPHA_SIGNATURES))
    for plane, signatures in planes:
        if len(plane) < SIGNATURE_BITS:  # the signature would go on in the next column
            return False
        if bits_to_bytes(plane[:SIGNATURE_BITS].translate(LSB_TO_ASCII)) in signatures:
            return False
    return True


@dataclass(frozen=True, slots=True)
class Plane:
    """The alpha channel (1 band) or the RGB channels (3 bands) of a decoded image."""

    image: Image.Image
    bands: int

    @property
    def capacity(self) -> int:
        return self.image.width * self.image.height * self.bands

    def lsb_bits(self, count: int) -> bytes:
        """The first count LSBs in column-major order as ASCII '0'/'1', converting only the columns needed."""
        image = self.image
        columns = min(image.width, -(-count // (image.height * self.bands)))
        strip = image.crop((0, 0, columns, image.height))  # crop before converting: a header needs one column
        strip = strip.convert("RGBA").getchannel("A") if self.bands == 1 else strip.convert("RGB")
        return strip.transpose(Image.Transpose.TRANSPOSE).tobytes()[:count].translate(LSB_TO_ASCII)


def read_plane(source: str, plane: Plane, signatures: tuple[bytes, ...], reading: Reading) -> bool:
    """Decode one LSB plane's payload if it starts with one of its signatures; True if it did."""
    header = plane.lsb_bits(HEADER_BITS)
    if len(header) < HEADER_BITS:
        return False
    signature = bits_to_bytes(header[:SIGNATURE_BITS])
    if signature not in signatures:
        return False
    name = signature.decode("ascii")
    declared = int(header[SIGNATURE_BITS:HEADER_BITS], 2)
    capacity = plane.capacity - HEADER_BITS
    if declared > capacity or declared // 8 > MAX_TEXT_BYTES:
        reading.problem(f"{source} {name}: payload declares {declared} bits but the image holds {capacity} "
                        f"(limit {MAX_TEXT_BYTES * 8}); skipped")
        return True
    bits = plane.lsb_bits(HEADER_BITS + declared)[HEADER_BITS:]
    payload = bits_to_bytes(bits[: len(bits) - len(bits) % 8])
    if name.endswith("comp"):
        inflated = reading.inflate(f"{source} {name}", payload, gzip=True)
        reading.add(source, name, payload if inflated is None else utf8_or_bytes(inflated))
    else:
        reading.add(source, name, utf8_or_bytes(payload))
    return True


def bits_to_bytes(bits: bytes) -> bytes:
    return int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""
