"""UnixFS: turn a byte stream into the dag-pb tree Kubo would build, and read it back.

Pure: bytes in, blocks out through a callback; no files, sockets or clock.
The byte layout follows boxo exactly (see ../shared/spec/unixfs-cid-profiles.json):
dag-pb leaves are Type=File nodes, multi-chunk roots carry filesize and one
unpacked blocksizes entry per child, chunk links carry an empty Name and a
Tsize, and the tree is balanced with every leaf at the same depth.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from node import dagpb, protobuf
from node.cid import DAG_PB, RAW, Cid, sha256_cid
from node.dagpb import PBLink, PBNode
from node.errors import UnixFsError
from node.profiles import Profile

Bytes = bytes | bytearray | memoryview
# Receives each new block as a CID and the parts whose concatenation is the
# block, so a caller that only hashes never pays for joining a 1 MiB chunk.
BlockSink = Callable[[Cid, Sequence[Bytes]], None]
# Returns the verified bytes of a block (the store or a fetcher decides how).
BlockGetter = Callable[[Cid], bytes]

MAX_TREE_DEPTH = 32  # a balanced tree of 2 MiB chunks and 2 links is still far shallower


class NodeType(IntEnum):
    RAW = 0
    DIRECTORY = 1
    FILE = 2
    METADATA = 3
    SYMLINK = 4
    HAMT_SHARD = 5


@dataclass(frozen=True, slots=True)
class UnixFsData:
    """The UnixFS protobuf message carried in a dag-pb node's Data field."""

    type: NodeType
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: tuple[int, ...] = ()
    hash_type: int | None = None
    fanout: int | None = None
    mode: int | None = None
    mtime: tuple[int, int | None] | None = None

    def encode(self) -> bytes:
        out = [protobuf.varint_field(1, int(self.type))]
        if self.data:
            out.append(protobuf.length_delimited(2, self.data))
        if self.filesize is not None:
            out.append(protobuf.varint_field(3, self.filesize))
        out.extend(protobuf.varint_field(4, size) for size in self.blocksizes)
        if self.hash_type is not None:
            out.append(protobuf.varint_field(5, self.hash_type))
        if self.fanout is not None:
            out.append(protobuf.varint_field(6, self.fanout))
        if self.mode is not None:
            out.append(protobuf.varint_field(7, self.mode))
        if self.mtime is not None:
            seconds, nanos = self.mtime
            body = protobuf.varint_field(1, seconds & ((1 << 64) - 1))
            if nanos is not None:
                body += protobuf.key(2, 5) + nanos.to_bytes(4, "little")
            out.append(protobuf.length_delimited(8, body))
        return b"".join(out)


def decode_data(buf: Bytes) -> UnixFsData:
    try:
        return _decode_data(buf)
    except (protobuf.WireError, ValueError) as exc:
        raise UnixFsError(f"invalid UnixFS data: {exc}") from None


def _decode_data(buf: Bytes) -> UnixFsData:
    values: dict[str, object] = {}
    blocksizes: list[int] = []
    for number, wire_type, value in protobuf.fields(buf):
        if number == 4 and wire_type == protobuf.LEN and isinstance(value, memoryview):
            # Accept packed blocksizes too: proto2 readers must.
            pos = 0
            while pos < len(value):
                size, pos = protobuf.decode_varint(value, pos)
                blocksizes.append(size)
            continue
        if number == 4 and isinstance(value, int):
            blocksizes.append(value)
            continue
        name = {1: "type", 2: "data", 3: "filesize", 5: "hash_type", 6: "fanout", 7: "mode",
                8: "mtime"}.get(number)
        if name is None:
            raise UnixFsError(f"invalid UnixFS data: unknown field {number}")
        if name in values:
            raise UnixFsError(f"invalid UnixFS data: repeated field {name}")
        expect_bytes = name in ("data", "mtime")
        if expect_bytes != isinstance(value, memoryview):
            raise UnixFsError(f"invalid UnixFS data: field {name} has the wrong wire type")
        values[name] = value
    if "type" not in values:
        raise UnixFsError("invalid UnixFS data: no Type")
    raw_type = values["type"]
    assert isinstance(raw_type, int)
    try:
        node_type = NodeType(raw_type)
    except ValueError:
        raise UnixFsError(f"invalid UnixFS data: unknown Type {raw_type}") from None
    data = values.get("data")
    mtime = values.get("mtime")
    return UnixFsData(
        type=node_type,
        data=bytes(data) if isinstance(data, memoryview) else None,
        filesize=_optional_int(values.get("filesize")),
        blocksizes=tuple(blocksizes),
        hash_type=_optional_int(values.get("hash_type")),
        fanout=_optional_int(values.get("fanout")),
        mode=_optional_int(values.get("mode")),
        mtime=_decode_mtime(mtime) if isinstance(mtime, memoryview) else None,
    )


def _optional_int(value: object) -> int | None:
    return value if isinstance(value, int) else None


def _decode_mtime(buf: memoryview) -> tuple[int, int | None]:
    seconds, nanos = 0, None
    for number, _, value in protobuf.fields(buf):
        if number == 1 and isinstance(value, int):
            seconds = value - (1 << 64) if value >= 1 << 63 else value
        elif number == 2 and isinstance(value, int):
            nanos = value
        else:
            raise UnixFsError("invalid UnixFS mtime")
    return seconds, nanos


@dataclass(frozen=True, slots=True)
class DagLink:
    """A finished sub-DAG: its root CID, Tsize (cumulative block bytes) and file bytes."""

    cid: Cid
    tsize: int
    filesize: int


def emit_dag_pb(node_parts: Sequence[Bytes], profile: Profile, sink: BlockSink | None) -> tuple[Cid, int]:
    cid = sha256_cid(sha256_of(node_parts), DAG_PB, profile.cid_version)
    if sink is not None:
        sink(cid, node_parts)
    return cid, sum(len(part) for part in node_parts)


def sha256_of(parts: Sequence[Bytes]) -> bytes:
    """The sha2-256 digest of the parts joined (without joining them)."""
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part)
    return hasher.digest()


@dataclass
class FileBuilder:
    """Builds one file's balanced UnixFS DAG, chunk by chunk, in bounded memory.

    Feed chunks of exactly profile.chunk_size bytes (only the last may be
    shorter) to add_chunk, then call finish. Memory holds at most
    file_max_links pending links per tree level.
    """

    profile: Profile
    sink: BlockSink | None = None
    _levels: list[list[DagLink]] = field(default_factory=lambda: [[]])

    def add_chunk(self, chunk: Bytes) -> None:
        parts = self.leaf_parts(chunk)
        self.add_leaf(len(chunk), parts, sha256_of(parts))

    def leaf_parts(self, chunk: Bytes) -> tuple[Bytes, ...]:
        """The chunk's leaf block, in parts: the chunk itself if leaves are raw, else wrapped in dag-pb."""
        if len(chunk) > self.profile.chunk_size:
            raise ValueError("chunk larger than the profile's chunk size")
        if not chunk or self.profile.raw_leaves:
            return (chunk,)
        size = len(chunk)
        size_varint = protobuf.encode_varint(size)
        unixfs_len = 1 + 1 + 1 + len(size_varint) + size + 1 + len(size_varint)
        prefix = b"\x0a" + protobuf.encode_varint(unixfs_len) + b"\x08\x02\x12" + size_varint
        suffix = b"\x18" + size_varint
        return (prefix, chunk, suffix)

    def add_leaf(self, size: int, parts: tuple[Bytes, ...], digest: bytes) -> None:
        """Add the next chunk (size bytes) as the leaf block parts, whose sha2-256 digest is given.

        So the importer can hash chunks on other threads and add them in order.
        """
        if size == 0:
            return
        raw = self.profile.raw_leaves
        cid = sha256_cid(digest, RAW if raw else DAG_PB, 1 if raw else self.profile.cid_version)
        if self.sink is not None:
            self.sink(cid, parts)
        self._push(0, DagLink(cid, size if raw else sum(len(part) for part in parts), size))

    def finish(self) -> DagLink:
        levels = self._levels
        if not levels[0] and len(levels) == 1:
            return self._empty_file()
        level = 0
        while level < len(levels) - 1:
            if levels[level]:
                node = self._internal_node(levels[level])
                levels[level] = []
                self._push(level + 1, node)
            level += 1
        top = levels[-1]
        if len(levels) == 1 and len(top) == 1:
            return top[0]
        return self._internal_node(top)

    def _push(self, level: int, link: DagLink) -> None:
        levels = self._levels
        if len(levels) == level:
            levels.append([])
        if len(levels[level]) == self.profile.file_max_links:
            node = self._internal_node(levels[level])
            levels[level] = []
            self._push(level + 1, node)
        levels[level].append(link)

    def _internal_node(self, children: list[DagLink]) -> DagLink:
        filesize = sum(child.filesize for child in children)
        unixfs = UnixFsData(NodeType.FILE, filesize=filesize,
                            blocksizes=tuple(child.filesize for child in children))
        node = PBNode(tuple(PBLink(child.cid, "", child.tsize) for child in children), unixfs.encode())
        block = dagpb.encode(node)
        cid, length = emit_dag_pb((block,), self.profile, self.sink)
        return DagLink(cid, length + sum(child.tsize for child in children), filesize)

    def _empty_file(self) -> DagLink:
        if self.profile.raw_leaves:
            cid = sha256_cid(hashlib.sha256(b"").digest(), RAW, 1)
            if self.sink is not None:
                self.sink(cid, (b"",))
            return DagLink(cid, 0, 0)
        block = dagpb.encode(PBNode((), UnixFsData(NodeType.FILE, filesize=0).encode()))
        cid, length = emit_dag_pb((block,), self.profile, self.sink)
        return DagLink(cid, length, 0)


def build_bytes(data: Bytes, profile: Profile, sink: BlockSink | None = None) -> DagLink:
    """The UnixFS DAG of an in-memory byte string."""
    builder = FileBuilder(profile, sink)
    view = memoryview(data)
    for start in range(0, len(view), profile.chunk_size):
        builder.add_chunk(view[start:start + profile.chunk_size])
    return builder.finish()


@dataclass(frozen=True, slots=True)
class DirEntry:
    name: str
    link: DagLink


def check_entry_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise UnixFsError(f"invalid directory entry name {name!r}")


def symlink(target: str, profile: Profile, sink: BlockSink | None = None) -> DagLink:
    data = UnixFsData(NodeType.SYMLINK, data=dagpb.encode_name(target)).encode()
    block = dagpb.encode(PBNode((), data))
    cid, length = emit_dag_pb((block,), profile, sink)
    return DagLink(cid, length, 0)


def directory(entries: Sequence[DirEntry], profile: Profile, sink: BlockSink | None = None) -> DagLink:
    """A UnixFS directory of entries, basic or HAMT-sharded as the profile decides."""
    ordered = sorted(entries, key=lambda entry: dagpb.encode_name(entry.name))
    names = set()
    for entry in ordered:
        check_entry_name(entry.name)
        if entry.name in names:
            raise UnixFsError(f"duplicate directory entry {entry.name!r}")
        names.add(entry.name)
    node = PBNode(tuple(PBLink(e.link.cid, e.name, e.link.tsize) for e in ordered),
                  UnixFsData(NodeType.DIRECTORY).encode())
    if _needs_sharding(node, profile):
        from node import hamt

        return hamt.build(ordered, profile, sink)
    block = dagpb.encode(node)
    cid, length = emit_dag_pb((block,), profile, sink)
    return DagLink(cid, length + sum(e.link.tsize for e in ordered), 0)


def _needs_sharding(node: PBNode, profile: Profile) -> bool:
    if profile.hamt_size_estimation == "links-bytes":
        estimate = sum(len(dagpb.encode_name(link.name or "")) + len(bytes(link.hash))
                       for link in node.links)
    else:
        estimate = len(dagpb.encode(node))
    return estimate > profile.hamt_threshold


def wrap(name: str, link: DagLink, profile: Profile, sink: BlockSink | None = None) -> DagLink:
    """Kubo's `add -w`: a directory holding link under name."""
    return directory([DirEntry(name, link)], profile, sink)


# --- reading ---------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class UnixFsNode:
    """A decoded UnixFS node (raw blocks are presented as a Raw node)."""

    cid: Cid
    links: tuple[PBLink, ...]
    unixfs: UnixFsData


def decode_node(cid: Cid, block: bytes) -> UnixFsNode:
    if cid.codec == RAW:
        return UnixFsNode(cid, (), UnixFsData(NodeType.RAW, data=block, filesize=len(block)))
    if cid.codec != DAG_PB:
        raise UnixFsError(f"{cid} is {cid.codec_name}, not UnixFS")
    pb = dagpb.decode(block)
    if pb.data is None:
        raise UnixFsError(f"{cid} is a dag-pb node without UnixFS data")
    return UnixFsNode(cid, pb.links, decode_data(pb.data))


def read_file(cid: Cid, get_block: BlockGetter) -> Iterator[bytes]:
    """Stream a UnixFS file's bytes, depth first, fetching one block at a time."""
    yield from _read(cid, get_block, 0)


def _read(cid: Cid, get_block: BlockGetter, depth: int) -> Iterator[bytes]:
    if depth > MAX_TREE_DEPTH:
        raise UnixFsError(f"UnixFS tree deeper than {MAX_TREE_DEPTH} levels at {cid}")
    node = decode_node(cid, get_block(cid))
    kind = node.unixfs.type
    if kind not in (NodeType.FILE, NodeType.RAW):
        raise UnixFsError(f"{cid} is a {kind.name.lower()}, not a file")
    if node.unixfs.data:
        yield node.unixfs.data
    for link in node.links:
        yield from _read(link.hash, get_block, depth + 1)


def file_size(node: UnixFsNode) -> int:
    if node.unixfs.filesize is not None:
        return node.unixfs.filesize
    return len(node.unixfs.data or b"")
