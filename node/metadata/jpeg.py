"""JPEG marker segments walked up to the first SOS: size, EXIF, XMP (standard and extended), JUMBF, comments.

Pure. Never reads past a segment's declared length or the data, never decodes
pixels, stops at the first scan (metadata lives before it).

Entries: EXIF tags from APP1 "Exif" as ("exif", name, value);
("jpeg:APP1/XMP", "xmp", text) and, reassembled from its parts,
("jpeg:APP1/XMP", "xmp_extended", text); ("jpeg:APP11/JUMBF", "jumbf", bytes)
per box instance, its APP11 segments joined in sequence order (a C2PA store
over 64 KB spans several); ("jpeg:COM", "comment", text).
"""

from __future__ import annotations

import struct

from node.metadata.exif import EXIF_HEADER, read_exif
from node.metadata.limits import MAX_CHUNKS, MAX_TEXT_BYTES, Reading, utf8_or_bytes, utf8_or_latin1
from node.metadata.raw import Container

XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
XMP_EXTENSION_HEADER = b"http://ns.adobe.com/xmp/extension/\x00"
SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})  # TEM, RSTn, SOI: no length field
APP1, APP11, COM, SOS, EOI = 0xE1, 0xEB, 0xFE, 0xDA, 0xD9


def read_jpeg(data: bytes, reading: Reading | None = None) -> Container:
    """Walk a JPEG (data starts with FF D8 FF) into a Container."""
    reading = reading or Reading()
    width = height = None
    parts = Assembly()
    at = 2
    for _ in range(MAX_CHUNKS):
        while at < len(data) and data[at] == 0xFF and at + 1 < len(data) and data[at + 1] == 0xFF:
            at += 1  # fill bytes
        if at + 2 > len(data):
            reading.problem("JPEG ends before its first scan (SOS)")
            break
        if data[at] != 0xFF:
            reading.problem(f"JPEG: no marker at offset {at}; the rest is not read")
            break
        marker = data[at + 1]
        if marker in STANDALONE:
            at += 2
            continue
        if marker == SOS and data.find(b"\xff\xd9", at) == -1:
            reading.problem("JPEG has no end marker (EOI) after its first scan: the image data is cut short")
        if marker in (SOS, EOI):
            break
        if at + 4 > len(data):
            reading.problem(f"JPEG truncated in the marker at offset {at}")
            break
        (length,) = struct.unpack_from(">H", data, at + 2)
        if length < 2 or at + 2 + length > len(data):
            reading.overrun(f"JPEG segment 0x{marker:02X}", at, length, len(data) - at - 2)
            break
        body = data[at + 4:at + 2 + length]
        at += 2 + length
        if marker in SOF_MARKERS and width is None and len(body) >= 5:
            height, width = struct.unpack_from(">HH", body, 1)
        else:
            read_segment(marker, body, reading, parts)
    else:
        reading.problem(f"JPEG has more than {MAX_CHUNKS} segments; the rest is not read")
    parts.finish(reading)
    if width is None:
        reading.problem("JPEG without a frame header (SOF) before its first scan")
    return reading.container("JPEG", width, height)


def read_segment(marker: int, body: bytes, reading: Reading, parts: Assembly) -> None:
    if marker == APP1 and body.startswith(EXIF_HEADER):
        read_exif(body, reading, "jpeg:APP1/Exif")
    elif marker == APP1 and body.startswith(XMP_HEADER):
        reading.add("jpeg:APP1/XMP", "xmp", utf8_or_bytes(body[len(XMP_HEADER):]))
    elif marker == APP1 and body.startswith(XMP_EXTENSION_HEADER):
        parts.extended_xmp(body[len(XMP_EXTENSION_HEADER):], reading)
    elif marker == APP11 and body.startswith(b"JP") and len(body) >= 16:
        parts.jumbf(body, reading)
    elif marker == COM:
        reading.add("jpeg:COM", "comment", utf8_or_latin1(body))


class Assembly:
    """Metadata split over several segments, gathered during the walk and joined at its end."""

    def __init__(self) -> None:
        self.xmp: dict[bytes, tuple[int, dict[int, bytes]]] = {}  # GUID -> (full length, offset -> part)
        self.boxes: dict[int, dict[int, bytes]] = {}  # box instance -> sequence number -> segment data

    def extended_xmp(self, body: bytes, reading: Reading) -> None:
        if len(body) < 40:
            reading.problem("JPEG extended XMP segment is cut short; skipped")
            return
        guid = body[:32]
        full, offset = struct.unpack_from(">II", body, 32)
        if full > MAX_TEXT_BYTES:
            reading.problem(f"JPEG extended XMP declares {full} bytes, more than {MAX_TEXT_BYTES}; skipped")
            return
        self.xmp.setdefault(guid, (full, {}))[1][offset] = body[40:]

    def jumbf(self, body: bytes, reading: Reading) -> None:
        instance, sequence = struct.unpack_from(">HI", body, 2)
        segments = self.boxes.setdefault(instance, {})
        if sequence in segments:
            reading.problem(f"JPEG APP11 box {instance} repeats packet {sequence}; the later one is skipped")
            return
        segments[sequence] = body[8:]

    def finish(self, reading: Reading) -> None:
        for full, parts in self.xmp.values():
            joined = b"".join(parts[offset] for offset in sorted(parts))
            if len(joined) != full:
                reading.problem(f"JPEG extended XMP has {len(joined)} of its {full} bytes")
            reading.add("jpeg:APP1/XMP", "xmp_extended", utf8_or_bytes(joined[:full]))
        for instance, segments in self.boxes.items():
            order = sorted(segments)
            first = segments[order[0]]
            joined = first + b"".join(strip_box_header(segments[n]) for n in order[1:])
            if order != list(range(order[0], order[0] + len(order))):
                reading.problem(f"JPEG APP11 box {instance} has gaps in its packet sequence {order[:8]}")
            reading.add("jpeg:APP11/JUMBF", "jumbf", joined)


def strip_box_header(segment: bytes) -> bytes:
    """A continuation packet repeats the box header (LBox, TBox, and XLBox when LBox is 1); drop it."""
    (lbox,) = struct.unpack_from(">I", segment)
    return segment[16 if lbox == 1 else 8:]
