"""Walk a DAG of any codec we know: the links of a block, and every block under a root.

Pure: blocks come from a getter the caller passes. Traversal is iterative
(no recursion limit to hit) and visits each CID once, depth first, in link
order: the order of `ipfs dag export` and of a trustless gateway's CAR with
order=dfs, dups=n.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from node import dagcbor, dagpb
from node.cid import DAG_CBOR, DAG_PB, RAW, Cid
from node.errors import CodecError

BlockGetter = Callable[[Cid], bytes]
HasBlock = Callable[[Cid], bool]


def links_of(cid: Cid, block: bytes) -> list[Cid]:
    if cid.codec == RAW:
        return []
    if cid.codec == DAG_PB:
        return [link.hash for link in dagpb.decode(block).links]
    if cid.codec == DAG_CBOR:
        return list(dagcbor.links(dagcbor.decode(block)))
    raise CodecError(f"{cid}: cannot follow links of codec {cid.codec_name}")


def _is_leaf(cid: Cid) -> bool:
    return cid.codec == RAW


def walk(root: Cid, get_block: BlockGetter) -> Iterator[tuple[Cid, bytes]]:
    """Every block of the DAG under root, each once, depth-first pre-order."""
    for cid, block in walk_readable(root, get_block):
        assert block is not None  # get_block raises rather than answer None
        yield cid, block


def walk_readable(root: Cid, read: Callable[[Cid], bytes | None]) -> Iterator[tuple[Cid, bytes | None]]:
    """walk() for a reader that answers None for a block it cannot give (missing, damaged): that block
    comes out as None and what lies under it is not seen."""
    seen: set[Cid] = set()
    stack = [root]
    while stack:
        cid = stack.pop()
        if cid in seen:
            continue
        seen.add(cid)
        block = read(cid)
        yield cid, block
        if block is not None:
            stack.extend(reversed(links_of(cid, block)))


def missing(root: Cid, get_block: BlockGetter, has_block: HasBlock) -> Iterator[Cid]:
    """The CIDs under root that are absent, without reading raw leaves.

    A missing inner node hides its subtree, so the answer is complete only
    when it is empty, which is what a pin's completeness needs.
    """
    seen: set[Cid] = set()
    stack = [root]
    while stack:
        cid = stack.pop()
        if cid in seen:
            continue
        seen.add(cid)
        if not has_block(cid):
            yield cid
            continue
        if _is_leaf(cid):
            continue
        stack.extend(reversed(links_of(cid, get_block(cid))))


def reachable(roots: list[Cid], get_block: BlockGetter, has_block: HasBlock) -> set[Cid]:
    """Every present CID reachable from roots (missing ones are skipped)."""
    seen: set[Cid] = set()
    stack = list(roots)
    while stack:
        cid = stack.pop()
        if cid in seen or not has_block(cid):
            continue
        seen.add(cid)
        if not _is_leaf(cid):
            stack.extend(links_of(cid, get_block(cid)))
    return seen
