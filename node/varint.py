"""Unsigned LEB128 varints as used by multiformats, protobuf and CAR.

Pure: bytes in, values out. Decoding refuses non-minimal encodings and values
above 2**63 - 1 (the multiformats limit), so one value has one encoding.
"""

from __future__ import annotations

MAX_VARINT_BYTES = 9


class VarintError(ValueError):
    """Invalid varint."""


def encode(value: int) -> bytes:
    if value < 0:
        raise VarintError("varint cannot be negative")
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode(buf: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int]:
    """Return (value, offset after the varint)."""
    value = 0
    shift = 0
    end = len(buf)
    for i in range(MAX_VARINT_BYTES):
        pos = offset + i
        if pos >= end:
            raise VarintError("truncated varint")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and i > 0:
                raise VarintError("varint is not minimally encoded")
            return value, pos + 1
        shift += 7
    raise VarintError("varint longer than 9 bytes")
