"""CAR files: write CARv1 as a stream, read CARv1 and CARv2, checking every block against its CID.

Pure: works on a binary stream's read(n) and a write(bytes) callable, never on paths or
sockets. Never allocates more than a configured limit because of a length read from the input.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Final, Protocol

from node import cid as cids
from node import dagcbor, varint
from node.cid import Cid
from node.errors import BlockMismatch, BlockTooLarge, CarError, DagCborError, InvalidCid

MAX_BLOCK_SIZE: Final = dagcbor.MAX_BLOCK_SIZE
MAX_HEADER_SIZE: Final = 1024 * 1024
# A CARv2 starts with what looks like a CARv1 header saying {"version": 2}.
CARV2_PRAGMA: Final = bytes.fromhex("0aa16776657273696f6e02")
# After the pragma: characteristics bitfield, then data offset, data size, index offset.
_CARV2_HEADER: Final = struct.Struct("<16sQQQ")
_SKIP_CHUNK: Final = 64 * 1024
# Longest digest read before cid.from_bytes checks the exact size for the hash function.
_MAX_DIGEST: Final = max(cids.MAX_IDENTITY_DIGEST, 64)


class BinaryStream(Protocol):
    """Anything with read(n) returning at most n bytes, and b"" at the end."""

    def read(self, size: int, /) -> bytes: ...


def encode_header(roots: Sequence[Cid]) -> bytes:
    """A CARv1 header with its length varint: {"roots": [...], "version": 1}."""
    if not roots:
        raise CarError("a CAR needs at least one root")
    root_values: list[dagcbor.Value] = list(roots)
    header = dagcbor.encode({"roots": root_values, "version": 1})
    return varint.encode(len(header)) + header


def encode_section(cid: Cid, block: bytes) -> bytes:
    """One CARv1 section: varint(len(CID) + len(block)), binary CID, block."""
    return section_head(cid, len(block)) + block


def section_head(cid: Cid, block_size: int) -> bytes:
    """What comes before a block in its section: the length varint and the binary CID."""
    raw = bytes(cid)
    return varint.encode(len(raw) + block_size) + raw


class CarWriter:
    """Writes a CARv1 through write(): the header at once, then each distinct block once (dups=n)."""

    def __init__(self, write: Callable[[bytes], object], roots: Sequence[Cid]) -> None:
        self._write = write
        self._written: set[Cid] = set()
        write(encode_header(roots))

    def add(self, cid: Cid, block: bytes) -> bool:
        """Write block unless cid is already in the CAR; return whether it was written.

        The caller vouches that block hashes to cid (it comes from the verifying store).
        """
        if cid in self._written:
            return False
        self._written.add(cid)
        self._write(section_head(cid, len(block)))
        self._write(block)  # on its own, so a large block is never copied
        return True


def read_car(
    stream: BinaryStream,
    *,
    verify: bool = True,
    max_block_size: int = MAX_BLOCK_SIZE,
    max_header_size: int = MAX_HEADER_SIZE,
) -> CarReader:
    """Read a CARv1 or CARv2 header from stream now; iterate the result for its blocks."""
    return CarReader(stream, verify=verify, max_block_size=max_block_size, max_header_size=max_header_size)


class CarReader:
    """A CAR being read: .version and .roots at once, (CID, block) pairs as you iterate, once.

    Blocks are read lazily and, with verify on, hashed against their CID (BlockMismatch).
    Oversized blocks raise BlockTooLarge; anything malformed or truncated raises CarError
    naming the byte offset, counted from the start of the stream (CARv2 pragma included).
    Duplicate blocks are yielded as they come. A CARv2 index is never read.
    """

    def __init__(self, stream: BinaryStream, *, verify: bool, max_block_size: int,
                 max_header_size: int) -> None:
        self._stream = stream
        self._verify = verify
        self._max_block_size = max_block_size
        self._max_header_size = max_header_size
        self._offset = 0
        self._end: int | None = None  # end of the CARv1 payload inside a CARv2
        self.version, self.roots = self._read_header()
        if self.version == 2:
            self._enter_payload()
            start = self._offset
            inner_version, self.roots = self._read_header()
            if inner_version != 1:
                raise CarError(f"the CARv2 payload at byte {start} is not a CARv1")

    def __iter__(self) -> Iterator[tuple[Cid, bytes]]:
        while (section := self._read_section()) is not None:
            yield section

    def _read_header(self) -> tuple[int, list[Cid]]:
        start = self._offset
        what = f"header at byte {start}"
        size, _ = self._read_varint(what)
        if not 0 < size <= self._max_header_size:
            raise CarError(f"the {what} claims {size} bytes (limit {self._max_header_size})")
        raw = self._read_exact(size, what)
        if raw == CARV2_PRAGMA[1:]:
            return 2, []
        try:
            header = dagcbor.decode(raw)
        except (DagCborError, BlockTooLarge) as exc:
            raise CarError(f"the {what} is not valid DAG-CBOR: {exc}") from None
        if not isinstance(header, dict):
            raise CarError(f"the {what} is not a map")
        version, roots = header.get("version"), header.get("roots")
        if type(version) is not int or version != 1:
            raise CarError(f"invalid CAR version {version!r} in the {what}")
        if set(header) != {"roots", "version"} or not isinstance(roots, list):
            raise CarError(f"the {what} must hold exactly roots (a list of CIDs) and version")
        root_cids = [root for root in roots if isinstance(root, Cid)]
        if len(root_cids) != len(roots):
            raise CarError(f"the roots in the {what} must all be CIDs")
        return 1, root_cids

    def _enter_payload(self) -> None:
        raw = self._read_exact(_CARV2_HEADER.size, f"CARv2 header at byte {self._offset}")
        _, data_offset, data_size, _ = _CARV2_HEADER.unpack(raw)
        if data_offset < self._offset:
            raise CarError(f"CARv2 data offset {data_offset} points inside the CARv2 header")
        while self._offset < data_offset:
            step = min(_SKIP_CHUNK, data_offset - self._offset)
            self._read_exact(step, "padding before the CARv2 payload")
        self._end = data_offset + data_size

    def _read_section(self) -> tuple[Cid, bytes] | None:
        start = self._offset
        what = f"section at byte {start}"
        if self._end is not None:
            if start == self._end:
                return None
            first = self._read_exact(1, what)
        else:
            # A CARv1 has no block count: the end of the stream between sections ends it.
            first = self._stream.read(1)
            if not first:
                return None
            self._offset += 1
        length, _ = self._read_varint(what, first)
        if length == 0:
            raise CarError(f"the {what} is empty (length 0)")
        body_start = self._offset
        cid = self._read_cid(what)
        size = length - (self._offset - body_start)
        if size < 0:
            raise CarError(f"the {what} is {length} bytes, shorter than its CID")
        if size > self._max_block_size:
            # Read up to the limit only, to tell a block that is really too large
            # from a corrupt length that overruns the input.
            self._read_exact(self._max_block_size + 1, what)
            raise BlockTooLarge(
                f"block {cid} in the {what} is {size} bytes, over the {self._max_block_size} byte limit")
        block = self._read_exact(size, what)
        if self._verify and not cids.matches(cid, block):
            raise BlockMismatch(f"block {cid} in the {what} does not match its CID")
        return cid, block

    def _read_cid(self, what: str) -> Cid:
        version, raw = self._read_varint(what)
        if raw == b"\x12":
            raw += self._read_exact(33, what)  # CIDv0: a bare sha2-256 multihash, 0x12 0x20 + 32 bytes
        elif version != 1:
            raise CarError(f"unsupported CID version {version} in the {what}")
        else:
            raw += self._read_varint(what)[1] + self._read_varint(what)[1]  # codec, hash function
            digest_size, tail = self._read_varint(what)
            if digest_size > _MAX_DIGEST:
                raise CarError(f"the CID in the {what} claims a {digest_size}-byte digest")
            raw += tail + self._read_exact(digest_size, what)
        try:
            return cids.from_bytes(raw)[0]
        except InvalidCid as exc:
            raise CarError(f"invalid CID in the {what}: {exc}") from None

    def _read_varint(self, what: str, raw: bytes = b"") -> tuple[int, bytes]:
        """Read one varint a byte at a time (raw: its bytes already read); return it and its bytes."""
        buf = bytearray(raw)
        while (not buf or buf[-1] & 0x80) and len(buf) < varint.MAX_VARINT_BYTES:
            buf += self._read_exact(1, what)
        try:
            value, _ = varint.decode(buf)
        except varint.VarintError as exc:
            raise CarError(f"invalid varint in the {what}: {exc}") from None
        return value, bytes(buf)

    def _read_exact(self, size: int, what: str) -> bytes:
        start = self._offset
        if self._end is not None and start + size > self._end:
            raise CarError(f"the {what} runs past the end of the CARv2 payload at byte {self._end}")
        data = self._stream.read(size)
        if len(data) < size:
            # Pipes and sockets return short reads; only b"" means the end.
            buf = bytearray(data)
            while len(buf) < size:
                more = self._stream.read(size - len(buf))
                if not more:
                    raise CarError(f"truncated CAR: the input ends at byte {start + len(buf)}, "
                                   f"inside the {what}")
                buf += more
            data = bytes(buf)
        self._offset = start + size
        return data
