"""Strict DAG-CBOR: the one encoding of our records and of CAR headers.

Pure. Encode only what has one DAG-CBOR form; decode only bytes our own encoder
would have written, so a block has exactly one meaning and one CID. Never
recurses past MAX_DEPTH or trusts a length the input cannot back.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from typing import Final, TypeAlias, TypeVar

from node.cid import DAG_CBOR, Cid, from_bytes
from node.cid import cid_of as _hash_cid
from node.errors import BlockTooLarge, DagCborError, InvalidCid

Value: TypeAlias = dict[str, "Value"] | list["Value"] | str | bytes | int | float | bool | Cid | None

MAX_BLOCK_SIZE: Final = 2 * 1024 * 1024
MAX_DEPTH: Final = 64
CID_TAG: Final = 42

_UINT, _NEGINT, _BYTES, _TEXT, _ARRAY, _MAP, _TAG, _SIMPLE = range(8)
_FALSE, _TRUE, _NULL, _FLOAT64 = 0xF4, 0xF5, 0xF6, 0xFB
_UINT64_END: Final = 2**64


def encode(value: Value, *, max_depth: int = MAX_DEPTH) -> bytes:
    """Encode value as DAG-CBOR; DagCborError for anything without one DAG-CBOR form.

    Tuples, sets and other types are refused rather than converted, so that
    decode(encode(x)) == x holds for every value this accepts.
    """
    out = bytearray()
    _encode(value, out, max_depth)
    if len(out) > MAX_BLOCK_SIZE:
        raise BlockTooLarge(f"DAG-CBOR block is {len(out)} bytes, over the {MAX_BLOCK_SIZE} byte limit")
    return bytes(out)


def encode_map(encoded: dict[str, bytes], *, max_depth: int = MAX_DEPTH) -> bytes:
    """encode() of a map whose values come already encoded (each by encode(value, max_depth=max_depth - 1)).

    So a record encoded with and without one field (a signature) costs one
    encoding of each value, not two.
    """
    out = bytearray()
    for key, value in _sorted_entries(encoded, out, max_depth):
        out += key
        out += value
    if len(out) > MAX_BLOCK_SIZE:
        raise BlockTooLarge(f"DAG-CBOR block is {len(out)} bytes, over the {MAX_BLOCK_SIZE} byte limit")
    return bytes(out)


def decode(block: bytes | bytearray | memoryview, *, max_depth: int = MAX_DEPTH) -> Value:
    """Decode one strict DAG-CBOR block; DagCborError for anything encode would not produce."""
    if len(block) > MAX_BLOCK_SIZE:
        raise BlockTooLarge(f"DAG-CBOR block is {len(block)} bytes, over the {MAX_BLOCK_SIZE} byte limit")
    decoder = _Decoder(bytes(block), max_depth)
    value = decoder.item(0)
    if decoder.pos != len(decoder.buf):
        raise DagCborError(f"invalid DAG-CBOR at byte {decoder.pos}: trailing bytes after the value")
    return value


def links(value: Value) -> Iterator[Cid]:
    """Every CID inside value, depth first; for a decoded value that is the encoded order."""
    # An explicit stack: values built in code are not depth-limited like decoded ones.
    stack: list[Value] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Cid):
            yield item
        elif isinstance(item, dict):
            stack.extend(reversed(item.values()))
        elif isinstance(item, list):
            stack.extend(reversed(item))


def cid_of(value: Value) -> tuple[Cid, bytes]:
    """Encode value and return its CIDv1 (dag-cbor, sha2-256) with the block bytes."""
    block = encode(value)
    return _hash_cid(block, DAG_CBOR), block


_SMALL_HEADS: Final = tuple(tuple(bytes((major << 5 | n,)) for n in range(24)) for major in range(8))
_KEYS: dict[str, bytes] = {}  # map key → its encoded form: records repeat the same few keys
_KEYS_MAX: Final = 4096
_KEY_CACHE_LENGTH: Final = 64  # longer keys are encoded each time, not remembered


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return _SMALL_HEADS[major][n]
    if n < 0x100:
        return bytes((major << 5 | 24, n))
    if n < 0x10000:
        return bytes((major << 5 | 25,)) + n.to_bytes(2, "big")
    if n < 0x1_0000_0000:
        return bytes((major << 5 | 26,)) + n.to_bytes(4, "big")
    return bytes((major << 5 | 27,)) + n.to_bytes(8, "big")


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise DagCborError(f"cannot encode {text!r:.80}: not valid Unicode (lone surrogate)") from None


def _encode(value: Value, out: bytearray, depth_left: int) -> None:
    # Exact types first (what records are made of); subclasses and refusals take the slower path.
    if type(value) is str:
        raw = _utf8(value)
        out += _head(_TEXT, len(raw))
        out += raw
    elif type(value) is dict:
        _encode_map(value, out, depth_left)
    elif type(value) is int and 0 <= value < _UINT64_END:
        out += _head(_UINT, value)
    elif type(value) is list:
        _encode_list(value, out, depth_left)
    else:
        _encode_other(value, out, depth_left)


def _encode_other(value: Value, out: bytearray, depth_left: int) -> None:
    # bool before int: True is an int in Python but a simple value in CBOR.
    if value is None:
        out.append(_NULL)
    elif value is True:
        out.append(_TRUE)
    elif value is False:
        out.append(_FALSE)
    elif isinstance(value, int):
        if 0 <= value < _UINT64_END:
            out += _head(_UINT, value)
        elif -_UINT64_END <= value < 0:
            out += _head(_NEGINT, -1 - value)
        else:
            raise DagCborError(f"cannot encode {value}: integers must fit in 64 bits")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise DagCborError(f"cannot encode {value}: DAG-CBOR has no NaN or Infinity")
        out.append(_FLOAT64)
        out += struct.pack(">d", value)
    elif isinstance(value, str):
        raw = _utf8(value)
        out += _head(_TEXT, len(raw))
        out += raw
    elif isinstance(value, bytes):
        out += _head(_BYTES, len(value))
        out += value
    elif isinstance(value, Cid):
        raw = b"\x00" + bytes(value)
        out += _head(_TAG, CID_TAG)
        out += _head(_BYTES, len(raw))
        out += raw
    elif isinstance(value, list):
        _encode_list(value, out, depth_left)
    elif isinstance(value, dict):
        _encode_map(value, out, depth_left)
    else:
        raise DagCborError(f"cannot encode {type(value).__name__}: not in the DAG-CBOR data model")


def _encode_list(value: list[Value], out: bytearray, depth_left: int) -> None:
    if depth_left <= 0:
        raise DagCborError("cannot encode: nested too deeply")
    out += _head(_ARRAY, len(value))
    for item in value:
        _encode(item, out, depth_left - 1)


def _encode_map(value: dict[str, Value], out: bytearray, depth_left: int) -> None:
    for key, item in _sorted_entries(value, out, depth_left):
        out += key
        _encode(item, out, depth_left - 1)


_V = TypeVar("_V")


def _sorted_entries(value: dict[str, _V], out: bytearray, depth_left: int) -> list[tuple[bytes, _V]]:
    """Write the map's head; return its (encoded key, value) pairs in DAG-CBOR's key order."""
    if depth_left <= 0:
        raise DagCborError("cannot encode: nested too deeply")
    # Keys order by their encoded bytes, shorter first, then bytewise. A text head grows with the
    # length it encodes, so sorting the encoded keys (head included) gives exactly that order.
    entries = sorted([(_encoded_key(key), item) for key, item in value.items()], key=_first)
    out += _head(_MAP, len(entries))
    return entries


def _first(entry: tuple[bytes, object]) -> bytes:
    return entry[0]


def _encoded_key(key: str) -> bytes:
    encoded = _KEYS.get(key)
    if encoded is None:
        if not isinstance(key, str):
            raise DagCborError(f"cannot encode map key {key!r:.80}: keys must be strings")
        raw = _utf8(key)
        encoded = _head(_TEXT, len(raw)) + raw
        if len(raw) <= _KEY_CACHE_LENGTH and len(_KEYS) < _KEYS_MAX:
            _KEYS[key] = encoded
    return encoded


class _Decoder:
    def __init__(self, buf: bytes, max_depth: int) -> None:
        self.buf = buf
        self.pos = 0
        self.max_depth = max_depth

    def fail(self, at: int, why: str) -> DagCborError:
        return DagCborError(f"invalid DAG-CBOR at byte {at}: {why}")

    def head(self) -> tuple[int, int, int]:
        """Read one initial byte and its argument: (major type, additional info, argument)."""
        start = self.pos
        if start >= len(self.buf):
            raise self.fail(start, "unexpected end of input")
        initial = self.buf[start]
        major, info = initial >> 5, initial & 0x1F
        if info < 24:
            self.pos = start + 1
            return major, info, info
        if info == 31:
            raise self.fail(start, "indefinite lengths are not allowed")
        if info > 27:
            raise self.fail(start, f"reserved additional info {info}")
        size = 1 << (info - 24)
        end = start + 1 + size
        if end > len(self.buf):
            raise self.fail(start, "unexpected end of input")
        argument = int.from_bytes(self.buf[start + 1:end], "big")
        self.pos = end
        if major == _SIMPLE:
            return major, info, argument
        if argument < (24 if size == 1 else 1 << (4 * size)):
            raise self.fail(start, "integer or length not in its shortest form")
        return major, info, argument

    def take(self, length: int, start: int) -> bytes:
        end = self.pos + length
        if end > len(self.buf):
            raise self.fail(start, f"length {length} runs past the end of the input")
        chunk = self.buf[self.pos:end]
        self.pos = end
        return chunk

    def text(self, length: int, start: int) -> str:
        try:
            return self.take(length, start).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(start, "text is not valid UTF-8") from None

    def item(self, depth: int) -> Value:
        start = self.pos
        major, info, argument = self.head()
        if major == _UINT:
            return argument
        if major == _NEGINT:
            return -1 - argument
        if major == _BYTES:
            return self.take(argument, start)
        if major == _TEXT:
            return self.text(argument, start)
        if major in (_ARRAY, _MAP):
            if depth >= self.max_depth:
                raise self.fail(start, f"nested deeper than {self.max_depth} levels")
            # Every item takes at least one byte: refuse counts the input cannot hold.
            if argument > len(self.buf) - self.pos:
                raise self.fail(start, f"{argument} items claimed, more than the input holds")
            if major == _ARRAY:
                return [self.item(depth + 1) for _ in range(argument)]
            return self.map(argument, depth, start)
        if major == _TAG:
            return self.link(argument, start)
        return self.simple(info, start)

    def map(self, count: int, depth: int, start: int) -> dict[str, Value]:
        result: dict[str, Value] = {}
        previous: bytes | None = None
        for _ in range(count):
            key_start = self.pos
            major, _, length = self.head()
            if major != _TEXT:
                raise self.fail(key_start, "map keys must be text strings")
            raw = self.take(length, key_start)
            if previous is not None and (len(raw), raw) <= (len(previous), previous):
                why = "duplicate map key" if raw == previous else "map keys not in DAG-CBOR order"
                raise self.fail(key_start, f"{why} {raw.decode('utf-8', 'replace')!r:.80}")
            previous = raw
            try:
                key = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise self.fail(key_start, "map key is not valid UTF-8") from None
            result[key] = self.item(depth + 1)
        return result

    def link(self, tag: int, start: int) -> Cid:
        if tag != CID_TAG:
            raise self.fail(start, f"tag {tag} is not allowed (only 42, a CID)")
        content_start = self.pos
        major, _, length = self.head()
        if major != _BYTES:
            raise self.fail(content_start, "tag 42 must hold a byte string")
        raw = self.take(length, content_start)
        if raw[:1] != b"\x00":
            raise self.fail(content_start, "CID in tag 42 must start with a 0x00 byte")
        try:
            cid, end = from_bytes(raw, 1)
        except InvalidCid as exc:
            raise self.fail(content_start, f"tag 42 does not hold a CID ({exc})") from None
        if end != len(raw):
            raise self.fail(content_start, "trailing bytes after the CID in tag 42")
        return cid

    def simple(self, info: int, start: int) -> Value:
        if info == 20:
            return False
        if info == 21:
            return True
        if info == 22:
            return None
        if info == 27:
            value: float = struct.unpack(">d", self.buf[start + 1:self.pos])[0]
            if not math.isfinite(value):
                raise self.fail(start, "NaN and Infinity are not allowed")
            return value
        if info in (25, 26):
            raise self.fail(start, "floats must be 64-bit")
        raise self.fail(start, "undefined and simple values are not allowed")
