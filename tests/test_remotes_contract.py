"""One contract for every kind of place, each against a real server on 127.0.0.1.

kubo and peer talk to an artkeep daemon's /api/v0; pinning to an artkeep daemon's
/psa, which fetches the work from a second daemon (the source) named in
`origins`; cluster to the Cluster REST stand-in (tests/cluster_standin.py: IPFS
Cluster cannot be installed here) mounted on an artkeep daemon; gateway to an
artkeep daemon's /ipfs, for the read parts only. The contract: push a real
work's DAG → the place says pinned → reading it back verifies every block, byte
for byte → pushing again changes nothing → remove → the place says missing; a
wrong token is Permanent, and the token is never in the message.
"""

from __future__ import annotations

import random
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import pytest
from PIL import Image, PngImagePlugin

from node import signing, sources
from node.cid import Cid
from node.errors import InputError
from node.node import Node
from node.profiles import get_profile
from node.remotes import KIND_OPTIONS, validate_spec
from node.remotes.base import (
    BlockMissing,
    CarBody,
    NotSupported,
    Permanent,
    PlaceSpec,
    Presence,
    Pushed,
    Remote,
)
from node.remotes.kinds import REMOTES, open_remote
from node.remotes.readback import read_back
from tests.cluster_standin import ClusterStandin
from tests.conftest import Served
from tests.origins import eventually, multiaddr

WRITABLE = ["kubo", "peer", "pinning", "cluster"]
WRONG_TOKEN = "artkeep_0badc0de_not-a-token-anyone-made-7f3a9c"
ABSENT = Cid(1, 0x55, b"\x12\x20" + bytes(range(32)))  # a raw block no test ever stores
DOCS = Path(__file__).resolve().parents[1] / "docs" / "places.md"
ServeApp = Callable[..., Awaitable[Served]]  # conftest's serve_app fixture


@dataclass
class Work:
    """A signed work (record + image DAG) in the source node, with its blocks in DAG order and its CAR."""

    root: Cid
    name: str
    blocks: dict[Cid, bytes]
    car: bytes

    def body(self, chunk: int = 64 * 1024) -> CarBody:
        async def stream() -> AsyncIterator[bytes]:
            for start in range(0, len(self.car), chunk):
                yield self.car[start:start + chunk]

        return stream

    @property
    def dag_bytes(self) -> int:
        return sum(map(len, self.blocks.values()))


def make_work(node: Node, folder: Path, name: str = "lighthouse.png") -> Work:
    """An A1111 PNG of noise (1.2 MB, several 256 KiB chunks) rescued as a work: CIDv0 file, CIDv1 record."""
    rng = random.Random(name)
    image = Image.frombytes("RGB", (640, 640), rng.randbytes(640 * 640 * 3))
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a lighthouse at dusk\nNegative prompt: blur\nSteps: 20, Sampler: Euler a, "
                                "CFG scale: 7, Seed: 1234, Size: 640x640, Model: test")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    image.save(path, pnginfo=info, compress_level=0)
    [rescued] = list(node.rescue(sources.walk([path], archives=False), get_profile("unixfs-v0-2015")))
    assert rescued.outcome == "new" and rescued.work is not None, rescued
    blocks = {cid: node.get_block(cid) for cid in node.dag_blocks(rescued.work)}
    assert len(blocks) > 5
    out = bytearray()
    node.export_car(rescued.work, out.extend)
    return Work(rescued.work, name, blocks, bytes(out))


@dataclass
class Place:
    """A place of one kind over a real server: its spec, the Remote, and the server's own node."""

    spec: PlaceSpec
    target: Served
    session: aiohttp.ClientSession
    standin: ClusterStandin | None = None

    @property
    def remote(self) -> Remote:
        return open_remote(self.spec, self.session)

    def with_token(self, token: str) -> Remote:
        return open_remote(replace(self.spec, token=token), self.session)

    async def holds(self, root: Cid) -> bool:
        """What the server itself records (not what the remote says): is root pinned there?"""
        return self.target.node.get_pin(root) is not None


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def source(serve_app: ServeApp, tmp_path: Path) -> tuple[Served, Work]:
    """A daemon holding a work: the gateway a pinning service fetches from, and a gateway place."""
    served: Served = await serve_app()
    return served, make_work(served.node, tmp_path / "art")


async def open_place(kind: str, serve_app: ServeApp, source: Served, session: aiohttp.ClientSession) -> Place:
    """A real server of the kind, and the place over it (pinning fetches from source)."""
    if kind == "cluster":
        standin = ClusterStandin(peers=3)
        target: Served = await serve_app(tuple(standin.routes()))
        options = {"replication_min": "2", "replication_max": "3", "gateway": target.url}
        spec = validate_spec("cluster", target.url, options, name="cluster", token=standin.token)
        return Place(spec, target, session, standin)
    target = await serve_app()
    options = {
        "kubo": {},
        "peer": {"public_key": signing.peer_id(target.node.public_key())},
        "pinning": {"origins": multiaddr(source.url), "gateway": target.url},
        "gateway": {},
    }[kind]
    url = target.url + "/psa" if kind == "pinning" else target.url
    return Place(validate_spec(kind, url, options, name=kind, token=target.token), target, session)


Opener = Callable[[str], Awaitable[Place]]


@pytest.fixture
def opener(serve_app: ServeApp, source: tuple[Served, Work], session: aiohttp.ClientSession) -> Opener:
    """`await opener(kind)`: one more place of that kind, over its own server."""
    async def open_kind(kind: str) -> Place:
        return await open_place(kind, serve_app, source[0], session)

    return open_kind


@pytest.fixture(params=WRITABLE)
async def place(request: pytest.FixtureRequest, opener: Opener) -> Place:
    return await opener(request.param)


async def settles(remote: Remote, root: Cid, handle: str | None, expected: Presence) -> None:
    async def said() -> bool:
        return await remote.presence(root, handle) == expected

    await eventually(said, timeout=20)


# --- the contract's steps, shared with tests/interop/test_remotes_jsipfs.py
# `holds` asks the server itself (its own pin list), never the Remote under test.

Holds = Callable[[Cid], Awaitable[bool]]


async def pushed_pins_and_reads_back(remote: Remote, work: Work, holds: Holds) -> Pushed:
    """Push → the place says pinned, and its server pins it → every block reads back, byte for byte."""
    assert await remote.presence(work.root, None) == "missing"
    pushed = await remote.push(work.root, work.body(), name=work.name, meta={"artkeep": "1"})
    assert pushed.state == "pushed"
    await settles(remote, work.root, pushed.handle, "pinned")
    assert await holds(work.root)
    result = await read_back(remote, work.root, list(work.blocks))
    assert result.ok and result.missing is None and result.corrupt is None
    assert (result.blocks_verified, result.bytes_verified) == (len(work.blocks), work.dag_bytes)
    for cid, block in work.blocks.items():
        assert await remote.get_block(cid) == block
    by_blocks = await read_back(remote, work.root, list(work.blocks), via_car=False)
    assert by_blocks.ok and by_blocks.blocks_verified == len(work.blocks)
    return pushed


async def pushing_again_changes_nothing(remote: Remote, work: Work, first: Pushed) -> None:
    again = await remote.push(work.root, work.body(), name=work.name, meta={})
    assert again.state == "claimed"
    assert again.handle == first.handle  # the same PSA request, not a second one
    assert await remote.presence(work.root, again.handle) == "pinned"


async def removing_makes_it_missing(remote: Remote, work: Work, pushed: Pushed, holds: Holds) -> None:
    await remote.remove(work.root, pushed.handle)
    await settles(remote, work.root, pushed.handle, "missing")
    assert not await holds(work.root)
    await remote.remove(work.root, pushed.handle)  # removing what is not there is fine


# --- the contract, for every writable kind

async def test_a_pushed_work_is_pinned_there_and_reads_back_byte_for_byte(place: Place,
                                                                        source: tuple[Served, Work]) -> None:
    await pushed_pins_and_reads_back(place.remote, source[1], place.holds)


async def test_pushing_again_is_idempotent(place: Place, source: tuple[Served, Work]) -> None:
    _, work = source
    remote = place.remote
    first = await remote.push(work.root, work.body(), name=work.name, meta={})
    await settles(remote, work.root, first.handle, "pinned")
    pins_before = place.target.node.pins()
    await pushing_again_changes_nothing(remote, work, first)
    assert place.target.node.pins() == pins_before


async def test_a_removed_work_is_missing_and_removing_twice_is_fine(place: Place,
                                                                     source: tuple[Served, Work]) -> None:
    _, work = source
    remote = place.remote
    pushed = await remote.push(work.root, work.body(), name=work.name, meta={})
    await settles(remote, work.root, pushed.handle, "pinned")
    await removing_makes_it_missing(remote, work, pushed, place.holds)


async def test_a_wrong_token_is_permanent_and_never_shown(place: Place, source: tuple[Served, Work]) -> None:
    _, work = source
    token = f"admin:{WRONG_TOKEN}" if place.spec.kind == "cluster" else WRONG_TOKEN
    remote = place.with_token(token)
    with pytest.raises(Permanent) as pushing:
        await remote.push(work.root, work.body(), name=work.name, meta={})
    with pytest.raises(Permanent) as asking:
        await remote.presence(work.root, None)
    for raised in (pushing.value, asking.value):
        assert "credentials" in raised.message
        assert WRONG_TOKEN not in str(raised) and WRONG_TOKEN not in repr(raised)
        assert place.spec.name in raised.message
    assert not await place.holds(work.root)


# --- what only some kinds do

async def test_a_gateway_is_read_only_and_audits_what_it_serves(source: tuple[Served, Work],
                                                                session: aiohttp.ClientSession) -> None:
    served, work = source
    remote = open_remote(validate_spec("gateway", served.url, {}, name="gw"), session)
    assert not remote.writable
    assert await remote.presence(work.root, None) == "pinned"
    assert await remote.presence(ABSENT, None) == "missing"
    result = await read_back(remote, work.root, list(work.blocks))
    assert result.ok and result.bytes_verified == work.dag_bytes
    with pytest.raises(BlockMissing):
        await remote.get_block(ABSENT)
    # Nothing is ever sent to a gateway: a "push" only looks whether it serves the root.
    pushed = await remote.push(work.root, work.body(), name=work.name, meta={})
    assert (pushed.state, pushed.handle) == ("claimed", None)
    with pytest.raises(BlockMissing, match="only watched"):
        await remote.push(ABSENT, work.body(), name=work.name, meta={})
    with pytest.raises(NotSupported):
        await remote.remove(work.root, None)


async def test_a_private_gateway_needs_the_token(serve_app: ServeApp, source: tuple[Served, Work],
                                                 session: aiohttp.ClientSession) -> None:
    private: Served = await serve_app(serve_private_reads=True)
    _, work = source
    without = open_remote(validate_spec("gateway", private.url, {}, name="gw"), session)
    with pytest.raises(Permanent, match="credentials"):
        await without.presence(work.root, None)
    spec = validate_spec("gateway", private.url, {}, name="gw", token=private.token)
    assert await open_remote(spec, session).presence(work.root, None) == "missing"


async def test_a_peer_that_is_someone_else_gets_nothing(opener: Opener, source: tuple[Served, Work]) -> None:
    place = await opener("peer")
    _, work = source
    stranger = signing.peer_id(bytes(32))
    remote = open_remote(replace(place.spec, options={"public_key": stranger}), place.session)
    with pytest.raises(Permanent) as raised:
        await remote.push(work.root, work.body(), name=work.name, meta={})
    assert stranger in raised.value.message and place.spec.options["public_key"] in raised.value.message
    assert place.target.node.pins() == []


async def test_a_peer_reads_back_through_its_gateway(opener: Opener, source: tuple[Served, Work]) -> None:
    place = await opener("peer")
    _, work = source
    remote = place.remote
    await remote.push(work.root, work.body(), name=work.name, meta={})
    chunks = [chunk async for chunk in remote.get_car(work.root)]
    assert b"".join(chunks) == work.car  # the same depth-first CARv1 the source exported


async def test_a_cluster_pin_carries_the_options_and_counts_replication_min(
        opener: Opener, source: tuple[Served, Work]) -> None:
    place = await opener("cluster")
    assert place.standin is not None
    _, work = source
    remote = place.remote
    await remote.push(work.root, work.body(), name=work.name, meta={"artkeep": "1", "kind": "work"})
    [pin] = place.standin.pins.values()
    assert (pin.name, pin.metadata) == (work.name, {"artkeep": "1", "kind": "work"})
    assert (pin.replication_min, pin.replication_max, len(pin.allocations)) == (2, 3, 3)
    assert place.standin.requests[:3] == ["GET /pins/" + str(work.root), "POST /add",
                                          "POST /pins/" + str(work.root)]
    place.standin.failing = {pin.allocations[0]}
    assert await remote.presence(work.root, None) == "pinned"  # two of three is replication_min
    place.standin.failing = set(pin.allocations[:2])
    assert await remote.presence(work.root, None) == "failed"


async def test_a_failed_pin_request_is_replaced_not_duplicated(opener: Opener,
                                                               source: tuple[Served, Work]) -> None:
    from tests.fault_servers import closed_port_url

    place = await opener("pinning")
    _, work = source
    nowhere = multiaddr(closed_port_url())
    lost = open_remote(replace(place.spec, options={**place.spec.options, "origins": nowhere}), place.session)
    failed = await lost.push(work.root, work.body(), name=work.name, meta={})
    await settles(lost, work.root, failed.handle, "failed")
    retried = await place.remote.push(work.root, work.body(), name=work.name, meta={})
    assert retried.handle != failed.handle
    await settles(place.remote, work.root, retried.handle, "pinned")
    assert await place.remote.presence(work.root, failed.handle) == "missing"  # replaced: gone
    assert await place.remote.presence(work.root, None) == "pinned"  # found by CID alone


async def test_a_pinning_place_without_a_gateway_cannot_be_read(opener: Opener,
                                                                 source: tuple[Served, Work]) -> None:
    place = await opener("pinning")
    _, work = source
    without_gateway = {"origins": place.spec.options["origins"]}
    blind = open_remote(replace(place.spec, options=without_gateway), place.session)
    with pytest.raises(NotSupported):
        await blind.get_block(work.root)
    with pytest.raises(NotSupported):
        await read_back(blind, work.root, list(work.blocks))


async def test_a_place_without_its_token_refuses_before_sending(opener: Opener,
                                                                source: tuple[Served, Work]) -> None:
    for kind in ("pinning", "peer"):
        place = await opener(kind)
        remote = open_remote(replace(place.spec, token=None), place.session)
        with pytest.raises(Permanent, match="no token"):
            await remote.presence(source[1].root, None)


# --- configuration: what `artkeep place add` accepts

def test_a_spec_is_normalized() -> None:
    spec = validate_spec("cluster", "https://cluster.example.org:9094/", {"replication_min": " 2",
                                                                          "replication_max": "-1",
                                                                          "timeout": "2.50"},
                         name="lab", token="admin:pw")
    assert spec.url == "https://cluster.example.org:9094"
    assert dict(spec.options) == {"replication_min": "2", "replication_max": "-1", "timeout": "2.5"}
    assert "pw" not in repr(spec)


@pytest.mark.parametrize(("kind", "url", "options", "complaint"), [
    ("ipfs", "http://127.0.0.1:5001", {}, "unknown place kind"),
    ("kubo", "ftp://127.0.0.1", {}, "http:// or https://"),
    ("kubo", "http://user:pw@127.0.0.1:5001", {}, "credentials"),
    ("kubo", "http://127.0.0.1:5001?x=1", {}, "query"),
    ("kubo", "http://127.0.0.1:99999", {}, "not a valid URL"),
    ("kubo", "http://127.0.0.1:5001", {"gateway": "http://x"}, "take no option 'gateway'"),
    ("kubo", "http://127.0.0.1:5001", {"timeout": "0"}, "timeout"),
    ("kubo", "http://127.0.0.1:5001", {"timeout": "soon"}, "timeout"),
    ("peer", "http://127.0.0.1:8000", {}, "needs the option public_key"),
    ("peer", "http://127.0.0.1:8000", {"public_key": "QmNotAnEd25519Id"}, "peer ID"),
    ("pinning", "https://psa.example.org/pins", {}, "without /pins"),
    ("pinning", "https://psa.example.org", {"origins": "ftp://me"}, "only http and https"),
    ("pinning", "https://psa.example.org", {"origins": ",".join(f"/ip4/1.2.3.{n}/tcp/80/http"
                                                                  for n in range(21))}, "1 to 20"),
    ("cluster", "http://127.0.0.1:9094", {"replication_min": "0"}, "-1 (every peer) or at least 1"),
    ("cluster", "http://127.0.0.1:9094", {"replication_min": "3", "replication_max": "2"}, "not be more"),
    ("cluster", "http://127.0.0.1:9094", {"gateway": "127.0.0.1:8080"}, "gateway"),
])
def test_a_bad_spec_says_what_is_wrong(kind: str, url: str, options: dict[str, str], complaint: str) -> None:
    with pytest.raises(InputError, match=re.escape(complaint)):
        validate_spec(kind, url, options)


@pytest.mark.parametrize(("fields", "complaint"), [
    ({"name": "has space"}, "place name"),
    ({"token": "two words"}, "printable ASCII"),
    ({"holds": "everything"}, "holds"),
    ({"quota_bytes": -1}, "quota_bytes"),
])
def test_bad_common_fields_are_refused(fields: dict[str, object], complaint: str) -> None:
    with pytest.raises(InputError, match=complaint):
        validate_spec("kubo", "http://127.0.0.1:5001", {}, **fields)  # type: ignore[arg-type]


def test_every_option_is_documented_where_users_and_readers_look() -> None:
    docs = DOCS.read_text()
    for kind, options in KIND_OPTIONS.items():
        docstring = sys.modules[REMOTES[kind].__module__].__doc__ or ""
        assert f"`{kind}`" in docs, kind
        for option in options:
            assert option.name in docstring, (kind, option.name)
            assert f"`{option.name}`" in docs, (kind, option.name)
