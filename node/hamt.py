"""HAMT-sharded UnixFS directories: build the exact shard tree Kubo (boxo) writes, and read one back.

Pure: entries in, blocks out through a callback; blocks in through a getter.
It must never accept a shard it cannot prove well formed (fanout outside
8..1024, a bitfield that disagrees with the links, a name filed under the wrong
bucket, a tree deeper than the 64-bit hash allows), and never raise anything
but UnixFsError for bad bytes.

The byte layout follows boxo `ipld/unixfs/hamt/hamt.go` (Shard.Node, swapValue,
childer), `hamt/util.go` (hashBits, murmur3Hash), go-bitfield `bitfield.go` and
`ipld/unixfs/unixfs.go` (HAMTShardData):

- key hash: murmur3-x64-128 of the UTF-8 name with seed 0, keep h1 (the first
  64-bit half), as 8 big-endian bytes (spaolacci/murmur3 Digest64.Sum);
- each level consumes log2(fanout) bits of that hash, most significant first;
- a bucket holding one entry is a value link named hex(bucket) + entry name; a
  bucket holding two or more becomes a child shard linked as hex(bucket) alone;
  hex is uppercase, zero-padded to len("%X" % (fanout - 1)) digits;
- links are ordered by bucket index;
- shard Data = UnixFS {Type 5, Data: bitfield, hashType 0x22, fanout}; no
  filesize, no blocksizes. The bitfield is big-endian (bucket i is bit i of the
  integer), fanout/8 bytes with leading zero bytes dropped (Bitfield.Bytes);
- a shard link's Tsize is the shard block length plus its links' Tsizes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import mmh3

from node import dagpb
from node.cid import DAG_PB, Cid
from node.dagpb import PBLink, PBNode
from node.errors import CodecError, UnixFsError
from node.profiles import Profile
from node.unixfs import (
    BlockGetter,
    BlockSink,
    DagLink,
    DirEntry,
    NodeType,
    UnixFsData,
    check_entry_name,
    decode_node,
    emit_dag_pb,
)

MURMUR3_X64_64 = 0x22
HASH_BITS = 64
# boxo hamt.go maximumHamtWidth; larger fanouts let one block claim huge
# bitfields and link lists (CVE-2023-23625).
MAX_FANOUT = 1024


def check_fanout(fanout: int) -> int:
    """Return log2(fanout), or raise UnixFsError unless fanout is a power of two, a multiple of 8, ≤ 1024."""
    if not 8 <= fanout <= MAX_FANOUT or fanout & (fanout - 1):
        raise UnixFsError(f"invalid HAMT fanout {fanout}: must be a power of two from 8 to {MAX_FANOUT}")
    return fanout.bit_length() - 1


def key_hash(name: str) -> int:
    """boxo's HAMT key: the first 64 bits of murmur3-x64-128(name), read big-endian."""
    # Keywords matter: mmh3 5.x ignores a positional `signed` and returns signed ints.
    h1, _ = mmh3.hash64(dagpb.encode_name(name), seed=0, x64arch=True, signed=False)
    return int(h1) & (1 << HASH_BITS) - 1


def _check_depth(depth: int, bits: int) -> None:
    # Level `depth` (root = 0) needs bits (depth*bits, (depth+1)*bits] of the hash (boxo hashBits.Next).
    if (depth + 1) * bits > HASH_BITS:
        raise UnixFsError("sharded directory too deep: the 64-bit name hash is used up")


def _bucket(hash_: int, depth: int, bits: int) -> int:
    _check_depth(depth, bits)
    return (hash_ >> (HASH_BITS - (depth + 1) * bits)) & ((1 << bits) - 1)


def _prefix_width(fanout: int) -> int:
    return len(f"{fanout - 1:X}")


def _shard_data(occupied: int, fanout: int) -> bytes:
    bitfield = occupied.to_bytes(fanout // 8, "big").lstrip(b"\0")
    return UnixFsData(NodeType.HAMT_SHARD, data=bitfield, hash_type=MURMUR3_X64_64, fanout=fanout).encode()


# --- building --------------------------------------------------------------

def build(entries: Sequence[DirEntry], profile: Profile, sink: BlockSink | None = None) -> DagLink:
    """The HAMT root of a directory holding entries, byte-identical to Kubo's for this profile.

    Every shard block goes to sink. The tree depends only on the set of
    entries, not their order (boxo prunes on delete to keep it that way).
    """
    bits = check_fanout(profile.hamt_fanout)
    hashed: list[tuple[int, DirEntry]] = []
    names: set[str] = set()
    for entry in entries:
        check_entry_name(entry.name)
        if entry.name in names:
            raise UnixFsError(f"duplicate directory entry {entry.name!r}")
        names.add(entry.name)
        hashed.append((key_hash(entry.name), entry))
    return _build_shard(hashed, 0, bits, profile, sink)


def _build_shard(hashed: list[tuple[int, DirEntry]], depth: int, bits: int, profile: Profile,
                 sink: BlockSink | None) -> DagLink:
    fanout = 1 << bits
    buckets: dict[int, list[tuple[int, DirEntry]]] = {}
    for item in hashed:
        buckets.setdefault(_bucket(item[0], depth, bits), []).append(item)
    width = _prefix_width(fanout)
    links: list[PBLink] = []
    occupied = 0
    for index in sorted(buckets):
        occupied |= 1 << index
        prefix = f"{index:0{width}X}"
        members = buckets[index]
        if len(members) == 1:
            entry = members[0][1]
            links.append(PBLink(entry.link.cid, prefix + entry.name, entry.link.tsize))
        else:
            child = _build_shard(members, depth + 1, bits, profile, sink)
            links.append(PBLink(child.cid, prefix, child.tsize))
    block = dagpb.encode(PBNode(tuple(links), _shard_data(occupied, fanout)))
    cid, length = emit_dag_pb((block,), profile, sink)
    return DagLink(cid, length + sum(link.tsize or 0 for link in links), 0)


# --- reading ---------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Slot:
    bucket: int
    link: PBLink
    name: str | None  # the entry name for a value link, None for a child shard


def _read_shard(cid: Cid, get_block: BlockGetter, fanout: int | None, child: bool) -> tuple[int, list[_Slot]]:
    """Decode and check one shard node; return its fanout and its links by bucket."""
    if cid.codec != DAG_PB:
        raise UnixFsError(f"HAMT shard {cid} is {cid.codec_name}, not dag-pb")
    try:
        node = decode_node(cid, get_block(cid))
    except UnixFsError:
        raise
    except CodecError as exc:  # a dag-pb error is a broken shard to the caller
        raise UnixFsError(f"HAMT shard {cid}: {exc}") from None
    data = node.unixfs
    if data.type != NodeType.HAMT_SHARD:
        raise UnixFsError(f"{cid} is a {data.type.name.lower()}, not a HAMT shard")
    if data.hash_type != MURMUR3_X64_64:
        raise UnixFsError(f"HAMT shard {cid} uses hash {data.hash_type}, only murmur3-x64-64 (0x22) is known")
    if data.fanout is None:
        raise UnixFsError(f"HAMT shard {cid} has no fanout")
    check_fanout(data.fanout)
    # Mixed fanouts would change how many hash bits each level takes; no writer does it.
    if fanout is not None and data.fanout != fanout:
        raise UnixFsError(f"HAMT shard {cid} has fanout {data.fanout}, its parent {fanout}")
    bitfield = data.data or b""
    if len(bitfield) > data.fanout // 8:
        raise UnixFsError(f"HAMT shard {cid}: bitfield of {len(bitfield)} bytes for fanout {data.fanout}")
    occupied = int.from_bytes(bitfield, "big")
    buckets = [i for i in range(data.fanout) if occupied >> i & 1]
    if len(buckets) != len(node.links):
        raise UnixFsError(f"HAMT shard {cid}: bitfield marks {len(buckets)} buckets but it has "
                          f"{len(node.links)} links")
    # An empty child shard is never written (boxo prunes it) and, holding no
    # names, could be linked from many buckets at once; refusing it keeps every
    # subtree pinned to one hash path, so a shared child cannot multiply work.
    if child and not buckets:
        raise UnixFsError(f"HAMT shard {cid} is an empty child shard")
    width = _prefix_width(data.fanout)
    slots = []
    for bucket, link in zip(buckets, node.links, strict=True):
        label = link.name or ""
        if label[:width] != f"{bucket:0{width}X}":
            raise UnixFsError(f"HAMT shard {cid}: link {label!r} is not named for bucket {bucket:0{width}X}")
        name = label[width:] or None
        if name is not None:
            check_entry_name(name)
        slots.append(_Slot(bucket, link, name))
    return data.fanout, slots


def entries(root: Cid, get_block: BlockGetter) -> Iterator[tuple[str, PBLink]]:
    """Every (name, link) of a sharded directory, in hash order, at any depth.

    The yielded link carries the entry name (without its bucket prefix), CID and Tsize.
    Readers are lenient only where boxo's reader is and no safety is at stake: a
    bitfield that keeps its leading zero bytes, a child shard holding one entry.
    """
    fanout, slots = _read_shard(root, get_block, None, child=False)
    yield from _walk(slots, get_block, fanout, 0, 0)


def _walk(slots: list[_Slot], get_block: BlockGetter, fanout: int, depth: int,
          path: int) -> Iterator[tuple[str, PBLink]]:
    bits = fanout.bit_length() - 1
    for slot in slots:
        here = path << bits | slot.bucket
        if slot.name is None:
            _check_depth(depth + 1, bits)
            _, children = _read_shard(slot.link.hash, get_block, fanout, child=True)
            yield from _walk(children, get_block, fanout, depth + 1, here)
            continue
        # The name must hash to the path that leads here, or lookups would miss it.
        if key_hash(slot.name) >> (HASH_BITS - (depth + 1) * bits) != here:
            raise UnixFsError(f"HAMT entry {slot.name!r} is filed under the wrong bucket")
        yield slot.name, PBLink(slot.link.hash, slot.name, slot.link.tsize)


def lookup(root: Cid, name: str, get_block: BlockGetter) -> PBLink | None:
    """The link stored under name, or None; reads one shard per level."""
    hash_ = key_hash(name)
    fanout, slots = _read_shard(root, get_block, None, child=False)
    bits = fanout.bit_length() - 1
    depth = 0
    while True:
        bucket = _bucket(hash_, depth, bits)
        slot = next((s for s in slots if s.bucket == bucket), None)
        if slot is None:
            return None
        if slot.name is not None:
            if slot.name != name:
                return None
            return PBLink(slot.link.hash, slot.name, slot.link.tsize)
        depth += 1
        _check_depth(depth, bits)
        _, slots = _read_shard(slot.link.hash, get_block, fanout, child=True)
