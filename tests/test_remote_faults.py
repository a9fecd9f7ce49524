"""Places that fail: down, slow, 500, 429, reset mid-upload, and those that accept and then lose the data.

Each failure maps to the error class the push queue acts on (Retryable waits,
Permanent stops), or, for a place that claims what it does not hold, to the
read-back finding (missing, corrupt). Faults come from tests/fault_servers.py
(FAKE servers, named as such, mostly a proxy in front of a real artkeep daemon)
only where a real server cannot be made to fail that way; a real daemon whose
block file is deleted on disk is the real "accepts, then loses it".
"""

from __future__ import annotations

import email.utils
import json
import random
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest

from node.cid import Cid
from node.errors import BlockNotFound
from node.remotes import validate_spec
from node.remotes.base import Permanent, PlaceSpec, Retryable
from node.remotes.cluster import cluster_presence
from node.remotes.http import retry_after
from node.remotes.kinds import open_remote
from node.remotes.readback import read_back, sample
from tests import test_remotes_contract as contract
from tests.conftest import Served
from tests.fault_servers import (
    FaultServer,
    closed_port_url,
    endless_car,
    reset_after,
    serve,
    stall,
    status,
    tamper,
    truncate,
)
from tests.test_remotes_contract import WRITABLE, ServeApp, Work, open_place

session = contract.session  # the contract's fixtures, shared
source = contract.source

TOKEN_ECHO = "Bearer {token} is not welcome here"


def kubo_error(message: str) -> bytes:
    return json.dumps({"Message": message, "Code": 0, "Type": "error"}).encode()


async def fronted(kind: str, serve_app: ServeApp, source: Served, session: aiohttp.ClientSession,
                  front: FaultServer, **options: str) -> tuple[PlaceSpec, Served]:
    """A place of `kind` whose URL is the fault front, passing through to a real server of that kind."""
    place = await open_place(kind, serve_app, source, session)
    base = place.target.url
    front.upstream = base
    url = place.spec.url.replace(base, front.url)
    changed = {**place.spec.options, **options}
    if "gateway" in changed:
        changed["gateway"] = changed["gateway"].replace(base, front.url)
    return replace(place.spec, url=url, options=changed), place.target


# --- down, slow, busy

@pytest.mark.parametrize("kind", [*WRITABLE, "gateway"])
async def test_a_place_that_is_down_is_retryable(kind: str, session: aiohttp.ClientSession,
                                                 source: tuple[Served, Work]) -> None:
    _, work = source
    options = {"peer": {"public_key": "12D3KooW" + "A" * 44},
               "pinning": {"origins": "/ip4/127.0.0.1/tcp/1/http"}}.get(kind, {})
    spec = validate_spec(kind, closed_port_url(), options, name="down", token="t0ken-1234")
    remote = open_remote(spec, session)
    with pytest.raises(Retryable, match="cannot connect") as raised:
        await remote.presence(work.root, None)
    assert raised.value.retry_after is None
    if remote.writable:
        with pytest.raises(Retryable, match="cannot connect"):
            await remote.push(work.root, work.body(), name=work.name, meta={})


async def test_a_slow_place_times_out_as_retryable(session: aiohttp.ClientSession,
                                                   source: tuple[Served, Work]) -> None:
    _, work = source
    async with FaultServer() as front:
        front.inject(stall())
        remote = open_remote(validate_spec("kubo", front.url, {"timeout": "0.3"}, name="slow"), session)
        started = time.monotonic()
        with pytest.raises(Retryable, match=r"no answer within 0\.3 s"):
            await remote.push(work.root, work.body(), name=work.name, meta={})
        assert time.monotonic() - started < 5


async def test_a_500_is_retryable_and_says_what_the_place_said(session: aiohttp.ClientSession,
                                                               source: tuple[Served, Work]) -> None:
    _, work = source
    async with FaultServer() as front:
        front.inject(status(500, body=kubo_error("repo is locked by another process")))
        remote = open_remote(validate_spec("kubo", front.url, {}, name="busy"), session)
        with pytest.raises(Retryable, match="repo is locked by another process"):
            await remote.get_block(work.root)


@pytest.mark.parametrize(("header", "expected"), [("7", 7.0), ("http-date", 30.0)])
async def test_429_carries_retry_after_and_the_next_try_succeeds(
        header: str, expected: float, serve_app: ServeApp, source: tuple[Served, Work],
        session: aiohttp.ClientSession) -> None:
    served, work = source
    async with FaultServer() as front:
        spec, _ = await fronted("pinning", serve_app, served, session, front)
        value = email.utils.formatdate(time.time() + 30, usegmt=True) if header == "http-date" else header
        front.inject(status(429, headers={"Retry-After": value},
                            body=b'{"error":{"reason":"RATE_LIMIT","details":"slow down"}}'), times=1)
        remote = open_remote(spec, session)
        with pytest.raises(Retryable, match="HTTP 429: RATE_LIMIT: slow down") as raised:
            await remote.push(work.root, work.body(), name=work.name, meta={})
        assert raised.value.retry_after == pytest.approx(expected, abs=2)
        pushed = await remote.push(work.root, work.body(), name=work.name, meta={})
        assert pushed.handle is not None


async def test_503_carries_retry_after(session: aiohttp.ClientSession, source: tuple[Served, Work]) -> None:
    _, work = source
    async with FaultServer() as front:
        front.inject(status(503, headers={"Retry-After": "120"}))
        remote = open_remote(validate_spec("cluster", front.url, {}, name="c", token="admin:pw"), session)
        with pytest.raises(Retryable) as raised:
            await remote.presence(work.root, None)
        assert raised.value.retry_after == 120


@pytest.mark.parametrize(("code", "body"), [
    (401, TOKEN_ECHO.encode()),
    (403, TOKEN_ECHO.encode()),
    (409, b'{"error":{"reason":"INSUFFICIENT_FUNDS","details":"your plan holds 1 GB"}}'),
    (413, b"too large"),
])
async def test_refusals_that_waiting_cannot_fix_are_permanent_and_secret_free(
        code: int, body: bytes, session: aiohttp.ClientSession, source: tuple[Served, Work]) -> None:
    _, work = source
    token = "psa-secret-token-3e1f"
    async with FaultServer() as front:
        front.inject(status(code, body=body.replace(b"{token}", token.encode())))
        spec = validate_spec("pinning", front.url, {"origins": "/ip4/127.0.0.1/tcp/8080/http"}, name="svc",
                             token=token)
        with pytest.raises(Permanent) as raised:
            await open_remote(spec, session).push(work.root, work.body(), name=work.name, meta={})
    assert f"HTTP {code}" in raised.value.message
    assert token not in str(raised.value)
    if code == 409:
        assert "INSUFFICIENT_FUNDS: your plan holds 1 GB" in raised.value.message


# --- broken uploads

async def test_a_reset_mid_upload_is_retryable_and_the_next_push_lands(
        serve_app: ServeApp, source: tuple[Served, Work], session: aiohttp.ClientSession) -> None:
    served, work = source
    closed: list[bool] = []

    def body() -> AsyncIterator[bytes]:
        async def stream() -> AsyncIterator[bytes]:
            try:
                async for chunk in work.body()():
                    yield chunk
            finally:
                closed.append(True)

        return stream()

    async with FaultServer() as front:
        spec, target = await fronted("kubo", serve_app, served, session, front)
        front.inject(reset_after(len(work.car) // 3), path="/api/v0/dag/import", times=1)
        remote = open_remote(spec, session)
        with pytest.raises(Retryable, match="dag/import"):
            await remote.push(work.root, body, name=work.name, meta={})
        assert closed == [True]  # the CAR stream was let go, not left half-read
        assert target.node.get_pin(work.root) is None
        pushed = await remote.push(work.root, body, name=work.name, meta={})
        assert pushed.state == "pushed" and target.node.get_pin(work.root) is not None


async def test_our_own_store_failing_mid_upload_is_not_blamed_on_the_place(
        serve_app: ServeApp, source: tuple[Served, Work], session: aiohttp.ClientSession) -> None:
    served, work = source
    place = await open_place("kubo", serve_app, served, session)

    async def broken() -> AsyncIterator[bytes]:
        yield work.car[:100_000]
        raise BlockNotFound("block bafy... is not in the store")

    with pytest.raises(BlockNotFound):
        await place.remote.push(work.root, broken, name=work.name, meta={})
    assert place.target.node.get_pin(work.root) is None


async def test_an_answer_that_is_not_json_is_retryable(session: aiohttp.ClientSession,
                                                       source: tuple[Served, Work]) -> None:
    _, work = source
    async with FaultServer() as front:
        front.inject(serve(b"<html>maintenance</html>", content_type="text/html"))
        remote = open_remote(validate_spec("kubo", front.url, {}, name="html"), session)
        with pytest.raises(Retryable, match="not JSON"):
            await remote.presence(work.root, None)


# --- accepts, then loses

async def test_a_place_that_lost_a_block_is_caught_by_read_back(
        serve_app: ServeApp, source: tuple[Served, Work], session: aiohttp.ClientSession) -> None:
    served, work = source
    for kind in ("kubo", "peer"):
        place = await open_place(kind, serve_app, served, session)
        await place.remote.push(work.root, work.body(), name=work.name, meta={})
        victim = list(work.blocks)[len(work.blocks) // 2]
        place.target.node.store.path_of(victim).unlink()  # the disk lost it; the index still says pinned
        assert await place.remote.presence(work.root, None) == "pinned"
        result = await read_back(place.remote, work.root, list(work.blocks))
        assert not result.ok and result.missing == victim and result.corrupt is None, kind


async def test_a_place_that_serves_wrong_bytes_is_caught_in_the_car_and_block_by_block(
        serve_app: ServeApp, source: tuple[Served, Work], session: aiohttp.ClientSession) -> None:
    served, work = source
    async with FaultServer() as front:
        spec, _ = await fronted("peer", serve_app, served, session, front)
        remote = open_remote(spec, session)
        await remote.push(work.root, work.body(), name=work.name, meta={})
        front.inject(tamper(-1), path="/ipfs/", times=1)  # the CAR's last byte: inside the last block
        from_car = await read_back(remote, work.root, list(work.blocks))
        assert from_car.corrupt == list(work.blocks)[-1] and from_car.missing is None
        front.inject(tamper(0), path="/ipfs/")  # every raw block answered with its first bit flipped
        by_blocks = await read_back(remote, work.root, list(work.blocks), via_car=False)
        assert by_blocks.corrupt in work.blocks and not by_blocks.ok


async def test_a_car_that_breaks_off_is_finished_block_by_block(
        serve_app: ServeApp, source: tuple[Served, Work], session: aiohttp.ClientSession) -> None:
    served, work = source
    async with FaultServer(upstream=served.url) as front:
        front.inject(truncate(len(work.car) // 2), path="/ipfs/", times=1)
        gateway = open_remote(validate_spec("gateway", front.url, {}, name="gw"), session)
        result = await read_back(gateway, work.root, list(work.blocks))
        assert result.ok and result.blocks_verified == len(work.blocks)
        asked = [path for _, path in front.requests]
        assert "format=car" in asked[0] and all("format=raw" in path for path in asked[1:])
        assert 0 < len(asked) - 1 < len(work.blocks)  # only what the CAR did not deliver


async def test_a_car_of_endless_strays_is_given_up_for_block_by_block(
        source: tuple[Served, Work], session: aiohttp.ClientSession) -> None:
    served, work = source
    async with FaultServer(upstream=served.url) as front:
        front.inject(endless_car(work.root), path="/ipfs/", times=1)
        gateway = open_remote(validate_spec("gateway", front.url, {}, name="gw"), session)
        result = await read_back(gateway, work.root, list(work.blocks), deadline=time.monotonic() + 20)
        assert result.ok and result.blocks_verified == len(work.blocks)
        assert sum("format=raw" in path for _, path in front.requests) == len(work.blocks)


async def test_a_place_that_claims_a_pin_but_serves_nothing_reads_back_missing(
        serve_app: ServeApp, source: tuple[Served, Work], session: aiohttp.ClientSession) -> None:
    served, work = source
    async with FaultServer() as front:
        spec, _ = await fronted("kubo", serve_app, served, session, front)
        claim = json.dumps({"Keys": {str(work.root): {"Type": "recursive"}}}).encode()
        front.inject(serve(claim), path="/api/v0/pin/ls")
        remote = open_remote(spec, session)
        assert await remote.presence(work.root, None) == "pinned"  # its word
        result = await read_back(remote, work.root, list(work.blocks))
        assert not result.ok and result.missing is not None  # its blocks


async def test_a_place_that_takes_the_upload_and_keeps_nothing_is_missing_after(
        serve_app: ServeApp, source: tuple[Served, Work], session: aiohttp.ClientSession) -> None:
    served, work = source
    async with FaultServer() as front:
        spec, _ = await fronted("kubo", serve_app, served, session, front)
        took = json.dumps({"Root": {"Cid": {"/": str(work.root)}, "PinErrorMsg": ""}}).encode()
        front.inject(serve(took), path="/api/v0/dag/import")
        remote = open_remote(spec, session)
        assert (await remote.push(work.root, work.body(), name=work.name, meta={})).state == "pushed"
        assert await remote.presence(work.root, None) == "missing"
        assert (await read_back(remote, work.root, list(work.blocks))).missing in work.blocks


async def test_a_read_back_past_its_deadline_is_retryable(session: aiohttp.ClientSession,
                                                          source: tuple[Served, Work]) -> None:
    _, work = source
    async with FaultServer() as front:
        front.inject(stall())
        gateway = open_remote(validate_spec("gateway", front.url, {}, name="gw"), session)
        with pytest.raises(Retryable, match="deadline"):
            await read_back(gateway, work.root, list(work.blocks), deadline=time.monotonic() + 0.3)


# --- the pure parts

def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after("120") == 120.0
    assert retry_after(email.utils.formatdate(time.time() + 60, usegmt=True)) == pytest.approx(60, abs=2)
    assert retry_after(email.utils.formatdate(time.time() - 60, usegmt=True)) == 0.0
    assert retry_after("soon") is None and retry_after(None) is None and retry_after("-5") is None


@pytest.mark.parametrize(("statuses", "replication_min", "expected"), [
    (["pinned", "pinned", "pin_error"], 2, "pinned"),
    (["pinned", "pin_error", "pin_error"], 2, "failed"),
    (["pin_error", "pin_error", "remote"], None, "failed"),
    (["pinned", "pinning", "remote"], None, "pinning"),
    (["pinned", "pinned", "remote"], None, "pinned"),
    (["pinned", "pinned", "remote"], -1, "failed"),  # under-replicated, and nothing is happening
    (["pin_queued", "remote", "remote"], 1, "pinning"),
    (["unpinned", "unpinned", "unpinned"], 1, "missing"),
    ([], None, "missing"),
])
def test_cluster_presence_counts_pinned_peers(statuses: list[str], replication_min: int | None,
                                              expected: str) -> None:
    peer_map = {f"peer{n}": {"status": status} for n, status in enumerate(statuses)}
    assert cluster_presence(peer_map, replication_min) == expected


def test_sample_picks_distinct_blocks_in_dag_order() -> None:
    blocks = [Cid(1, 0x55, b"\x12\x20" + bytes([n]) * 32) for n in range(50)]
    picked = sample(blocks + blocks[:5], 10, random.Random(1))
    assert len(picked) == len(set(picked)) == 10
    assert picked == sorted(picked, key=blocks.index)
    assert picked != sample(blocks, 10, random.Random(2))
    assert sample(blocks, 80, random.Random(1)) == blocks
    assert sample(blocks, 0, random.Random(1)) == []

