"""Origins for fetch tests, all on 127.0.0.1: a scripted gateway that misbehaves on purpose, a listener
that only counts connections (to prove a refused origin got no packet), and a fixed DNS resolver."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from node.cid import Cid
from node.node import Node


def car_of(node: Node, root: Cid) -> bytes:
    out = bytearray()
    node.export_car(root, out.extend)
    return bytes(out)


def blocks_of(node: Node, root: Cid) -> dict[str, bytes]:
    """Every block of root's DAG by CID string (in the order export_car writes them)."""
    from node import dag

    return {str(cid): block for cid, block in dag.walk(root, node.get_block)}


def multiaddr(url: str) -> str:
    """http://127.0.0.1:PORT → /ip4/127.0.0.1/tcp/PORT/http."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return f"/ip4/{host}/tcp/{port}/http"


@dataclass
class ScriptedGateway:
    """Serves /ipfs/{cid}?format=car from `car` (404 if None) and ?format=raw from `blocks`.

    `stall` holds every response until set; `redirect` answers each request with a 302 there.
    """

    car: bytes | None = None
    blocks: Mapping[str, bytes] = field(default_factory=dict)
    stall: asyncio.Event | None = None
    redirect: str | None = None
    truncate_car_at: int | None = None
    requests: list[str] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> ScriptedGateway:
        app = web.Application()
        app.router.add_get("/ipfs/{cid}", self._serve)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    @property
    def multiaddr(self) -> str:
        return multiaddr(self.url)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path_qs)
        if self.stall is not None:
            await self.stall.wait()
        if self.redirect is not None:
            raise web.HTTPFound(self.redirect)
        cid = request.match_info["cid"]
        if request.query.get("format") == "car" and self.car is not None:
            body = self.car if self.truncate_car_at is None else self.car[: self.truncate_car_at]
            return web.Response(body=body, content_type="application/vnd.ipld.car")
        if request.query.get("format") == "raw" and cid in self.blocks:
            return web.Response(body=self.blocks[cid], content_type="application/vnd.ipld.raw")
        raise web.HTTPNotFound()


class CountingListener:
    """A TCP listener on 127.0.0.1 that accepts, counts and closes: did anyone connect at all?"""

    def __init__(self) -> None:
        self.connections = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> CountingListener:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            writer.close()

        self._server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


class FixedResolver(AbstractResolver):
    """DNS as a table: name → addresses; any other name does not exist. Never sends a query."""

    def __init__(self, table: Mapping[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.table:
            raise OSError(f"{host}: no such name (test resolver)")
        return [ResolveResult(hostname=host, host=address, port=port,
                              family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                              proto=0, flags=0) for address in self.table[host]]

    async def close(self) -> None:
        return None


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll check until it is true; fail after timeout seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
