"""The dag-pb codec (IPLD), strict, byte-compatible with Kubo/boxo.

Pure. Encoding always writes Links before Data and, inside a link, Hash,
Name, Tsize in that order; Name and Tsize are written whenever they are not
None (Kubo writes an empty Name on every file-chunk link, and CIDs depend on
it). Decoding follows the dag-pb spec's strictness rules: only fields 1 and 2
in a node and 1-3 in a link, each at most once and in order, every link has a
Hash that is a CID, and Links may not be split around Data.
"""

from __future__ import annotations

from dataclasses import dataclass

from node import protobuf
from node.cid import Cid, from_bytes
from node.errors import DagPbError, InvalidCid


@dataclass(frozen=True, slots=True)
class PBLink:
    hash: Cid
    name: str | None = None
    tsize: int | None = None


@dataclass(frozen=True, slots=True)
class PBNode:
    links: tuple[PBLink, ...] = ()
    data: bytes | None = None


def encode_name(name: str) -> bytes:
    # surrogateescape keeps names that were not valid UTF-8 byte-exact.
    return name.encode("utf-8", "surrogateescape")


def encode_link(link: PBLink) -> bytes:
    body = protobuf.length_delimited(1, bytes(link.hash))
    if link.name is not None:
        body += protobuf.length_delimited(2, encode_name(link.name))
    if link.tsize is not None:
        body += protobuf.varint_field(3, link.tsize)
    return protobuf.length_delimited(2, body)


def encode(node: PBNode) -> bytes:
    parts = [encode_link(link) for link in node.links]
    if node.data is not None:
        parts.append(protobuf.length_delimited(1, node.data))
    return b"".join(parts)


def decode(block: bytes | memoryview) -> PBNode:
    try:
        return _decode(block)
    except protobuf.WireError as exc:
        raise DagPbError(f"invalid dag-pb block: {exc}") from None


def _decode(block: bytes | memoryview) -> PBNode:
    links: list[PBLink] = []
    data: bytes | None = None
    links_closed = False
    for field, wire_type, value in protobuf.fields(block):
        if wire_type != protobuf.LEN or not isinstance(value, memoryview):
            raise DagPbError(f"invalid dag-pb block: field {field} has wire type {wire_type}")
        if field == 1:
            if data is not None:
                raise DagPbError("invalid dag-pb block: duplicate Data section")
            data = bytes(value)
            links_closed = bool(links)
        elif field == 2:
            if links_closed:
                raise DagPbError("invalid dag-pb block: duplicate Links section")
            links.append(_decode_link(value))
        else:
            raise DagPbError(f"invalid dag-pb block: unknown field {field}")
    return PBNode(tuple(links), data)


def _decode_link(buf: memoryview) -> PBLink:
    hash_: Cid | None = None
    name: str | None = None
    tsize: int | None = None
    last = 0
    for field, wire_type, value in protobuf.fields(buf):
        if field <= last:
            raise DagPbError("invalid dag-pb link: fields out of order or repeated")
        last = field
        if field == 1 and isinstance(value, memoryview) and wire_type == protobuf.LEN:
            try:
                hash_, end = from_bytes(value)
            except InvalidCid as exc:
                raise DagPbError(f"invalid dag-pb link: Hash is not a CID ({exc})") from None
            if end != len(value):
                raise DagPbError("invalid dag-pb link: trailing bytes after the Hash CID")
        elif field == 2 and isinstance(value, memoryview) and wire_type == protobuf.LEN:
            name = bytes(value).decode("utf-8", "surrogateescape")
        elif field == 3 and isinstance(value, int) and wire_type == protobuf.VARINT:
            tsize = value
        else:
            raise DagPbError(f"invalid dag-pb link: unexpected field {field}")
    if hash_ is None:
        raise DagPbError("invalid dag-pb link: missing Hash (expected a CID)")
    return PBLink(hash_, name, tsize)
