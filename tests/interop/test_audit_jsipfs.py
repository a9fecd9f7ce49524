"""The audit against js-ipfs 0.66 as a `kubo` place: blocks read back through /api/v0/block/get.

js-ipfs has no trustless gateway reads for this, so every sampled and full check
asks `block/get` (offline) and re-hashes the answer. A work is pushed with the real
push queue, audited clean; then one of its blocks is removed on js-ipfs itself
(`block/rm`, after unpinning, since js-ipfs refuses to remove a pinned block) and
the audit must name exactly that block. Starts only inside a loopback-only network
namespace (scripts/test makes one); elsewhere this skips, except under CI=true.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from node.audit import AuditPolicy
from node.auditor import Auditor
from node.index import FindingRow
from node.node import Node
from node.pusher import Pusher, PushSettings
from node.remotes import validate_spec
from tests.interop.jsipfs import JsIpfs
from tests.test_remotes_contract import make_work

pytestmark = pytest.mark.interop
POLICY = AuditPolicy(schedule=False, samples=64, failing_alert_after=1, check_timeout=20)


async def audit(node: Node, level: str) -> list[FindingRow]:
    found: list[FindingRow] = []
    async with Auditor(node, POLICY) as auditor:
        await auditor.run(level, force=True, on_finding=found.append)
    return found


async def test_audit_reads_jsipfs_blocks_back_and_names_the_one_it_lost(jsipfs: JsIpfs,
                                                                          tmp_path: Path) -> None:
    with Node(tmp_path / "home", copies=1, audit=POLICY) as node:
        work = make_work(node, tmp_path / "art")
        node.add_place(validate_spec("kubo", jsipfs.api_url, {}, name="js"))
        node.plan_copies()
        async with Pusher(node, PushSettings(timeout=20)) as pusher:
            await pusher.drain(wait_retries=False)
        assert node.whereis(work.root).verified_copies == 1

        for level in ("presence", "sampled", "full"):
            [finding] = await audit(node, level)
            assert (finding.place, finding.level, finding.result) == ("js", level, "ok"), finding
            if level != "presence":
                assert finding.blocks == len(work.blocks) and finding.bytes == work.dag_bytes

        lost = list(work.blocks)[-1]  # the last leaf of the image, in DAG order
        await jsipfs.rpc("pin/rm", [("arg", str(work.root))])  # js-ipfs keeps pinned blocks
        [removed] = await jsipfs.rpc_lines("block/rm", [("arg", str(lost))])
        assert not removed.get("Error"), removed
        [finding] = await audit(node, "sampled")
        # js-ipfs answers a removed block with HTTP 500 "Failed to get block: ENOENT: no such file or
        # directory": for the auditor that block is missing there.
        assert (finding.result, finding.block) == ("missing", str(lost)), finding
        assert node.whereis(work.root).verified_copies == 0
        assert [view.state for view in node.whereis(work.root).places] == ["failing"]
