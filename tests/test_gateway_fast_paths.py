"""The gateway's fast paths (small cached blocks read on the loop, prefetched streams) still re-hash."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from node import cid as cids
from node import dag
from node.blockstore import Blockstore
from node.errors import BlockMismatch, BlockNotFound
from node.web.gateway import INLINE_BLOCK_BYTES
from tests.conftest import Served
from tests.test_gateway import SMALL_V1, get, random_bytes, store_bytes


def rot(path: Path, *, evict: bool) -> None:
    """Flip one byte of a block file in place; evict=True also drops it from the page cache."""
    os.chmod(path, 0o644)
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    with path.open("r+b") as stream:
        stream.write(damaged)
        stream.flush()
        os.fsync(stream.fileno())
        if evict:
            os.posix_fadvise(stream.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


# blockstore.get_if_cached -------------------------------------------------------------------------

def test_a_cached_read_is_the_verified_block_or_nothing(tmp_path: Path) -> None:
    store = Blockstore(tmp_path)
    small, big = b"small pixels" * 100, random_bytes(256 * 1024, "big")
    for data in (small, big):
        store.put(cids.cid_of(data, cids.RAW), [data])
    assert store.get_if_cached(cids.cid_of(small, cids.RAW), 64 * 1024) in (small, None)
    assert store.get_if_cached(cids.cid_of(big, cids.RAW), 64 * 1024) is None  # too big for the loop
    with pytest.raises(BlockNotFound):
        store.get_if_cached(cids.cid_of(b"never stored", cids.RAW), 64 * 1024)


@pytest.mark.parametrize("evict", [False, True])
def test_a_cached_read_of_a_rotten_block_is_never_its_bytes(tmp_path: Path, evict: bool) -> None:
    store = Blockstore(tmp_path)
    data = b"precious pixels" * 100
    block_cid = cids.cid_of(data, cids.RAW)
    store.put(block_cid, [data])
    rot(store.path_of(block_cid), evict=evict)
    try:
        assert store.get_if_cached(block_cid, 64 * 1024) is None  # not cached: the caller reads on a thread
    except BlockMismatch as exc:
        assert str(block_cid) in exc.message
    with pytest.raises(BlockMismatch):
        store.get(block_cid)


# the gateway --------------------------------------------------------------------------------------

@pytest.mark.parametrize("evict", [False, True])
async def test_a_damaged_raw_block_is_a_server_error_in_or_out_of_the_page_cache(served: Served,
                                                                                evict: bool) -> None:
    cid = store_bytes(served.node, b"these bytes will rot on disk")
    rot(served.node.store.path_of(cid), evict=evict)
    status, body, _ = await get(served, f"/ipfs/{cid}?format=raw")
    assert status == 500 and b"damaged" in body


async def test_a_damaged_block_too_big_for_the_loop_is_a_server_error(served: Served) -> None:
    data = random_bytes(INLINE_BLOCK_BYTES + 1, "big raw")
    cid = store_bytes(served.node, data, replace(SMALL_V1, chunk_size=len(data)))
    assert cid.codec == cids.RAW
    rot(served.node.store.path_of(cid), evict=False)
    status, body, _ = await get(served, f"/ipfs/{cid}?format=raw")
    assert status == 500 and b"damaged" in body


async def test_a_damaged_leaf_read_ahead_cuts_the_car_stream(served: Served) -> None:
    data = random_bytes(12 * 1024 * 1024, "prefetched")
    root = store_bytes(served.node, data, replace(SMALL_V1, chunk_size=256 * 1024, file_max_links=64))
    leaves = [cid for cid, _ in dag.walk(root, served.node.get_block) if cid.codec == cids.RAW]
    rot(served.node.store.path_of(leaves[-5]), evict=True)  # far past the first batch: prefetched
    with pytest.raises(aiohttp.ClientPayloadError):
        await get(served, f"/ipfs/{root}?format=car")
    with pytest.raises(aiohttp.ClientPayloadError):
        await get(served, f"/ipfs/{root}")
