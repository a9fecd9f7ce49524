"""PNG chunks walked by hand: size, frames and every text, EXIF and C2PA chunk, before or after IDAT.

Pure. Never decodes pixels, never trusts a declared length beyond the bytes
that remain, keeps reading after a bad CRC (as a problem), and keeps every
text chunk in file order, repeated keywords included.

Entries: ("png:tEXt" | "png:zTXt" | "png:iTXt", keyword, text) — tEXt and zTXt
as UTF-8 when the bytes are valid UTF-8, else Latin-1 (the spec's charset);
iTXt as UTF-8, or the exact bytes when invalid; a compressed text that cannot
be inflated within the limits keeps its compressed bytes. ("png:caBX",
"jumbf", bytes) for a C2PA store; EXIF tags from eXIf as ("exif", name, value).
"""

from __future__ import annotations

import struct
import zlib

from node.metadata.exif import read_exif
from node.metadata.limits import MAX_CHUNKS, Reading, utf8_or_bytes, utf8_or_latin1
from node.metadata.raw import Container

SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_CHUNK_LENGTH = 0x7FFF_FFFF  # the spec's bound on one chunk
READ_CHUNKS = frozenset((b"IHDR", b"acTL", b"IEND", b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"caBX"))


def read_png(data: bytes, reading: Reading | None = None) -> Container:
    """Walk a PNG (data starts with the PNG signature) into a Container."""
    reading = reading or Reading()
    width = height = None
    frames = 1
    at = len(SIGNATURE)
    for count in range(MAX_CHUNKS + 1):
        if at == len(data):
            reading.problem("PNG ends without an IEND chunk")
            break
        if at + 12 > len(data):
            reading.problem(f"PNG truncated: {len(data) - at} stray bytes at offset {at} instead of a chunk")
            break
        if count == MAX_CHUNKS:
            reading.problem(f"PNG has more than {MAX_CHUNKS} chunks; the rest is not read")
            break
        length, kind = struct.unpack_from(">I4s", data, at)
        name = kind.decode("latin-1")
        if not kind.isalpha():
            reading.problem(f"PNG chunk at offset {at} has an invalid type {kind!r}; the rest is not read")
            break
        if length > MAX_CHUNK_LENGTH or at + 12 + length > len(data):
            reading.overrun(f"PNG chunk {name}", at, length, len(data) - at - 12)
            break
        if kind not in READ_CHUNKS:  # pixels and the like: their decoder checks them, we only step over
            at += 12 + length
            continue
        body = data[at + 8:at + 8 + length]
        (crc,) = struct.unpack_from(">I", data, at + 8 + length)
        if zlib.crc32(kind + body) != crc:
            reading.problem(f"PNG chunk {name} at offset {at}: CRC mismatch (read anyway)")
        at += 12 + length
        if kind == b"IHDR" and length >= 8:
            width, height = struct.unpack_from(">II", body)
        elif kind == b"acTL" and length >= 4:
            (frames,) = struct.unpack_from(">I", body)
        elif kind == b"IEND":
            break
        else:
            read_chunk(kind, body, reading)
    if width is None:
        reading.problem("PNG without an IHDR chunk")
    return reading.container("PNG", width, height, max(frames, 1))


def read_chunk(kind: bytes, body: bytes, reading: Reading) -> None:
    if kind == b"tEXt":
        keyword, text = split_keyword(body, "tEXt", reading)
        reading.add("png:tEXt", keyword, utf8_or_latin1(text))
    elif kind == b"zTXt":
        keyword, rest = split_keyword(body, "zTXt", reading)
        inflated = reading.inflate(f"png:zTXt {keyword!r}", rest[1:])
        reading.add("png:zTXt", keyword, rest[1:] if inflated is None else utf8_or_latin1(inflated))
    elif kind == b"iTXt":
        read_itxt(body, reading)
    elif kind == b"eXIf":
        read_exif(body, reading, "png:eXIf")
    elif kind == b"caBX":
        reading.add("png:caBX", "jumbf", body)


def split_keyword(body: bytes, name: str, reading: Reading) -> tuple[str, bytes]:
    """A text chunk's Latin-1 keyword and the bytes after its NUL; without a NUL, an empty keyword."""
    keyword, nul, rest = body.partition(b"\x00")
    if not nul:
        reading.problem(f"PNG {name} chunk without a keyword separator; kept under an empty keyword")
        return "", body
    return keyword.decode("latin-1"), rest


def read_itxt(body: bytes, reading: Reading) -> None:
    """iTXt: keyword, compression flag and method, language tag, translated keyword, UTF-8 text."""
    keyword, rest = split_keyword(body, "iTXt", reading)
    if len(rest) < 2:
        reading.add("png:iTXt", keyword, rest)
        reading.problem(f"PNG iTXt {keyword!r} is cut short; kept as bytes")
        return
    compressed = rest[0] == 1
    _language, _, rest = rest[2:].partition(b"\x00")
    _translated, _, text = rest.partition(b"\x00")
    if compressed:
        inflated = reading.inflate(f"png:iTXt {keyword!r}", text)
        if inflated is None:
            reading.add("png:iTXt", keyword, text)
            return
        text = inflated
    value = utf8_or_bytes(text)
    if isinstance(value, bytes):
        reading.problem(f"PNG iTXt {keyword!r} is not valid UTF-8; kept as bytes")
    reading.add("png:iTXt", keyword, value)
