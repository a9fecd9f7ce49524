"""The push queue against real places: artkeep daemons on 127.0.0.1 (as peer, kubo and pinning places),
with FAKE fault-injecting fronts (tests/fault_servers.py) only for the faults a real place cannot produce."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from node import signing, sources
from node.cid import Cid
from node.node import Node
from node.profiles import get_profile
from node.pusher import Pusher, PushSettings
from node.remotes import validate_spec
from node.remotes.base import PlaceSpec
from node.replication import Backoff
from tests.conftest import ArtkeepCli, Served
from tests.fault_servers import FaultServer, closed_port_url, reset_after, serve, stall, status, tamper

ServeApp = Callable[..., Awaitable[Served]]
FAST = PushSettings(backoff=Backoff(base=0.05, cap=0.3), timeout=5)


def make_works(node: Node, folder: Path, count: int) -> list[Cid]:
    """`count` A1111 PNGs of noise (several blocks each) rescued as works."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number in range(count):
        rng = random.Random(number)
        side = 300 + 40 * number
        image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", f"work {number}\nSteps: 20, Sampler: Euler a, Seed: {number}, Model: t")
        path = folder / f"work{number}.png"
        image.save(path, pnginfo=info, compress_level=0)
        paths.append(path)
    rescued = list(node.rescue(sources.walk(paths, archives=False), get_profile("kubo-cidv1")))
    works = [item.work for item in rescued if item.work is not None]
    assert len(works) == count
    return works


def peer_place(name: str, target: Served, url: str | None = None) -> PlaceSpec:
    return validate_spec("peer", url or target.url, {"public_key": signing.peer_id(target.node.public_key())},
                         name=name, token=target.token)


def kubo_place(name: str, target: Served, url: str | None = None, token: str | None = None) -> PlaceSpec:
    return validate_spec("kubo", url or target.url, {"timeout": "3"}, name=name, token=token or target.token)


def holds_whole_dag(source: Node, target: Node, root: Cid) -> bool:
    return target.get_pin(root) is not None and all(
        target.get_block(cid) == source.get_block(cid) for cid in source.dag_blocks(root))


async def drain(node: Node, settings: PushSettings = FAST, seconds: float = 30) -> None:
    async with Pusher(node, settings) as pusher:
        await pusher.drain(until=time.time() + seconds)


def states(node: Node, root: Cid) -> dict[str, str]:
    return {view.place: view.state for view in node.whereis(root).places}


async def test_works_reach_two_peers_and_count_only_once_read_back(
        serve_app: ServeApp, tmp_path: Path) -> None:
    b, c = await serve_app(), await serve_app()
    with Node(tmp_path / "artist", copies=2) as node:
        works = make_works(node, tmp_path / "images", 3)
        node.add_place(peer_place("b", b))
        node.add_place(kubo_place("c", c))
        assert node.plan_copies() == 6
        await drain(node)
        for work in works:
            where = node.whereis(work)
            assert where.verified_copies == 2, where
            assert holds_whole_dag(node, b.node, work) and holds_whole_dag(node, c.node, work)
        findings = node.recent_findings(100)
        assert {(f.place, f.level, f.result) for f in findings} == {("b", "full", "ok"), ("c", "full", "ok")}
        assert node.replication_health().works_below_target == 0
        assert node.index.queue_depth() == 0


async def test_the_daemon_queues_new_pins_and_a_pinning_service_fetches_them_from_our_gateway(
        serve_app: ServeApp, tmp_path: Path) -> None:
    service = await serve_app()
    artist = await serve_app(push_plan_interval=0.2, replication_copies=1)
    artist.node.add_place(validate_spec("pinning", f"{service.url}/psa", {"origins": artist.url,
                                                                         "gateway": service.url},
                                        name="service", token=service.token))
    [work] = make_works(artist.node, tmp_path / "images", 1)  # pinned after the daemon started

    deadline = time.monotonic() + 30
    while states(artist.node, work) != {"service": "verified"}:
        assert time.monotonic() < deadline, artist.node.whereis(work)
        await asyncio.sleep(0.1)
    assert holds_whole_dag(artist.node, service.node, work)


async def test_retryable_faults_are_retried_until_the_copy_is_verified(
        serve_app: ServeApp, tmp_path: Path) -> None:
    b = await serve_app()
    async with FaultServer(upstream=b.url) as front:
        front.inject(status(503, headers={"Retry-After": "0"}), path="/api/v0/dag/import", times=2)
        front.inject(reset_after(3000), path="/api/v0/dag/import", times=1)
        front.inject(status(500), path="/api/v0/pin/ls", times=1)
        with Node(tmp_path / "artist", copies=1) as node:
            [work] = make_works(node, tmp_path / "images", 1)
            node.add_place(kubo_place("b", b, url=front.url))
            node.plan_copies()
            await drain(node)
            assert states(node, work) == {"b": "verified"}
            row = node.index.copies_of(str(work))[0]
            assert row.attempts == 0 and row.last_error is None and row.due is None
            assert holds_whole_dag(node, b.node, work)


async def test_a_place_that_is_down_keeps_its_copy_queued_with_growing_waits(tmp_path: Path) -> None:
    with Node(tmp_path / "artist", copies=1) as node:
        [work] = make_works(node, tmp_path / "images", 1)
        node.add_place(validate_spec("kubo", closed_port_url(), {}, name="down"))
        node.plan_copies()
        settings = PushSettings(backoff=Backoff(base=0.2, cap=10), timeout=2)
        async with Pusher(node, settings) as pusher:
            await pusher.drain(until=time.time() + 1.5)
        row = node.index.copies_of(str(work))[0]
        assert row.state == "failing" and not row.permanent and row.attempts >= 2
        assert row.due is not None and row.due > time.time()  # still owed, later
        assert "down" in node.replication_health().failing_places or row.attempts < 3


async def test_a_refused_token_stops_retries_until_the_user_retries(
        serve_app: ServeApp, tmp_path: Path) -> None:
    b = await serve_app()
    with Node(tmp_path / "artist", copies=1) as node:
        [work] = make_works(node, tmp_path / "images", 1)
        node.add_place(kubo_place("b", b, token="not-the-token"))
        node.plan_copies()
        await drain(node, seconds=5)
        row = node.index.copies_of(str(work))[0]
        assert (row.state, row.permanent, row.due) == ("failing", 1, None)
        assert "not-the-token" not in (row.last_error or "")
        assert node.index.queue_stuck() == 1
        assert node.retry_copies([str(work)]) == 1
        assert node.index.copies_of(str(work))[0].state == "pending"


async def test_a_liar_serving_wrong_bytes_is_corrupt_never_counted_and_replaced(
        serve_app: ServeApp, tmp_path: Path) -> None:
    liar_upstream, honest = await serve_app(), await serve_app()
    async with FaultServer(upstream=liar_upstream.url) as liar:
        liar.inject(tamper(-5), path="/ipfs/")  # every block it serves has one byte flipped
        with Node(tmp_path / "artist", copies=1) as node:
            [work] = make_works(node, tmp_path / "images", 1)
            node.add_place(peer_place("liar", liar_upstream, url=liar.url))
            node.plan_copies()
            await drain(node)
            assert states(node, work) == {"liar": "corrupt"}
            assert node.whereis(work).verified_copies == 0
            [finding] = node.recent_findings(10)
            assert (finding.place, finding.result) == ("liar", "corrupt") and finding.block
            node.add_place(peer_place("honest", honest))
            assert node.plan_copies() == 1  # the corrupt copy does not count: another place is asked
            await drain(node)
            assert states(node, work) == {"liar": "corrupt", "honest": "verified"}


async def test_a_place_that_accepts_and_then_loses_the_data_is_never_marked_done(
        serve_app: ServeApp, tmp_path: Path) -> None:
    sink = await serve_app()
    async with FaultServer(upstream=sink.url) as loser:
        with Node(tmp_path / "artist", copies=1) as node:
            [work] = make_works(node, tmp_path / "images", 1)
            # It answers every upload as imported and says it pins the root, but keeps nothing.
            loser.inject(serve(json.dumps({"Root": {"Cid": {"/": str(work)}, "PinErrorMsg": ""}}).encode()),
                         path="/api/v0/dag/import")
            loser.inject(serve(json.dumps({"Keys": {str(work): {"Type": "recursive"}}}).encode()),
                         path="/api/v0/pin/ls")
            node.add_place(peer_place("loser", sink, url=loser.url))
            node.plan_copies()
            await drain(node, seconds=3)
            row = node.index.copies_of(str(work))[0]
            assert row.state == "failing" and row.verified is None, row
            assert "does not serve block" in (row.last_error or "")
            assert node.whereis(work).verified_copies == 0


async def test_a_push_killed_mid_upload_is_finished_by_the_next_run(serve_app: ServeApp, tmp_path: Path,
                                                                    artkeep: ArtkeepCli) -> None:
    b = await serve_app()
    async with FaultServer(upstream=b.url) as front:
        front.inject(stall(), path="/api/v0/dag/import")
        with Node(artkeep.home, copies=1) as node:
            works = make_works(node, tmp_path / "images", 2)
            node.add_place(kubo_place("b", b, url=front.url))
        process = subprocess.Popen(artkeep.argv("push", "--json"), env=artkeep.env(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with Node(artkeep.home, copies=1) as node:
            deadline = time.monotonic() + 20
            while not node.index.lease_holders():  # the push has leased its copies and started uploading
                assert time.monotonic() < deadline and process.poll() is None, process.poll()
                await asyncio.sleep(0.05)
            assert node.index.lease_holders() == {f"{socket.gethostname()}/{process.pid}"}
        await asyncio.sleep(0.5)  # into the stalled upload
        process.send_signal(signal.SIGKILL)
        process.wait()
        front.clear()
        rerun = await asyncio.to_thread(artkeep, "push", "--wait", "--timeout", "30", "--json")
        assert rerun.returncode == 0, rerun
        summary = rerun.records()[-1]
        assert summary["copies"] == {"verified": 2}, rerun
        with Node(artkeep.home) as node:
            assert all(holds_whole_dag(node, b.node, work) for work in works)


async def test_cli_places_push_and_whereis_keep_secrets_out(serve_app: ServeApp, tmp_path: Path,
                                                            artkeep: ArtkeepCli) -> None:
    b = await serve_app()
    with Node(artkeep.home) as node:
        [work] = make_works(node, tmp_path / "images", 1)
    added = await asyncio.to_thread(artkeep, "place", "add", "b", "kubo", b.url, "--token", b.token,
                                    "--quota", "1GB", "--json")
    assert added.returncode == 0, added
    [record] = added.records()
    assert record["queued"] == 1 and record["quota_bytes"] == 10 ** 9 and b.token not in added.out
    listed = await asyncio.to_thread(artkeep, "place", "ls", "--json")
    assert b.token not in listed.out and listed.records()[0]["token"] is True
    pushed = await asyncio.to_thread(artkeep, "push", "--wait", "--timeout", "30", "--json")
    assert pushed.returncode == 0 and b.token not in pushed.out + pushed.err, pushed
    where = await asyncio.to_thread(artkeep, "whereis", str(work), "--json")
    [answer] = where.records()
    assert answer["cid"] == str(work) and answer["verified_copies"] == 1
    [copy] = answer["places"]
    assert copy["name"] == "b" and copy["state"] == "verified" and copy["last_check"]
    status_run = await asyncio.to_thread(artkeep, "status", "--json")
    [summary] = status_run.records()
    assert summary["places"] == 1 and summary["queue_depth"] == 0
    missing = await asyncio.to_thread(artkeep, "whereis", "bafkqaaa")
    assert missing.returncode == 4
    bad = await asyncio.to_thread(artkeep, "place", "add", "x", "kubo", "ftp://nowhere")
    assert bad.returncode == 2 and "url" in bad.err.lower()


@pytest.mark.parametrize("size", ["500MB", "2GiB", "123"])
def test_quota_sizes(size: str) -> None:
    from node.cli import _parse_size

    assert _parse_size(size) == {"500MB": 500 * 10 ** 6, "2GiB": 2 * 1024 ** 3, "123": 123}[size]


async def test_the_bandwidth_limit_spaces_uploads_out() -> None:
    from node.pusher import Throttle

    throttle = Throttle(4_000_000)  # bytes per second, for every upload together
    started = time.monotonic()
    await asyncio.gather(*(throttle.take(1_000_000) for _ in range(4)))
    assert 0.7 <= time.monotonic() - started < 3  # 4 MB at 4 MB/s: the first is free, three wait
    unlimited = Throttle(0)
    started = time.monotonic()
    await unlimited.take(10 ** 12)
    assert time.monotonic() - started < 0.1
