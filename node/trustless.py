"""The IPFS gateway's rules as values: format negotiation, parameters, Etags, and which blocks to send.

Pure: requests come in as strings, blocks through a `get_block` the caller
passes, answers go out as values and iterators. Never imports aiohttp or
asyncio and never touches a file; node/web/gateway.py does the I/O. It must
never decide a status code by catching a bare exception, and never yield a
block it did not get from `get_block` (which verifies every block it reads).

Spec: ipfs/specs http-gateways/trustless-gateway.md and path-gateway.md,
digested in ../shared/spec/trustless-gateway-rules.json; defaults follow
boxo/gateway (order=dfs, dups=n, dag-scope=all).
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Final
from urllib.parse import quote

from node import dag, hamt, unixfs
from node.cid import DAG_PB, IDENTITY, RAW, Cid
from node.errors import InputError, NotAcceptable, NotFound, UnixFsError
from node.unixfs import NodeType, UnixFsNode

BlockGetter = Callable[[Cid], bytes]

MEDIA_RAW: Final = "application/vnd.ipld.raw"
MEDIA_CAR: Final = "application/vnd.ipld.car"
CACHE_IMMUTABLE: Final = "public, max-age=29030400, immutable"
MAX_PATH_SEGMENTS: Final = 256
# dups=y repeats a shared subtree at every link to it; a DAG built to
# multiply (a chain of diamonds) would otherwise stream for ever.
MAX_REPEATED_SECTIONS: Final = 1_000_000
MAX_LISTING_ENTRIES: Final = 10_000
SNIFF_BYTES: Final = 512

# Formats the spec names that this node does not produce: 406, not 400.
_KNOWN_FORMATS: Final = {
    "ipns-record": "application/vnd.ipfs.ipns-record", "tar": "application/x-tar",
    "dag-json": "application/vnd.ipld.dag-json", "dag-cbor": "application/vnd.ipld.dag-cbor",
    "json": "application/json", "cbor": "application/cbor",
}
_UNSUPPORTED_MEDIA: Final = frozenset(_KNOWN_FORMATS.values()) - {"application/json"}


# --- negotiation ------------------------------------------------------------------------------

class Format(Enum):
    RAW = "raw"
    CAR = "car"
    FILE = "file"  # deserialized: the file's bytes or a directory listing (path gateway)


@dataclass(frozen=True, slots=True)
class CarVariant:
    """The CAR flavour of a response: always version 1 and depth-first here."""

    order: str = "dfs"  # what the client asked for; we always send dfs, which satisfies unk
    dups: bool = False

    @property
    def media_type(self) -> str:
        return f"{MEDIA_CAR}; version=1; order=dfs; dups={'y' if self.dups else 'n'}"


@dataclass(frozen=True, slots=True)
class Negotiated:
    format: Format
    car: CarVariant = CarVariant()
    by_accept: bool = False  # the format came from Accept alone: send Content-Location


@dataclass(frozen=True, slots=True)
class _MediaRange:
    type: str
    params: dict[str, str]
    q: float


def _parse_accept(accept: str) -> list[_MediaRange]:
    ranges = []
    for item in accept.split(","):
        kind, *raw_params = (part.strip() for part in item.split(";"))
        if not kind:
            continue
        params: dict[str, str] = {}
        for raw in raw_params:
            name, _, value = raw.partition("=")
            params[name.strip().lower()] = value.strip().strip('"')
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 0.0
        if q > 0:
            ranges.append(_MediaRange(kind.lower(), params, q))
    # Highest q first; among equals the client's order (sorted is stable).
    return sorted(ranges, key=lambda r: -r.q)


def _car_variant(version: str | None, order: str | None, dups: str | None) -> CarVariant | None:
    """The variant for these parameters, or None when we cannot produce it."""
    if version not in (None, "1") or order not in (None, "dfs", "unk") or dups not in (None, "y", "n"):
        return None
    return CarVariant(order or "dfs", dups == "y")


def negotiate(query: Mapping[str, str], accept: str | None) -> Negotiated:
    """Pick the response format: ?format= wins over Accept, ?car-* over Accept's CAR parameters.

    InputError (400) for an unknown ?format= or a malformed ?car-*; NotAcceptable
    (406) for a format or CAR variant this node does not produce.
    """
    fmt = query.get("format")
    ranges = _parse_accept(accept or "")
    car_in_accept = next((r for r in ranges if r.type == MEDIA_CAR
                          and _car_variant(r.params.get("version"), r.params.get("order"),
                                           r.params.get("dups"))), None)
    if fmt is not None:
        if fmt == "raw":
            return Negotiated(Format.RAW)
        if fmt == "car":
            params = car_in_accept.params if car_in_accept else {}
            return Negotiated(Format.CAR, _car_from_query(query, params))
        if fmt in _KNOWN_FORMATS:
            raise NotAcceptable(f"format={fmt} is not served here; use format=raw or format=car")
        raise InputError(f"unknown format {fmt!r}; use raw or car")
    for media in ranges:
        if media.type == MEDIA_RAW:
            return Negotiated(Format.RAW, by_accept=True)
        if media.type == MEDIA_CAR:
            if media is car_in_accept:
                return Negotiated(Format.CAR, _car_from_query(query, media.params), by_accept=True)
            continue  # a variant we cannot make; a later preference may do
        if media.type in _UNSUPPORTED_MEDIA:
            continue
        return Negotiated(Format.FILE)  # a browser (*/*, text/html, image/*, ...)
    if not ranges:
        return Negotiated(Format.FILE)
    raise NotAcceptable(f"cannot answer with any of {accept!r}; this gateway serves {MEDIA_RAW}, "
                        f"{MEDIA_CAR}; version=1 (order=dfs|unk, dups=y|n) and files")


def _car_from_query(query: Mapping[str, str], accepted: Mapping[str, str]) -> CarVariant:
    names = ("version", "order", "dups")
    values = [query.get(f"car-{name}", accepted.get(name)) for name in names]
    variant = _car_variant(*values)
    if variant is None:
        asked = ", ".join(f"{name}={value}" for name, value in zip(names, values, strict=True) if value)
        raise NotAcceptable(f"unsupported CAR variant ({asked}); this gateway sends version=1, "
                            "order=dfs (or unk) and dups=y or n")
    return variant


# --- dag-scope, entity-bytes, Range --------------------------------------------------------------

class DagScope(Enum):
    BLOCK = "block"
    ENTITY = "entity"
    ALL = "all"


@dataclass(frozen=True, slots=True)
class EntityBytes:
    """entity-bytes=from:to, inclusive; negative values count from the end, to=None is `*`."""

    first: int
    last: int | None

    def __str__(self) -> str:
        return f"{self.first}:{'*' if self.last is None else self.last}"

    def resolve(self, size: int) -> tuple[int, int] | None:
        """The inclusive byte range inside a file of size bytes; None if it holds no byte.

        InputError when the range lies wholly past the end of the file and the
        request said so with plain offsets (the spec's "known upfront" 400).
        """
        start = self.first if self.first >= 0 else max(size + self.first, 0)
        if self.first >= 0 and self.first >= size > 0 and (self.last is None or self.last >= 0):
            raise InputError(f"entity-bytes={self} starts past the end of the {size}-byte file")
        end = size - 1 if self.last is None else (self.last if self.last >= 0 else size + self.last)
        end = min(end, size - 1)
        return (start, end) if start <= end else None


@dataclass(frozen=True, slots=True)
class Scope:
    dag_scope: DagScope = DagScope.ALL
    entity_bytes: EntityBytes | None = None

    @property
    def label(self) -> str:
        return self.dag_scope.value + (f";bytes={self.entity_bytes}" if self.entity_bytes else "")


_ENTITY_BYTES = re.compile(r"^(-?\d{1,19}):(-?\d{1,19}|\*)$")


def parse_scope(query: Mapping[str, str]) -> Scope:
    """dag-scope and entity-bytes from the query; InputError (400) when malformed or contradictory."""
    raw_scope = query.get("dag-scope")
    try:
        scope = DagScope(raw_scope) if raw_scope is not None else None
    except ValueError:
        raise InputError(f"dag-scope must be block, entity or all, not {raw_scope!r}") from None
    raw_bytes = query.get("entity-bytes")
    if raw_bytes is None:
        return Scope(scope or DagScope.ALL)
    match = _ENTITY_BYTES.match(raw_bytes)
    if match is None:
        raise InputError(f"entity-bytes must be FROM:TO (integers, TO may be *), not {raw_bytes!r}")
    first = int(match[1])
    last = None if match[2] == "*" else int(match[2])
    if last is not None and 0 <= last < first:
        raise InputError(f"entity-bytes={raw_bytes}: TO is before FROM")
    if last is not None and first < 0 <= last:
        raise InputError(f"entity-bytes={raw_bytes}: a negative FROM needs a negative TO or *")
    if scope not in (None, DagScope.ENTITY):
        raise InputError(f"entity-bytes implies dag-scope=entity, not dag-scope={raw_scope}")
    return Scope(DagScope.ENTITY, EntityBytes(first, last))


@dataclass(frozen=True, slots=True)
class ByteRange:
    first: int
    last: int  # inclusive

    @property
    def length(self) -> int:
        return self.last - self.first + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.first}-{self.last}/{size}"


class Unsatisfiable(InputError):
    """The requested range holds no byte of the file."""

    http_status = 416

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size  # for Content-Range: bytes */size


_RANGE = re.compile(r"^bytes=(\d{0,19})-(\d{0,19})$")


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """One HTTP byte range (RFC 9110 §14.1.2) in a representation of size bytes.

    None means "send it all": no header, a malformed one, or several ranges
    (which a server may ignore). Unsatisfiable (416) when none of it exists.
    """
    if header is None:
        return None
    match = _RANGE.match(header.strip().replace(" ", ""))
    if match is None or (not match[1] and not match[2]):
        return None
    if not match[1]:  # bytes=-N: the last N bytes
        suffix = int(match[2])
        if suffix == 0 or size == 0:
            raise Unsatisfiable(f"range {header!r} holds no byte of {size}", size)
        return ByteRange(max(size - suffix, 0), size - 1)
    first = int(match[1])
    last = int(match[2]) if match[2] else max(first, size - 1)
    if last < first:
        return None  # invalid: ignore it, as RFC 9110 says
    if first >= size:
        raise Unsatisfiable(f"range {header!r} starts past the end of {size} bytes", size)
    return ByteRange(first, min(last, size - 1))


# --- Etags and headers ----------------------------------------------------------------------

def raw_etag(cid: Cid) -> str:
    return f'"{cid}.raw"'


def car_etag(root: Cid, segments: Sequence[str], scope: Scope, variant: CarVariant) -> str:
    """Weak, and different for every path, scope, byte range and dups: the bytes depend on all of them."""
    key = "\0".join(["/".join(segments), scope.label, "dfs", "y" if variant.dups else "n"])
    digest = hashlib.blake2b(key.encode(), digest_size=8).hexdigest()
    return f'W/"{root}.car.{digest}"'


def file_etag(cid: Cid) -> str:
    return f'"{cid}"'


def listing_etag(cid: Cid) -> str:
    return f'"DirIndex-artkeep1_CID-{cid}"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """If-None-Match with weak comparison (RFC 9110 §13.1.2)."""
    if not if_none_match:
        return False
    wanted = etag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == wanted:
            return True
    return False


def content_disposition(disposition: str, filename: str) -> str:
    """attachment|inline with a filename; non-ASCII names also as RFC 8187 filename*."""
    plain = "".join(ch if 0x20 <= ord(ch) < 0x7F and ch not in '"\\' else "_" for ch in filename)
    value = f'{disposition}; filename="{plain}"'
    if plain != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value


# --- paths --------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Resolved:
    """Where a content path leads, and every block read to get there."""

    root: Cid
    terminal: Cid
    chain: tuple[Cid, ...]  # the root, then the CID each segment names (X-Ipfs-Roots)
    path_blocks: tuple[tuple[Cid, bytes], ...]  # directory and shard blocks, in reading order


def split_path(raw: str) -> list[str]:
    """The segments of the part of a path after the CID (already percent-decoded)."""
    segments = [segment for segment in raw.split("/") if segment]
    if len(segments) > MAX_PATH_SEGMENTS:
        raise InputError(f"path has more than {MAX_PATH_SEGMENTS} segments")
    if any(segment in (".", "..") for segment in segments):
        raise InputError("path segments '.' and '..' are not allowed")
    return segments


def resolve(root: Cid, segments: Sequence[str], get_block: BlockGetter) -> Resolved:
    """Follow UnixFS names (basic and HAMT directories) from root; NotFound for a name that is not there."""
    read: list[tuple[Cid, bytes]] = []

    def recording(cid: Cid) -> bytes:
        block = get_block(cid)
        read.append((cid, block))
        return block

    current = root
    chain = [root]
    for segment in segments:
        if current.codec != DAG_PB:
            raise NotFound(f"no {segment!r} under {current}: it is {current.codec_name}, not a directory")
        here, block = current, recording(current)
        node = unixfs.decode_node(here, block)
        if node.unixfs.type == NodeType.DIRECTORY:
            found = next((link.hash for link in node.links if link.name == segment), None)
        elif node.unixfs.type == NodeType.HAMT_SHARD:
            hit = hamt.lookup(here, segment, _with_known(here, block, recording))
            found = hit.hash if hit else None
        else:
            raise NotFound(f"no {segment!r} under {current}: it is a {node.unixfs.type.name.lower()}")
        if found is None:
            raise NotFound(f"no {segment!r} in {current}")
        current = found
        chain.append(current)
    return Resolved(root, current, tuple(chain), tuple(read))


def _with_known(known: Cid, block: bytes, get_block: BlockGetter) -> BlockGetter:
    """get_block, except that the block already in hand is not read twice."""
    return lambda cid: block if cid == known else get_block(cid)


# --- which blocks a CAR holds ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CarPlan:
    """A CAR decided before the first byte goes out (so 400 and 404 can still be answered)."""

    resolved: Resolved
    scope: Scope
    terminal_block: bytes
    byte_range: tuple[int, int] | None = None  # set for entity-bytes on a file
    empty_range: bool = False  # entity-bytes selected no byte: the terminal block alone


def plan_car(root: Cid, segments: Sequence[str], scope: Scope, get_block: BlockGetter) -> CarPlan:
    resolved = resolve(root, segments, get_block)
    block = get_block(resolved.terminal)
    if scope.entity_bytes is None:
        return CarPlan(resolved, scope, block)
    node = unixfs_or_none(resolved.terminal, block)
    if node is None or node.unixfs.type not in (NodeType.FILE, NodeType.RAW):
        return CarPlan(resolved, scope, block)  # not a byte array: entity-bytes is ignored
    byte_range = scope.entity_bytes.resolve(unixfs.file_size(node))
    return CarPlan(resolved, scope, block, byte_range, empty_range=byte_range is None)


def unixfs_or_none(cid: Cid, block: bytes) -> UnixFsNode | None:
    """The UnixFS node, or None for data that is not UnixFS (DAG-CBOR, bare dag-pb)."""
    if cid.codec not in (RAW, DAG_PB):
        return None
    try:
        return unixfs.decode_node(cid, block)
    except UnixFsError:
        return None


@dataclass
class _Sections:
    """Deduplication (dups=n) and the identity rule, shared by every part of one CAR."""

    dups: bool
    seen: set[Cid] = field(default_factory=set)
    repeated: int = 0

    def admit(self, cid: Cid) -> bool:
        """Whether to send cid now (and, with dups=n, to walk below it)."""
        if cid in self.seen:
            if not self.dups:
                return False
            self.repeated += 1
            if self.repeated > MAX_REPEATED_SECTIONS:
                raise InputError(f"more than {MAX_REPEATED_SECTIONS} repeated blocks with dups=y")
        self.seen.add(cid)
        return True


def car_blocks(plan: CarPlan, get_block: BlockGetter, dups: bool) -> Iterator[tuple[Cid, bytes]]:
    """The CAR's blocks in order: the path's blocks, then the terminal's per scope; depth first.

    Identity CIDs are walked through but never sent. A block missing on the
    way raises from get_block; the caller ends the stream (the client sees a
    truncated CAR, as the spec says).
    """
    sections = _Sections(dups)
    for cid, block in plan.resolved.path_blocks:
        if sections.admit(cid) and cid.hash_code != IDENTITY:
            yield cid, block
    terminal = plan.resolved.terminal
    scope = plan.scope.dag_scope
    node = unixfs_or_none(terminal, plan.terminal_block)
    if scope == DagScope.BLOCK or plan.empty_range or (scope == DagScope.ENTITY and node is None):
        if sections.admit(terminal) and terminal.hash_code != IDENTITY:
            yield terminal, plan.terminal_block
        return
    if scope == DagScope.ALL or (node is not None and node.unixfs.type in (NodeType.FILE, NodeType.RAW)
                                 and plan.byte_range is None):
        yield from _walk(terminal, plan.terminal_block, get_block, sections, _all_links)
        return
    assert node is not None
    kind = node.unixfs.type
    if kind in (NodeType.FILE, NodeType.RAW) and plan.byte_range is not None:
        first, last = plan.byte_range
        for piece in file_pieces(terminal, get_block, first, last, root_block=plan.terminal_block):
            if sections.admit(piece.cid) and piece.cid.hash_code != IDENTITY:
                yield piece.cid, piece.block
    elif kind == NodeType.HAMT_SHARD:  # every shard, none of the entries
        yield from _walk(terminal, plan.terminal_block, get_block, sections, _child_shards)
    elif sections.admit(terminal) and terminal.hash_code != IDENTITY:  # a directory, a symlink
        yield terminal, plan.terminal_block


LinkChooser = Callable[[Cid, bytes], list[Cid]]


def _all_links(cid: Cid, block: bytes) -> list[Cid]:
    return dag.links_of(cid, block)


def _child_shards(cid: Cid, block: bytes) -> list[Cid]:
    node = unixfs.decode_node(cid, block)
    if node.unixfs.type != NodeType.HAMT_SHARD or node.unixfs.fanout is None:
        return []
    hamt.check_fanout(node.unixfs.fanout)
    width = len(f"{node.unixfs.fanout - 1:X}")  # a child shard's link is named by its bucket alone
    return [link.hash for link in node.links if len(link.name or "") == width]


def _walk(root: Cid, root_block: bytes, get_block: BlockGetter, sections: _Sections,
          links: LinkChooser) -> Iterator[tuple[Cid, bytes]]:
    """Depth-first pre-order from root, following `links`; repeats only as sections allows."""
    stack = [root]
    while stack:
        cid = stack.pop()
        if not sections.admit(cid):
            continue
        block = root_block if cid == root else get_block(cid)  # no DAG links back to its root
        if cid.hash_code != IDENTITY:
            yield cid, block
        if cid.codec != RAW:
            stack.extend(reversed(links(cid, block)))


# --- file bytes -------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FilePiece:
    """One block of a UnixFS file, with the file bytes it holds itself and where they start."""

    cid: Cid
    block: bytes
    data: bytes
    offset: int


def file_pieces(root: Cid, get_block: BlockGetter, first: int, last: int,
                root_block: bytes | None = None) -> Iterator[FilePiece]:
    """The blocks needed for file bytes [first, last] (inclusive), depth first, skipping by blocksizes."""
    stack: list[tuple[Cid, int, int]] = [(root, 0, 0)]  # cid, offset, depth
    while stack:
        cid, offset, depth = stack.pop()
        if depth > unixfs.MAX_TREE_DEPTH:
            raise UnixFsError(f"UnixFS tree deeper than {unixfs.MAX_TREE_DEPTH} levels at {cid}")
        block = root_block if depth == 0 and root_block is not None else get_block(cid)
        node = unixfs.decode_node(cid, block)
        if node.unixfs.type not in (NodeType.FILE, NodeType.RAW):
            raise UnixFsError(f"{cid} is a {node.unixfs.type.name.lower()}, not a file")
        data = node.unixfs.data or b""
        yield FilePiece(cid, block, data, offset)
        sizes = node.unixfs.blocksizes
        if len(sizes) != len(node.links):
            raise UnixFsError(f"{cid} has {len(node.links)} links but {len(sizes)} blocksizes")
        children = []
        position = offset + len(data)
        for link, size in zip(node.links, sizes, strict=True):
            if position > last:
                break
            if size and position + size > first:
                children.append((link.hash, position, depth + 1))
            position += size
        stack.extend(reversed(children))


def file_bytes(root: Cid, get_block: BlockGetter, first: int, last: int,
               root_block: bytes | None = None) -> Iterator[bytes]:
    """File bytes [first, last] (inclusive), one verified block at a time."""
    for piece in file_pieces(root, get_block, first, last, root_block):
        start = max(first - piece.offset, 0)
        end = min(last - piece.offset + 1, len(piece.data))
        if start < end:
            yield piece.data[start:end] if (start, end) != (0, len(piece.data)) else piece.data


# --- what a browser gets --------------------------------------------------------------------------

_BY_EXTENSION: Final = {
    "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif",
    "webp": "image/webp", "avif": "image/avif", "heic": "image/heic", "jxl": "image/jxl",
    "svg": "image/svg+xml", "bmp": "image/bmp", "ico": "image/x-icon", "tif": "image/tiff",
    "tiff": "image/tiff", "mp4": "video/mp4", "webm": "video/webm", "mov": "video/quicktime",
    "mp3": "audio/mpeg", "ogg": "audio/ogg", "flac": "audio/flac", "wav": "audio/wav",
    "pdf": "application/pdf", "zip": "application/zip", "gz": "application/gzip",
    "tar": "application/x-tar", "car": MEDIA_CAR, "json": "application/json",
    "txt": "text/plain; charset=utf-8", "md": "text/markdown; charset=utf-8",
    "csv": "text/csv; charset=utf-8", "html": "text/html; charset=utf-8",
    "htm": "text/html; charset=utf-8", "xhtml": "application/xhtml+xml", "xml": "application/xml",
    "css": "text/css; charset=utf-8", "js": "text/javascript; charset=utf-8",
    "mjs": "text/javascript; charset=utf-8", "wasm": "application/wasm",
    "safetensors": "application/octet-stream", "yaml": "text/plain; charset=utf-8",
}
_MAGIC: Final = (
    (0, b"\x89PNG\r\n\x1a\n", "image/png"), (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"), (0, b"GIF89a", "image/gif"), (0, b"%PDF-", "application/pdf"),
    (0, b"\x1aE\xdf\xa3", "video/webm"), (0, b"OggS", "audio/ogg"), (0, b"fLaC", "audio/flac"),
    (0, b"ID3", "audio/mpeg"), (0, b"II*\x00", "image/tiff"), (0, b"MM\x00*", "image/tiff"),
    (0, b"\xff\x0a", "image/jxl"), (0, b"\x00\x00\x00\x0cJXL \r\n\x87\n", "image/jxl"),
    (0, b"PK\x03\x04", "application/zip"), (0, b"\x1f\x8b", "application/gzip"),
    (0, b"\x00\x00\x01\x00", "image/x-icon"), (0, b"\x00asm", "application/wasm"),
)
_FTYP_BRANDS: Final = {b"avif": "image/avif", b"avis": "image/avif", b"heic": "image/heic",
                       b"heix": "image/heic", b"mif1": "image/heif", b"qt  ": "video/quicktime"}
# Types a browser would run script in (as a document, or loaded by one): served with
# `Content-Security-Policy: sandbox`, so content from one pin cannot act on this origin.
ACTIVE_TYPES: Final = frozenset({"text/html", "image/svg+xml", "application/xhtml+xml", "application/xml",
                                 "text/xml", "text/javascript", "application/javascript"})
OCTET_STREAM: Final = "application/octet-stream"


def content_type(name: str | None, head: bytes) -> str:
    """The file's type: from its name's extension if known, else sniffed from its first bytes."""
    if name and "." in name:
        known = _BY_EXTENSION.get(name.rsplit(".", 1)[1].lower())
        if known is not None:
            return known
    return sniff(head)


def sniff(head: bytes) -> str:
    for offset, magic, media in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return media
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(head[8:12], "video/mp4")
    if head[:2] == b"BM" and len(head) >= 14 and int.from_bytes(head[2:6], "little") > 14:
        return "image/bmp"
    text = _as_text(head)
    if text is None:
        return OCTET_STREAM
    lowered = text.lstrip().lower()
    if lowered.startswith(("<!doctype html", "<html", "<head", "<body", "<script", "<iframe")):
        return "text/html; charset=utf-8"
    if lowered.startswith("<svg") or (lowered.startswith("<?xml") and "<svg" in lowered):
        return "image/svg+xml"
    if lowered.startswith("<?xml"):
        return "application/xml"
    return "text/plain; charset=utf-8"


def _as_text(head: bytes) -> str | None:
    """head as UTF-8 text, if it looks like text (a character cut at the end is fine)."""
    body = head.removeprefix(b"\xef\xbb\xbf")
    for cut in range(4):
        try:
            text = body[:len(body) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        if any(ord(ch) < 0x20 and ch not in "\t\n\r\f" for ch in text):
            return None
        return text
    return None


def is_active(media_type: str) -> bool:
    return media_type.split(";", 1)[0].strip() in ACTIVE_TYPES


@dataclass(frozen=True, slots=True)
class ListingEntry:
    name: str
    cid: Cid
    size: int | None  # Tsize (DAG bytes), as gateways show for speed


def directory_entries(cid: Cid, block: bytes, get_block: BlockGetter) -> Iterator[ListingEntry]:
    node = unixfs.decode_node(cid, block)
    if node.unixfs.type == NodeType.HAMT_SHARD:
        for name, link in hamt.entries(cid, get_block):
            yield ListingEntry(name, link.hash, link.tsize)
        return
    for link in node.links:
        yield ListingEntry(link.name or "", link.hash, link.tsize)


def find_index(cid: Cid, block: bytes, get_block: BlockGetter) -> Cid | None:
    """The CID of index.html in a directory, if it has one."""
    node = unixfs.decode_node(cid, block)
    if node.unixfs.type == NodeType.HAMT_SHARD:
        hit = hamt.lookup(cid, "index.html", get_block)
        return hit.hash if hit else None
    return next((link.hash for link in node.links if link.name == "index.html"), None)


def render_listing(path: str, cid: Cid, entries: Sequence[ListingEntry], truncated: bool) -> str:
    """A small HTML page listing a directory; every name escaped, every link percent-encoded."""
    base = path if path.endswith("/") else path + "/"
    rows = []
    if base.count("/") > 3:  # /ipfs/{cid}/sub/ has a parent inside the DAG
        rows.append('<tr><td><a href="../">..</a></td><td></td><td></td></tr>')
    for entry in entries:
        href = html.escape(quote(entry.name, safe=""), quote=True)
        size = "" if entry.size is None else f"{entry.size:,}"
        rows.append(f'<tr><td><a href="{href}">{html.escape(entry.name)}</a></td>'
                    f"<td><code>{entry.cid}</code></td><td>{size}</td></tr>")
    more = f"<p>Only the first {len(entries):,} entries are shown.</p>" if truncated else ""
    title = html.escape(path)
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" + title + "</title>"
            "<style>body{font-family:sans-serif;margin:2em}td{padding:.2em 1em .2em 0}</style></head>"
            f"<body><h1>{title}</h1><p><code>{cid}</code></p>"
            "<table><tr><th>Name</th><th>CID</th><th>Size</th></tr>" + "".join(rows) + "</table>"
            + more + "</body></html>\n")
