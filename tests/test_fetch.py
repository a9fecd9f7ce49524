"""Fetching a DAG from origins: real artkeep gateways on loopback, scripted bad ones, refused addresses."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from node.cid import Cid
from node.errors import FetchError
from node.fetch import Fetcher
from node.netpolicy import NetworkPolicy
from node.node import Node
from node.profiles import get_profile
from tests.conftest import Served
from tests.origins import CountingListener, FixedResolver, ScriptedGateway, blocks_of, car_of, multiaddr

LOOPBACK = NetworkPolicy.parse("127.0.0.0/8")
ABSENT = Cid(0, 0x70, b"\x12\x20" + bytes(32))  # a dag-pb CID no one holds
REFUSED = r"outside fetch\.allow_networks"


def pin_file(node: Node, path: Path, size: int = 600_000) -> Cid:
    """A multi-block file (256 KiB chunks, dag-pb leaves) pinned in node; its root."""
    path.write_bytes(random.Random(size).randbytes(size))
    [(_, link)] = list(node.add_files([path], get_profile("unixfs-v0-2015")))
    assert not isinstance(link, Exception)
    return link.cid


async def fetch(node: Node, root: Cid, origins: list[str], policy: NetworkPolicy = LOOPBACK,
                **options: object) -> int:
    """Fetch into node and keep the blocks; return how many were new."""
    settings: dict[str, object] = {"timeout": 5.0, "max_bytes": 64 * 1024 * 1024, **options}
    async with Fetcher(policy, **settings) as fetcher:  # type: ignore[arg-type]
        intake = await fetcher.fetch(node, root, origins)
    return await asyncio.to_thread(intake.commit)


def stored(node: Node) -> int:
    return node.usage().blocks


async def test_a_dag_comes_whole_from_another_artkeep_gateway(serve_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    origin: Served = await serve_app()
    root = pin_file(origin.node, tmp_path / "art.png")
    with Node(tmp_path / "here") as here:
        new = await fetch(here, root, [multiaddr(origin.url)])
        assert new == len(blocks_of(origin.node, root)) == 4
        assert b"".join(here.cat(str(root))) == (tmp_path / "art.png").read_bytes()
        assert here.pins() == []  # fetching keeps blocks; pinning is the caller's step


async def test_plain_url_origins_work_too(serve_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    origin: Served = await serve_app()
    root = pin_file(origin.node, tmp_path / "a.bin", 1000)
    with Node(tmp_path / "here") as here:
        assert await fetch(here, root, ["not an origin", origin.url]) == 1


async def test_a_gateway_without_car_is_walked_block_by_block(tmp_path: Path) -> None:
    with Node(tmp_path / "there") as there, Node(tmp_path / "here") as here:
        root = pin_file(there, tmp_path / "a.bin")
        gateway = await ScriptedGateway(car=None, blocks=blocks_of(there, root)).start()
        try:
            assert await fetch(here, root, [gateway.multiaddr]) == 4
        finally:
            await gateway.close()
        assert any("format=car" in path for path in gateway.requests)
        assert sum("format=raw" in path for path in gateway.requests) == 4


async def test_a_truncated_car_is_completed_block_by_block(tmp_path: Path) -> None:
    with Node(tmp_path / "there") as there, Node(tmp_path / "here") as here:
        root = pin_file(there, tmp_path / "a.bin")
        car = car_of(there, root)
        gateway = await ScriptedGateway(car=car, blocks=blocks_of(there, root),
                                        truncate_car_at=len(car) // 2).start()
        try:
            assert await fetch(here, root, [gateway.multiaddr]) == 4
        finally:
            await gateway.close()
        assert 0 < sum("format=raw" in path for path in gateway.requests) < 4


async def test_a_corrupted_block_fails_and_nothing_is_stored(tmp_path: Path) -> None:
    with Node(tmp_path / "there") as there, Node(tmp_path / "here") as here:
        root = pin_file(there, tmp_path / "a.bin")
        car = bytearray(car_of(there, root))
        car[-1] ^= 0x01  # one bit of the last leaf
        blocks = blocks_of(there, root)
        last = list(blocks)[-1]
        blocks[last] = blocks[last][:-1] + bytes([blocks[last][-1] ^ 0x01])
        gateway = await ScriptedGateway(car=bytes(car), blocks=blocks).start()
        try:
            with pytest.raises(FetchError, match="does not match"):
                await fetch(here, root, [gateway.multiaddr])
        finally:
            await gateway.close()
        assert stored(here) == 0
        assert not list((here.home / "blocks" / ".staging").glob("*"))


async def test_the_next_origin_is_tried_when_one_fails(serve_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    origin: Served = await serve_app()
    root = pin_file(origin.node, tmp_path / "a.bin")
    empty = await ScriptedGateway().start()
    try:
        with Node(tmp_path / "here") as here:
            assert await fetch(here, root, [empty.multiaddr, multiaddr(origin.url)]) == 4
    finally:
        await empty.close()


@pytest.mark.parametrize("origin", ["/ip4/10.0.0.1/tcp/80/http", "/ip4/169.254.169.254/tcp/80/http",
                                    "http://[::1]:8080", "/ip4/100.64.0.1/tcp/80/http"])
async def test_disallowed_addresses_are_refused_before_connecting(origin: str, tmp_path: Path) -> None:
    with Node(tmp_path / "here") as here:
        started = time.monotonic()
        with pytest.raises(FetchError, match=REFUSED):
            await fetch(here, ABSENT, [origin])
        assert time.monotonic() - started < 1  # no connect attempt, no timeout


async def test_a_refused_address_gets_no_packet(tmp_path: Path) -> None:
    """Only 127.0.0.2 allowed: a listener on 127.0.0.1, named directly or via DNS, sees no connection."""
    resolver = FixedResolver({"art.example": ["127.0.0.1"]})
    async with CountingListener() as listener:
        with Node(tmp_path / "here") as here:
            for origin in (f"/ip4/127.0.0.1/tcp/{listener.port}/http",
                           f"/dns4/art.example/tcp/{listener.port}/http",
                           f"http://art.example:{listener.port}"):
                with pytest.raises(FetchError, match=REFUSED):
                    await fetch(here, ABSENT, [origin],
                                NetworkPolicy.parse("127.0.0.2/32"), resolver=resolver)
        await asyncio.sleep(0.05)
        assert listener.connections == 0
    assert resolver.asked == ["art.example", "art.example"]


async def test_a_name_resolving_to_a_private_address_is_refused(tmp_path: Path) -> None:
    resolver = FixedResolver({"rebind.example": ["10.0.0.7", "169.254.169.254"]})
    with Node(tmp_path / "here") as here, pytest.raises(FetchError, match=r"rebind\.example resolves to"):
        await fetch(here, ABSENT, ["/dns/rebind.example/tcp/80/http"],
                    NetworkPolicy.parse("public,127.0.0.0/8"), resolver=resolver)


async def test_only_the_allowed_address_of_a_name_is_dialled(serve_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    origin: Served = await serve_app()
    root = pin_file(origin.node, tmp_path / "a.bin", 1000)
    port = origin.url.rsplit(":", 1)[1]
    resolver = FixedResolver({"mixed.example": ["10.0.0.7", "127.0.0.1"]})
    with Node(tmp_path / "here") as here:
        assert await fetch(here, root, [f"/dns4/mixed.example/tcp/{port}/http"], resolver=resolver) == 1


@pytest.mark.parametrize("target", ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/ipfs/x",
                                    "http://[::1]/ipfs/x"])
async def test_redirects_to_disallowed_hosts_are_refused(target: str, tmp_path: Path) -> None:
    gateway = await ScriptedGateway(redirect=target).start()
    try:
        with Node(tmp_path / "here") as here, pytest.raises(FetchError, match=REFUSED):
            await fetch(here, ABSENT, [gateway.multiaddr])
    finally:
        await gateway.close()


async def test_a_stalled_origin_times_out(tmp_path: Path) -> None:
    gateway = await ScriptedGateway(stall=asyncio.Event()).start()
    try:
        with Node(tmp_path / "here") as here, pytest.raises(FetchError, match="timed out"):
            await fetch(here, ABSENT, [gateway.multiaddr], timeout=0.3)
    finally:
        assert gateway.stall is not None
        gateway.stall.set()
        await gateway.close()


async def test_a_dag_over_the_byte_limit_is_refused(serve_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    origin: Served = await serve_app()
    root = pin_file(origin.node, tmp_path / "a.bin")
    with Node(tmp_path / "here") as here:
        with pytest.raises(FetchError, match="fetch limit"):
            await fetch(here, root, [multiaddr(origin.url)], max_bytes=100_000)
        assert stored(here) == 0


async def test_a_dag_already_here_needs_no_origin(tmp_path: Path) -> None:
    with Node(tmp_path / "here") as here:
        root = pin_file(here, tmp_path / "a.bin")
        assert await fetch(here, root, []) == 0
