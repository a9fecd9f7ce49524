"""The one entry to the container readers: sniff the magic bytes, walk the container, validate C2PA.

Pure: bytes in, a Container out. read_container never raises on any input
bytes: an empty, unknown, truncated or hostile file gives a Container whose
problems say in words what was wrong (format None when the magic bytes name
no format we read), so a batch goes on and the caller can show the reason.
The extension of a file name is never consulted.
"""

from __future__ import annotations

from node.metadata.c2pa import read_manifest_store
from node.metadata.jpeg import read_jpeg
from node.metadata.limits import MAX_FILE_BYTES, Reading
from node.metadata.png import SIGNATURE as PNG_SIGNATURE
from node.metadata.png import read_png
from node.metadata.raw import Container
from node.metadata.stealth import read_stealth
from node.metadata.webp import is_webp, read_webp

JUMBF_SOURCES = ("png:caBX", "jpeg:APP11/JUMBF", "webp:C2PA")
REMOTE_MANIFEST = "dcterms:provenance"  # the XMP property that points at a remote C2PA store


def sniff(data: bytes) -> str | None:
    """The container format named by the first bytes: "PNG", "JPEG", "WEBP", or None."""
    if data.startswith(PNG_SIGNATURE):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if is_webp(data):
        return "WEBP"
    return None


def read_container(data: bytes, *, stealth: bool = False) -> Container:
    """Every metadata entry of an image file, in file order, with its container facts.

    stealth=True also decodes the pixels of a PNG or WebP to look for A1111
    stealth pnginfo (costly: see node.metadata.stealth). C2PA stores are
    validated offline whenever one is embedded.
    """
    format = sniff(data)
    if not data:
        return Container(format=None, problems=("empty file (0 bytes)",))
    if format is None:
        return Container(format=None, problems=(f"not a PNG, JPEG or WebP file (starts {data[:8].hex()})",))
    if len(data) > MAX_FILE_BYTES:
        return Container(format=format, problems=(f"{len(data)} bytes is more than the {MAX_FILE_BYTES} "
                                                  "read for metadata; not read",))
    reading = Reading()
    walked = {"PNG": read_png, "JPEG": read_jpeg, "WEBP": read_webp}[format](data, reading)
    if has_c2pa(walked):
        read_manifest_store(data, format, reading)
    if stealth and format in ("PNG", "WEBP"):
        read_stealth(data, walked.width, walked.height, reading)
    return reading.container(format, walked.width, walked.height, walked.frames)


def has_c2pa(walked: Container) -> bool:
    """An embedded store (JUMBF bytes), or XMP naming a remote one (the SDK then reports its URL, offline)."""
    return any(entry.source in JUMBF_SOURCES or (
        "xmp" in entry.key.lower() and isinstance(entry.value, str) and REMOTE_MANIFEST in entry.value)
        for entry in walked.entries)
