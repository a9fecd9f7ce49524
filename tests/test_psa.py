"""The Pinning Service API against the real server on loopback, with other artkeep apps as origins."""

from __future__ import annotations

import asyncio
import json
import random
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web

from node import config
from node.cid import Cid
from node.node import Node
from node.profiles import get_profile
from node.web.app import build_app
from node.web.context import ServeOptions
from node.web.psa import format_rfc3339, parse_rfc3339
from tests.conftest import Served
from tests.origins import CountingListener, ScriptedGateway, blocks_of, car_of, eventually, multiaddr

ALL_STATUSES = "queued,pinning,pinned,failed"
SOME_CID = b"QmQFPiQo4CbJRV3JHNZkuvYauu7d5wVvYg656EcQzQ44B8"


def add_file(node: Node, folder: Path, name: str, size: int = 600_000) -> Cid:
    path = folder / name
    path.write_bytes(random.Random(name).randbytes(size))
    [(_, link)] = list(node.add_files([path], get_profile("unixfs-v0-2015")))
    assert not isinstance(link, Exception)
    return link.cid


async def call(served: Served, method: str, path: str, body: object = None, *,
               headers: dict[str, str] | None = None, data: bytes | None = None) -> tuple[int, Any]:
    """One request to /psa with the token; (status, JSON body or None)."""
    async with served.session.request(method, served.url + "/psa" + path, json=body, data=data,
                                      headers=served.auth if headers is None else headers) as response:
        text = await response.text()
        return response.status, json.loads(text) if text else None


async def settled(served: Served, requestid: str) -> dict[str, Any]:
    """The request's PinStatus once it is pinned or failed."""
    found: dict[str, Any] = {}

    async def done() -> bool:
        status, found["status"] = await call(served, "GET", f"/pins/{requestid}")
        assert status == 200
        return bool(found["status"]["status"] in ("pinned", "failed"))

    await eventually(done)
    return found["status"]


def psa_pins(node: Node) -> list[str]:
    return [pin.cid for pin in node.pins() if pin.kind == "psa"]


async def test_pin_lifecycle_from_another_artkeep_node(serve_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    here: Served = await serve_app()
    origin: Served = await serve_app()
    root = add_file(origin.node, tmp_path, "dream.png")
    status, created = await call(here, "POST", "/pins", {
        "cid": str(root), "name": "dream.png", "origins": [multiaddr(origin.url)], "meta": {"app": "t"}})
    assert status == 202
    assert created["status"] in ("queued", "pinning", "pinned")
    assert created["pin"] == {"cid": str(root), "name": "dream.png", "origins": [multiaddr(origin.url)],
                              "meta": {"app": "t"}}
    assert created["delegates"] == [multiaddr(here.url)]
    assert parse_rfc3339(created["created"]) > 0
    done = await settled(here, created["requestid"])
    assert done["status"] == "pinned", done
    assert done["created"] == created["created"]
    assert done["info"]["dag_size"] == str(sum(map(len, blocks_of(origin.node, root).values())))
    assert psa_pins(here.node) == [str(root)]  # `artkeep ls` shows it: the same pins table
    assert b"".join(here.node.cat(str(root))) == (tmp_path / "dream.png").read_bytes()
    status, listed = await call(here, "GET", "/pins")
    assert status == 200 and listed["count"] == 1 and listed["results"][0] == done
    assert await call(here, "DELETE", f"/pins/{created['requestid']}") == (202, None)
    assert (await call(here, "GET", f"/pins/{created['requestid']}"))[0] == 404
    assert here.node.pins() == []


async def test_content_already_here_is_pinned_before_post_returns(served: Served, tmp_path: Path) -> None:
    root = add_file(served.node, tmp_path, "local.png", 1000)
    served.node.unpin(root)
    status, created = await call(served, "POST", "/pins", {"cid": str(root)})
    assert status == 202 and created["status"] == "pinned"
    assert created["pin"] == {"cid": str(root), "origins": [], "meta": {}}
    assert psa_pins(served.node) == [str(root)]


async def test_a_corrupted_origin_fails_the_request_and_stores_nothing(serve_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    here: Served = await serve_app()
    with Node(tmp_path / "elsewhere") as there:
        root = add_file(there, tmp_path, "bad.png")
        car = bytearray(car_of(there, root))
        car[-1] ^= 0x01
    bad = await ScriptedGateway(car=bytes(car)).start()
    try:
        _, created = await call(here, "POST", "/pins", {"cid": str(root), "origins": [bad.multiaddr]})
        done = await settled(here, created["requestid"])
    finally:
        await bad.close()
    assert done["status"] == "failed"
    assert "does not match" in done["info"]["status_details"]
    assert here.node.pins() == [] and here.node.usage().blocks == 0


async def test_origins_outside_the_allowlist_get_no_packet(serve_app) -> None:  # type: ignore[no-untyped-def]
    here: Served = await serve_app(fetch_allow_networks="127.0.0.2/32")
    root = "QmQFPiQo4CbJRV3JHNZkuvYauu7d5wVvYg656EcQzQ44B8"
    async with CountingListener() as listener:
        origins = [f"/ip4/127.0.0.1/tcp/{listener.port}/http", "/ip4/10.0.0.1/tcp/80/http",
                   "/ip4/169.254.169.254/tcp/80/http", "/ip6/::1/tcp/80/http",
                   "/ip4/203.0.113.1/tcp/4001/p2p/QmPeer"]
        _, created = await call(here, "POST", "/pins", {"cid": root, "origins": origins})
        done = await settled(here, created["requestid"])
        assert listener.connections == 0
    details = done["info"]["status_details"]
    assert done["status"] == "failed"
    assert details.count("outside fetch.allow_networks") == 4 and "not an HTTP gateway" in details


@asynccontextmanager
async def running(home: Path, **settings: object) -> AsyncIterator[Served]:
    """An app on its own home folder, stopped (cleanup_ctx and all) when the block ends."""
    values = dict(config.build({}, {}).values)
    values["fetch.allow_networks"] = "127.0.0.0/8"
    values.update(settings)  # type: ignore[arg-type]
    node = Node(home)
    runner = web.AppRunner(build_app(node, ServeOptions.from_config(config.Config(values))),
                           access_log=None, shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    secret = node.create_token("restart")[1]
    try:
        async with ClientSession() as session:
            yield Served(f"http://127.0.0.1:{runner.addresses[0][1]}", node, secret, session, runner.app)
    finally:
        await runner.cleanup()
        node.close()


async def test_a_request_in_flight_resumes_after_a_restart(serve_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    origin: Served = await serve_app()
    root = add_file(origin.node, tmp_path, "slow.png")
    stalled = await ScriptedGateway(stall=asyncio.Event()).start()
    port = stalled.url.rsplit(":", 1)[1]
    async with running(tmp_path / "home") as first:
        _, created = await call(first, "POST", "/pins", {"cid": str(root), "origins": [stalled.multiaddr]})
        await eventually(lambda: _has_requests(stalled))
        _, seen = await call(first, "GET", f"/pins/{created['requestid']}")
        assert seen["status"] == "pinning"
    assert stalled.stall is not None
    stalled.stall.set()
    await stalled.close()
    # The origin comes back on the same port, now a real gateway: the next start finishes the job.
    proxy = await _forward(int(port), origin.url)
    try:
        async with running(tmp_path / "home") as second:
            done = await settled(second, created["requestid"])
            assert done["status"] == "pinned", done
            assert psa_pins(second.node) == [str(root)]
    finally:
        await proxy.cleanup()


async def _has_requests(gateway: ScriptedGateway) -> bool:
    return bool(gateway.requests)


async def _forward(port: int, target: str) -> web.AppRunner:
    """A gateway on 127.0.0.1:port that relays /ipfs requests to target (another artkeep app)."""
    async def relay(request: web.Request) -> web.Response:
        async with ClientSession() as session, session.get(target + request.path_qs,
                                                           headers=request.headers) as answer:
            return web.Response(body=await answer.read(), status=answer.status,
                                content_type=answer.content_type)

    app = web.Application()
    app.router.add_get("/ipfs/{cid}", relay)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
    return runner


@pytest.mark.parametrize(("method", "path"), [("GET", "/pins"), ("POST", "/pins"), ("GET", "/pins/x"),
                                              ("POST", "/pins/x"), ("DELETE", "/pins/x")])
async def test_every_endpoint_needs_a_token(served: Served, method: str, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer artkeep_nope_nope"}, {"Authorization": "Basic eDp5"}):
        async with served.session.request(method, served.url + "/psa" + path, headers=headers,
                                          json={"cid": "x"}) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"] == "Bearer"
            failure = await response.json()
            assert failure["error"]["reason"] == "UNAUTHORIZED" and failure["error"]["details"]


async def test_listing_pages_newest_first_and_filters(served: Served, tmp_path: Path) -> None:
    roots = [add_file(served.node, tmp_path, f"img-{i}.PNG", 300 + i) for i in range(5)]
    ids = []
    for i, root in enumerate(roots):
        _, created = await call(served, "POST", "/pins", {
            "cid": str(root), "name": f"Img-{i}.PNG",
            "meta": {"set": "odd" if i % 2 else "even", "n": str(i)}})
        ids.append(created["requestid"])
    failed = (await call(served, "POST", "/pins", {"cid": str(Cid(0, 0x70, b"\x12\x20" + bytes(32)))}))[1]
    await settled(served, failed["requestid"])

    seen: list[str] = []
    before = ""
    while True:
        status, page = await call(served, "GET", f"/pins?limit=2{before}")
        assert status == 200 and page["count"] == 5 - len(seen)
        seen += [item["requestid"] for item in page["results"]]
        if len(page["results"]) == page["count"]:
            break
        before = f"&before={page['results'][-1]['created']}"
    assert seen == ids[::-1]

    async def names(query: str) -> list[str]:
        status, page = await call(served, "GET", "/pins?" + query)
        assert status == 200, page
        assert page["count"] == len(page["results"])
        return sorted(item["pin"].get("name", "") for item in page["results"])

    assert await names("name=Img-1.PNG") == ["Img-1.PNG"]
    assert await names("name=img-1.png") == []
    assert await names("name=img-1.png&match=iexact") == ["Img-1.PNG"]
    assert await names("name=-3&match=partial") == ["Img-3.PNG"]
    assert await names("name=IMG&match=partial") == []
    assert await names("name=IMG&match=ipartial") == [f"Img-{i}.PNG" for i in range(5)]
    assert await names(f"cid={roots[0]},{roots[2].to_v1()},nonsense") == ["Img-0.PNG", "Img-2.PNG"]
    assert await names("meta=" + json.dumps({"set": "odd"})) == ["Img-1.PNG", "Img-3.PNG"]
    assert await names("meta=" + json.dumps({"set": "odd", "n": "3"})) == ["Img-3.PNG"]
    assert await names("status=failed") == [""]
    assert len(await names(f"status={ALL_STATUSES}")) == 6
    third = (await call(served, "GET", f"/pins/{ids[2]}"))[1]["created"]
    assert await names(f"after={third}") == ["Img-3.PNG", "Img-4.PNG"]
    assert await names(f"before={third}&after=2000-01-01T00:00:00%2B02:00") == ["Img-0.PNG", "Img-1.PNG"]


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=ten", "match=fuzzy", "status=done",
                                   "status=pinned,pinned", "before=yesterday", "after=2020-02-30T00:00:00Z",
                                   "meta=[1]", "meta={\"a\":1}", "meta={", "name=" + "n" * 256,
                                   "cid=" + ",".join(f"c{i}" for i in range(11))])
async def test_bad_list_parameters_are_400_failures(served: Served, query: str) -> None:
    status, failure = await call(served, "GET", "/pins?" + query)
    assert status == 400 and failure["error"]["reason"] == "BAD_REQUEST"


async def test_replacing_creates_a_new_request_and_releases_the_old_pin_once_settled(
        served: Served, tmp_path: Path) -> None:
    old_root = add_file(served.node, tmp_path, "v1.png", 500)
    new_root = add_file(served.node, tmp_path, "v2.png", 600)
    for root in (old_root, new_root):
        served.node.unpin(root)
    _, old = await call(served, "POST", "/pins", {"cid": str(old_root), "name": "v1"})
    status, new = await call(served, "POST", f"/pins/{old['requestid']}",
                             {"cid": str(new_root), "name": "v2"})
    assert status == 202 and new["requestid"] != old["requestid"] and new["status"] == "pinned"
    assert (await call(served, "GET", f"/pins/{old['requestid']}"))[0] == 404
    assert psa_pins(served.node) == [str(new_root)]
    assert (await call(served, "POST", "/pins/unknown", {"cid": str(new_root)}))[0] == 404


async def test_deleting_keeps_pins_others_still_need(served: Served, tmp_path: Path) -> None:
    cli_root = add_file(served.node, tmp_path, "cli.png", 700)  # pinned by the CLI: kind 'file'
    _, first = await call(served, "POST", "/pins", {"cid": str(cli_root)})
    await call(served, "DELETE", f"/pins/{first['requestid']}")
    assert served.node.get_pin(cli_root) is not None and served.node.get_pin(cli_root).kind == "file"  # type: ignore[union-attr]
    shared = add_file(served.node, tmp_path, "shared.png", 800)
    served.node.unpin(shared)
    _, a = await call(served, "POST", "/pins", {"cid": str(shared)})
    _, b = await call(served, "POST", "/pins", {"cid": str(shared.to_v1())})
    _, c = await call(served, "POST", "/pins", {"cid": str(shared)})
    await call(served, "DELETE", f"/pins/{a['requestid']}")
    assert sorted(psa_pins(served.node)) == sorted([str(shared), str(shared.to_v1())])  # c still wants it
    await call(served, "DELETE", f"/pins/{c['requestid']}")
    assert psa_pins(served.node) == [str(shared.to_v1())]  # pins.cid keeps each spelling apart
    await call(served, "DELETE", f"/pins/{b['requestid']}")
    assert psa_pins(served.node) == []
    assert (await call(served, "DELETE", f"/pins/{b['requestid']}"))[0] == 404


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'{"name": "x"}', b'{"cid": 5}',
                                  b'{"cid": "bafy-not-a-cid"}', b'{"cid": "%s", "origins": "x"}' % SOME_CID,
                                  b'{"cid": "%s", "meta": {"a": 1}}' % SOME_CID,
                                  b'{"cid": "%s", "name": null}' % SOME_CID,
                                  b'{"cid": "%s", "origins": ["a", "a"]}' % SOME_CID, b"\xff\xfe{"])
async def test_garbage_bodies_are_400_and_store_nothing(served: Served, body: bytes) -> None:
    status, failure = await call(served, "POST", "/pins", data=body,
                                 headers={**served.auth, "Content-Type": "application/json"})
    assert status == 400 and failure["error"]["reason"] == "BAD_REQUEST", failure
    assert (await call(served, "GET", f"/pins?status={ALL_STATUSES}"))[1]["count"] == 0


async def test_oversized_and_mistyped_bodies_store_nothing(serve_app) -> None:  # type: ignore[no-untyped-def]
    served: Served = await serve_app(serve_max_request_bytes=1000)
    big = {"cid": "QmQFPiQo4CbJRV3JHNZkuvYauu7d5wVvYg656EcQzQ44B8", "meta": {"pad": "x" * 2000}}
    status, failure = await call(served, "POST", "/pins", big)
    assert status == 413 and failure["error"]["reason"] == "REQUEST_ENTITY_TOO_LARGE"
    status, failure = await call(served, "POST", "/pins", data=b'{"cid": "x"}',
                                 headers={**served.auth, "Content-Type": "text/plain"})
    assert status == 415 and failure["error"]["reason"] == "UNSUPPORTED_MEDIA_TYPE"
    assert (await call(served, "GET", f"/pins?status={ALL_STATUSES}"))[1]["count"] == 0


async def test_a_truncated_body_stores_nothing(served: Served) -> None:
    host, port = served.url.removeprefix("http://").split(":")
    body = json.dumps({"cid": "QmQFPiQo4CbJRV3JHNZkuvYauu7d5wVvYg656EcQzQ44B8"}).encode()
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (f"POST /psa/pins HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {served.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body) + 50}\r\n\r\n")
    writer.write(head.encode() + body)  # 50 bytes short of what it announced, then the client hangs up
    await writer.drain()
    writer.transport.get_extra_info("socket").shutdown(socket.SHUT_WR)
    await reader.read()
    writer.close()
    await asyncio.sleep(0.1)
    assert (await call(served, "GET", f"/pins?status={ALL_STATUSES}"))[1]["count"] == 0


async def test_unknown_routes_and_methods_answer_failure_json(served: Served) -> None:
    async with served.session.put(served.url + "/psa/pins", headers=served.auth) as response:
        assert response.status == 405 and "POST" in response.headers["Allow"]
        assert (await response.json())["error"]["reason"] == "METHOD_NOT_ALLOWED"
    status, failure = await call(served, "GET", "/nothing")
    assert status == 404 and failure["error"]["reason"] == "NOT_FOUND"


def test_timestamps_round_trip_exactly() -> None:
    for micros in (0, 1, 1_595_871_148_276_000, 253_402_300_799_999_999):
        assert parse_rfc3339(format_rfc3339(micros)) == micros
    assert parse_rfc3339("2020-07-27T19:32:28.276+02:00") == parse_rfc3339("2020-07-27T17:32:28.276Z")
    assert parse_rfc3339("2016-12-31T23:59:60Z") == parse_rfc3339("2017-01-01T00:00:00Z")
