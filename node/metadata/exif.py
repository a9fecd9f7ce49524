"""EXIF (a TIFF structure) read into `exif` entries: every tag of IFD0 and its Exif, GPS and Interop sub-IFDs.

Pure, with its own small IFD walker so that every offset is checked against the
blob and no tag is dropped or mangled on the way (Pillow decodes UserComment
as one byte order and ASCII as Latin-1). Never follows an offset twice, never
reads past the blob; damage becomes a problem and the walk goes on.

Values: ASCII fields as text (UTF-8 when valid, else Latin-1; leading and
trailing NULs stripped, as NovelAI and GIMP write them); UserComment decoded by
its 8-byte charset prefix, UTF-16 in whichever byte order the text shows;
Windows XP* tags as UTF-16LE; other UNDEFINED values as text when they are
printable UTF-8, else bytes; numbers as decimal text separated by spaces.
"""

from __future__ import annotations

import struct

from PIL.ExifTags import GPSTAGS, TAGS

from node.metadata.limits import Reading, utf8_or_bytes, utf8_or_latin1

MAX_IFD_ENTRIES = 1024  # tags in one IFD; real files have < 100
MAX_IFDS = 8  # IFDs visited per blob (IFD0, Exif, GPS, Interop, with room for odd writers)
MAX_NUMBERS = 256  # numeric values rendered per tag; the rest are summarised

SOURCE = "exif"
EXIF_IFD, GPS_IFD, INTEROP_IFD = 0x8769, 0x8825, 0xA005
USER_COMMENT = 0x9286
XP_TAGS = frozenset({0x9C9B, 0x9C9C, 0x9C9D, 0x9C9E, 0x9C9F})

# TIFF field type -> (size of one value, struct code or "" for byte strings)
TYPES: dict[int, tuple[int, str]] = {
    1: (1, "B"), 2: (1, ""), 3: (2, "H"), 4: (4, "I"), 5: (8, "II"), 6: (1, "b"), 7: (1, ""),
    8: (2, "h"), 9: (4, "i"), 10: (8, "ii"), 11: (4, "f"), 12: (8, "d"), 13: (4, "I"),
}
ASCII, UNDEFINED, BYTE = 2, 7, 1

EXIF_HEADER = b"Exif\x00\x00"


def read_exif(blob: bytes, reading: Reading, where: str) -> None:
    """Add every tag of this EXIF blob to reading as ("exif", tag name, value).

    where names the blob's place (e.g. "png:eXIf") for problems; a blob whose
    TIFF header is unreadable is kept whole as (where, "exif", bytes).
    """
    if blob.startswith(EXIF_HEADER):
        blob = blob[len(EXIF_HEADER):]
    order = {b"II*\x00": "<", b"MM\x00*": ">"}.get(blob[:4]) if len(blob) >= 8 else None
    if order is None:
        reading.problem(f"{where}: EXIF without a TIFF header; kept as bytes")
        reading.add(where, "exif", blob)
        return
    (first,) = struct.unpack_from(order + "I", blob, 4)
    Walk(blob, order, reading, where).ifd(first, TAGS)


class Walk:
    """One EXIF blob's IFD walk: byte order, offsets already seen, where problems are reported."""

    def __init__(self, blob: bytes, order: str, reading: Reading, where: str) -> None:
        self.blob = blob
        self.order = order
        self.reading = reading
        self.where = where
        self.seen: set[int] = set()

    def ifd(self, offset: int, names: dict[int, str]) -> None:
        blob, order = self.blob, self.order
        if offset in self.seen or len(self.seen) >= MAX_IFDS:
            self.reading.problem(f"{self.where}: EXIF IFD at {offset} repeats or is past {MAX_IFDS}; skipped")
            return
        self.seen.add(offset)
        if offset + 2 > len(blob):
            self.reading.problem(f"{self.where}: EXIF IFD offset {offset} is outside the {len(blob)} bytes")
            return
        (count,) = struct.unpack_from(order + "H", blob, offset)
        if count > MAX_IFD_ENTRIES:
            self.reading.problem(f"{self.where}: EXIF IFD declares {count} tags; reading the first "
                                 f"{MAX_IFD_ENTRIES}")
            count = MAX_IFD_ENTRIES
        for index in range(count):
            at = offset + 2 + 12 * index
            if at + 12 > len(blob):
                self.reading.problem(f"{self.where}: EXIF IFD at {offset} ends after {index} of {count} tags")
                return
            tag, kind, number = struct.unpack_from(order + "HHI", blob, at)
            self.tag(tag, kind, number, at + 8, names)

    def tag(self, tag: int, kind: int, number: int, field_at: int, names: dict[int, str]) -> None:
        name = names.get(tag, f"0x{tag:04X}")
        if kind not in TYPES:
            self.reading.problem(f"{self.where}: EXIF tag {name} has unknown type {kind}; skipped")
            return
        size, code = TYPES[kind]
        length = size * number
        if length <= 4:
            start = field_at
        else:
            (start,) = struct.unpack_from(self.order + "I", self.blob, field_at)
        if start + length > len(self.blob):
            self.reading.problem(f"{self.where}: EXIF tag {name} claims {length} bytes at {start}, "
                                 f"outside the {len(self.blob)}-byte block; skipped")
            return
        raw = self.blob[start:start + length]
        if tag in (EXIF_IFD, GPS_IFD, INTEROP_IFD) and code == "I" and number >= 1:
            (pointer,) = struct.unpack_from(self.order + "I", raw)
            self.ifd(pointer, GPSTAGS if tag == GPS_IFD else TAGS)
            return
        self.reading.add(SOURCE, name, self.value(tag, kind, raw, code, number))

    def value(self, tag: int, kind: int, raw: bytes, code: str, number: int) -> str | bytes:
        if tag == USER_COMMENT and kind != ASCII:
            return user_comment(raw, big_endian=self.order == ">")
        if tag in XP_TAGS and kind in (BYTE, UNDEFINED):
            return text_or(raw, utf16(raw, big_endian=False))
        if kind == ASCII:
            return utf8_or_latin1(raw.strip(b"\x00"))
        if not code:
            return printable_or_bytes(raw.rstrip(b"\x00"))
        shown = min(number, MAX_NUMBERS)
        values = struct.unpack_from(self.order + code * shown, raw)
        if len(code) == 2:  # rationals: numerator/denominator pairs
            words = [f"{values[i]}/{values[i + 1]}" for i in range(0, len(values), 2)]
        else:
            words = [str(v) for v in values]
        if number > shown:
            words.append(f"(+{number - shown} more)")
        return " ".join(words)


def user_comment(raw: bytes, *, big_endian: bool) -> str | bytes:
    """UserComment by its charset prefix: ASCII, UNICODE (UTF-16, order as the text shows), JIS, undefined."""
    prefix, body = raw[:8], raw[8:]
    if prefix == b"ASCII\x00\x00\x00":
        return utf8_or_latin1(body.strip(b"\x00"))
    if prefix == b"UNICODE\x00":
        return text_or(raw, utf16(body, big_endian=big_endian))
    if prefix == b"JIS\x00\x00\x00\x00\x00":
        for codec in ("iso2022_jp", "shift_jis"):
            try:
                return body.rstrip(b"\x00").decode(codec)
            except UnicodeDecodeError:
                continue
        return raw
    if prefix == b"\x00" * 8:
        return utf8_or_bytes(body.strip(b"\x00"))
    return utf8_or_bytes(raw.strip(b"\x00"))


def utf16(body: bytes, *, big_endian: bool) -> str | None:
    """UTF-16 whose byte order writers get wrong: a BOM, else where the NULs of ASCII-heavy text sit.

    Civitai writes big-endian text under a little-endian TIFF header, SwarmUI
    little-endian, piexif (A1111) big-endian: the header alone is not reliable.
    """
    if body[:2] in (b"\xfe\xff", b"\xff\xfe"):
        big_endian = body[:2] == b"\xfe\xff"
        body = body[2:]
    else:
        sample = body[:4096]
        zeros_even = sample[0::2].count(0)
        zeros_odd = sample[1::2].count(0)
        if zeros_even != zeros_odd:
            big_endian = zeros_even > zeros_odd
    try:
        text = body[: len(body) - len(body) % 2].decode("utf-16-be" if big_endian else "utf-16-le")
    except UnicodeDecodeError:
        return None
    return text.rstrip("\x00")


def text_or(raw: bytes, text: str | None) -> str | bytes:
    return raw if text is None else text


def printable_or_bytes(raw: bytes) -> str | bytes:
    """UNDEFINED bytes as text when they are printable UTF-8 (Fooocus' MakerNote scheme, ExifVersion)."""
    text = utf8_or_bytes(raw)
    if isinstance(text, str) and all(c.isprintable() or c in "\t\n\r" for c in text):
        return text
    return raw
