"""Gallery thumbnails: made once with Pillow, kept as write-once files named by the image's CID.

I/O edge. The CID fixes the image bytes, so a thumbnail never goes stale:
it is written to a temp file, fsynced and renamed into place, and served
from then on. An image Pillow cannot turn into a thumbnail (damaged, over
the pixel limit, a decompression bomb) gets a placeholder, never an error,
and a marker file so it is not decoded again. Never decodes more than
MAX_PIXELS pixels, nor more than MAX_AT_ONCE images at a time.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from node.cid import Cid
from node.errors import NodeError

BOX = 480  # longest side in pixels: a grid cell is ~240 CSS pixels, twice that for dense screens
QUALITY = 80
MAX_PIXELS = 50_000_000  # ~200 MB decoded as RGBA; larger images get the placeholder
MAX_AT_ONCE = 2  # decodes in flight: bounds memory whatever the number of requests
FORMATS = ("PNG", "JPEG", "WEBP")  # the only decoders Pillow may use: the formats works are made of
MEDIA_TYPE = "image/webp"
PLACEHOLDER_TYPE = "image/svg+xml"
PLACEHOLDER = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="480" height="480" viewBox="0 0 480 480">'
    b'<rect width="480" height="480" fill="#e4e2dd"/>'
    b'<path d="M150 320 L215 230 L260 285 L295 245 L340 320 Z" fill="#9a958c"/>'
    b'<circle cx="300" cy="185" r="22" fill="#9a958c"/>'
    b'<text x="240" y="380" font-family="sans-serif" font-size="26" text-anchor="middle" fill="#4d4a45">'
    b"no preview</text></svg>"
)
# What Pillow raises on damaged or hostile input (its bomb warning too, when warnings are errors).
PILLOW_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error, zlib.error,
                 Image.DecompressionBombError, Image.DecompressionBombWarning)
log = logging.getLogger("artkeep.thumbnails")


@dataclass(frozen=True, slots=True)
class Thumbnail:
    data: bytes
    media_type: str
    lasting: bool  # the same answer forever (a thumbnail, or a placeholder for bytes that cannot decode)


class NoPreview(Exception):
    """Pillow cannot make a thumbnail of these bytes (internal: callers get the placeholder)."""


def render(data: bytes, box: int = BOX) -> bytes:
    """A WebP thumbnail no larger than box×box; NoPreview if the image cannot be decoded within limits."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            if image.width * image.height > MAX_PIXELS:
                raise NoPreview(f"{image.width}×{image.height} pixels is over the {MAX_PIXELS}-pixel limit")
            image.draft("RGB", (box, box))  # JPEG decodes straight at a fraction of its size
            frame = ImageOps.exif_transpose(image)
            frame.thumbnail((box, box), Image.Resampling.LANCZOS, reducing_gap=3.0)
            alpha = "A" in frame.getbands() or "transparency" in frame.info
            if frame.mode not in ("RGB", "RGBA"):
                frame = frame.convert("RGBA" if alpha else "RGB")
            out = io.BytesIO()
            frame.save(out, "WEBP", quality=QUALITY, method=4)
            return out.getvalue()
    except PILLOW_ERRORS as exc:
        raise NoPreview(f"{type(exc).__name__}: {exc}") from None


class Thumbnails:
    """Thumbnail files under folder/<two chars>/<image CID>.webp (a cache: deleting it loses nothing)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._slots = threading.BoundedSemaphore(MAX_AT_ONCE)

    def path_of(self, image: Cid) -> Path:
        name = str(image.to_v1())
        return self.folder / name[-3:-1] / f"{name}.webp"

    def get(self, image: Cid, read_image: Callable[[], bytes]) -> Thumbnail:
        """The thumbnail of image, made from read_image() the first time; the placeholder if it cannot be."""
        path = self.path_of(image)
        try:
            return Thumbnail(path.read_bytes(), MEDIA_TYPE, True)
        except FileNotFoundError:
            pass
        broken = path.with_suffix(".nopreview")
        if broken.exists():
            return Thumbnail(PLACEHOLDER, PLACEHOLDER_TYPE, True)
        with self._slots:
            try:
                data = read_image()
            except NodeError as exc:  # a block missing or rotten now may be repaired later: not remembered
                log.warning("no thumbnail for %s: %s", image, exc.message)
                return Thumbnail(PLACEHOLDER, PLACEHOLDER_TYPE, False)
            try:
                thumbnail = render(data)
            except NoPreview as exc:
                log.info("no thumbnail for %s: %s", image, exc)
                _write_once(broken, str(exc).encode())
                return Thumbnail(PLACEHOLDER, PLACEHOLDER_TYPE, True)
        _write_once(path, thumbnail)
        return Thumbnail(thumbnail, MEDIA_TYPE, True)


def _write_once(path: Path, data: bytes) -> None:
    """Temp file in the same folder, fsync, rename: a reader sees the whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{path.name}")
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except OSError as exc:  # a full or read-only cache only costs speed: the thumbnail is still served
        temp.unlink(missing_ok=True)
        log.warning("cannot cache %s: %s", path, exc.strerror)
