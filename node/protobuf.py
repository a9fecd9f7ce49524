"""The few protobuf wire-format primitives that dag-pb and UnixFS need.

Pure. Protobuf varints may be up to 10 bytes and, unlike multiformats
varints, are not required to be minimal; values above 2**64 - 1 are refused.
"""

from __future__ import annotations

from collections.abc import Iterator

from node import varint

VARINT = 0
LEN = 2
_MAX_U64 = (1 << 64) - 1


class WireError(ValueError):
    """Invalid protobuf bytes."""


def encode_varint(value: int) -> bytes:
    if value < 0 or value > _MAX_U64:
        raise WireError("varint out of range")
    return varint.encode(value)  # same LEB128 bytes; protobuf only allows a wider range


def decode_varint(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    value = 0
    shift = 0
    end = len(buf)
    for _ in range(10):
        if pos >= end:
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if value > _MAX_U64:
                raise WireError("varint out of range")
            return value, pos
        shift += 7
    raise WireError("varint too long")


def key(field: int, wire_type: int) -> bytes:
    return encode_varint((field << 3) | wire_type)


def length_delimited(field: int, payload: bytes) -> bytes:
    return key(field, LEN) + encode_varint(len(payload)) + payload


def varint_field(field: int, value: int) -> bytes:
    return key(field, VARINT) + encode_varint(value)


def fields(buf: bytes | bytearray | memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """Yield (field number, wire type, value) for each field in order.

    A varint field's value is an int, a length-delimited one a memoryview.
    Other wire types (fixed32/64, groups) are refused: neither dag-pb nor
    UnixFS uses them outside mtime, which is parsed separately.
    """
    view = memoryview(buf)
    pos = 0
    end = len(view)
    while pos < end:
        tag, pos = decode_varint(view, pos)
        field, wire_type = tag >> 3, tag & 7
        if field == 0:
            raise WireError("field number 0")
        if wire_type == VARINT:
            value, pos = decode_varint(view, pos)
            yield field, wire_type, value
        elif wire_type == LEN:
            length, pos = decode_varint(view, pos)
            if pos + length > end:
                raise WireError("length-delimited field overruns the buffer")
            yield field, wire_type, view[pos:pos + length]
            pos += length
        elif wire_type == 5 and field == 2:  # fixed32, only inside UnixFS mtime
            if pos + 4 > end:
                raise WireError("truncated fixed32")
            yield field, wire_type, int.from_bytes(view[pos:pos + 4], "little")
            pos += 4
        else:
            raise WireError(f"unsupported wire type {wire_type} for field {field}")
