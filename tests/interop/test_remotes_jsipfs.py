"""The place contract (kubo kind) against js-ipfs 0.66, a real and independent IPFS node.

The same steps as tests/test_remotes_contract.py, the same functions: push a real
work's DAG with dag/import → pin/ls says pinned, and js-ipfs's own pin list has it
→ reading it back verifies every block, byte for byte → pushing again sends
nothing → remove → pin/ls says missing; then a block js-ipfs really lost
(block/rm) reads back as missing, by name. js-ipfs's RPC has no authentication,
so the wrong-token part of the contract has nothing to test here. js-ipfs starts
only inside a loopback-only network namespace (scripts/test makes one);
elsewhere this skips, except under CI=true.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from node.cid import Cid
from node.node import Node
from node.remotes import validate_spec
from node.remotes.base import BlockMissing
from node.remotes.kinds import open_remote
from node.remotes.readback import read_back
from tests.interop.jsipfs import JsIpfs
from tests.test_remotes_contract import (
    make_work,
    pushed_pins_and_reads_back,
    pushing_again_changes_nothing,
    removing_makes_it_missing,
)

pytestmark = pytest.mark.interop


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def test_jsipfs_keeps_a_pushed_work_and_gives_every_block_back(jsipfs: JsIpfs, tmp_path: Path,
                                                                    session: aiohttp.ClientSession) -> None:
    with Node(tmp_path / "home") as node:
        work = make_work(node, tmp_path / "art")
    remote = open_remote(validate_spec("kubo", jsipfs.api_url, {}, name="js"), session)

    async def holds(root: Cid) -> bool:  # js-ipfs's own listing, not our reading of its answer
        return str(root) in await jsipfs.pin_ls()

    pushed = await pushed_pins_and_reads_back(remote, work, holds)
    for cid, block in work.blocks.items():
        assert await jsipfs.block_get(str(cid)) == block
    await pushing_again_changes_nothing(remote, work, pushed)
    await removing_makes_it_missing(remote, work, pushed, holds)

    lost = list(work.blocks)[-1]  # unpinned now, so js-ipfs lets it go
    [removed] = await jsipfs.rpc_lines("block/rm", [("arg", str(lost))])
    assert not removed.get("Error"), removed
    with pytest.raises(BlockMissing):
        await remote.get_block(lost)
    result = await read_back(remote, work.root, list(work.blocks))
    assert (result.ok, result.missing, result.corrupt) == (False, lost, None)
