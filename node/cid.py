"""Content identifiers: make, parse, format and verify CIDs.

Pure: no I/O. Strings in any multibase are parsed by the multiformats library
(strict); the hot path (making CIDs for freshly hashed blocks, reading binary
CIDs out of CARs and dag-pb links) is done here with plain bytes, because
building a multiformats CID object costs ~100 µs and an import makes
thousands of them.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass
from typing import Final

from node import varint
from node.errors import BlockMismatch, InvalidCid

RAW: Final = 0x55
DAG_PB: Final = 0x70
DAG_CBOR: Final = 0x71

IDENTITY: Final = 0x00
SHA2_256: Final = 0x12
SHA2_512: Final = 0x13
BLAKE2B_256: Final = 0xB220

CODEC_NAMES: Final = {RAW: "raw", DAG_PB: "dag-pb", DAG_CBOR: "dag-cbor"}
HASH_NAMES: Final = {IDENTITY: "identity", SHA2_256: "sha2-256", SHA2_512: "sha2-512",
                     BLAKE2B_256: "blake2b-256"}
_DIGEST_SIZES: Final = {SHA2_256: 32, SHA2_512: 64, BLAKE2B_256: 32}
# Identity CIDs carry their block inline; keep them small so a CID string
# can never smuggle a large payload past the block size limit.
MAX_IDENTITY_DIGEST: Final = 128

_B58_ALPHABET: Final = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_SHA256_PREFIX: Final = b"\x12\x20"


@dataclass(frozen=True, slots=True)
class Cid:
    """A CID: version, content codec and full multihash (code, length, digest)."""

    version: int
    codec: int
    multihash: bytes

    @property
    def hash_code(self) -> int:
        return varint.decode(self.multihash)[0]

    @property
    def digest(self) -> bytes:
        _, pos = varint.decode(self.multihash)
        _, pos = varint.decode(self.multihash, pos)
        return self.multihash[pos:]

    def __bytes__(self) -> bytes:
        if self.version == 0:
            return self.multihash
        return bytes((1,)) + varint.encode(self.codec) + self.multihash

    def __str__(self) -> str:
        return _text(self)

    def __repr__(self) -> str:
        return f"Cid({self})"

    def to_v1(self) -> Cid:
        return Cid(1, self.codec, self.multihash) if self.version == 0 else self

    @property
    def codec_name(self) -> str:
        return CODEC_NAMES.get(self.codec, hex(self.codec))


@functools.lru_cache(maxsize=4096)
def _text(cid: Cid) -> str:
    # Cached: a CID is printed, logged and indexed several times in a row, and base32 is slow Python.
    if cid.version == 0:
        return base58btc(cid.multihash)
    return "b" + base64.b32encode(bytes(cid)).decode("ascii").lower().rstrip("=")


def sha256_cid(digest: bytes, codec: int, version: int = 1) -> Cid:
    """The CID of a block whose sha2-256 digest is already known."""
    if version == 0 and codec != DAG_PB:
        raise InvalidCid("CIDv0 can only name dag-pb blocks")
    return Cid(version, codec, _SHA256_PREFIX + digest)


def cid_of(block: bytes | memoryview, codec: int, version: int = 1) -> Cid:
    """Hash a block with sha2-256 and return its CID."""
    return sha256_cid(hashlib.sha256(block).digest(), codec, version)


def parse(text: str) -> Cid:
    """Parse a CID string (v0 base58btc, or v1 in any multibase)."""
    if not isinstance(text, str) or not text or len(text) > 512:
        raise InvalidCid(f"not a CID: {text!r:.80}")
    text = text.strip()
    if len(text) == 46 and text.startswith("Qm"):
        raw = _decode_base58(text)
        if raw is None or len(raw) != 34 or not raw.startswith(_SHA256_PREFIX):
            raise InvalidCid(f"not a CID: {text!r}")
        return Cid(0, DAG_PB, raw)
    try:
        from multiformats import multibase

        raw = multibase.decode(text)
    except Exception as exc:  # multiformats raises several unrelated types
        raise InvalidCid(f"not a CID: {text!r:.80} ({exc})") from None
    try:
        cid, end = from_bytes(raw)
    except InvalidCid as exc:
        raise InvalidCid(f"not a CID: {text!r:.80} ({exc.message})") from None
    if end != len(raw):
        raise InvalidCid(f"not a CID: {text!r:.80} (trailing bytes)")
    if cid.version == 0:
        raise InvalidCid(f"not a CID: {text!r:.80} (CIDv0 must be base58btc)")
    return cid


def from_bytes(buf: bytes | bytearray | memoryview, offset: int = 0) -> tuple[Cid, int]:
    """Read one binary CID starting at offset; return it and the offset after it."""
    try:
        if buf[offset:offset + 2] == _SHA256_PREFIX:
            end = offset + 34
            if end > len(buf):
                raise InvalidCid("truncated CIDv0")
            return Cid(0, DAG_PB, bytes(buf[offset:end])), end
        version, pos = varint.decode(buf, offset)
        if version != 1:
            raise InvalidCid(f"unsupported CID version {version}")
        codec, pos = varint.decode(buf, pos)
        mh_start = pos
        code, pos = varint.decode(buf, pos)
        length, pos = varint.decode(buf, pos)
    except varint.VarintError as exc:
        raise InvalidCid(f"bad CID bytes: {exc}") from None
    expected = _DIGEST_SIZES.get(code)
    if expected is None and code != IDENTITY:
        raise InvalidCid(f"unsupported hash function 0x{code:x}")
    if code == IDENTITY and length > MAX_IDENTITY_DIGEST:
        raise InvalidCid("identity CID is too long")
    if expected is not None and length != expected:
        raise InvalidCid(f"{HASH_NAMES[code]} digest must be {expected} bytes, not {length}")
    end = pos + length
    if end > len(buf):
        raise InvalidCid("truncated CID")
    return Cid(1, codec, bytes(buf[mh_start:end])), end


def hash_block(code: int, block: bytes | memoryview) -> bytes:
    """The digest of block under the given multihash function."""
    if code == SHA2_256:
        return hashlib.sha256(block).digest()
    if code == SHA2_512:
        return hashlib.sha512(block).digest()
    if code == BLAKE2B_256:
        return hashlib.blake2b(block, digest_size=32).digest()
    if code == IDENTITY:
        return bytes(block)
    raise InvalidCid(f"unsupported hash function 0x{code:x}")


def matches(cid: Cid, block: bytes | memoryview) -> bool:
    return hash_block(cid.hash_code, block) == cid.digest


def verify(cid: Cid, block: bytes | memoryview) -> None:
    """Raise BlockMismatch unless block hashes to cid."""
    if not matches(cid, block):
        raise BlockMismatch(f"block does not match {cid}")


def base58btc(raw: bytes) -> str:
    n = int.from_bytes(raw, "big")
    out = bytearray()
    while n:
        n, rem = divmod(n, 58)
        out.append(_B58_ALPHABET[rem])
    pad = len(raw) - len(raw.lstrip(b"\0"))
    return (b"1" * pad + bytes(reversed(out))).decode("ascii")


def _decode_base58(text: str) -> bytes | None:
    n = 0
    for ch in text.encode("ascii", "replace"):
        idx = _B58_ALPHABET.find(ch)
        if idx < 0:
            return None
        n = n * 58 + idx
    pad = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * pad + body
