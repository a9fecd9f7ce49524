"""FAKE servers that misbehave on purpose: the faults a real place cannot be made to produce on demand.

These are fault injectors, not imitations of any place. A FaultServer is a
loopback HTTP server, usually a proxy in front of a REAL server (an artkeep
app from `serve_app`, the cluster stand-in): requests pass through untouched
unless an injected fault takes them. The push queue's tests can use them too:

    async with FaultServer(upstream=served.url) as front:
        front.inject(status(503, headers={"Retry-After": "7"}), times=2)   # the next two requests
        front.inject(tamper(-1), path="/ipfs/")                           # a byte flipped in answers
        spec = PlaceSpec("p", "kubo", front.url, token=served.token)      # the place is the front

A fault is chosen per request: the first injected rule whose path prefix and
method match, and which has uses left. Without an upstream, a request no fault
takes is answered 404. `closed_port_url()` is a place that is down.

Faults:
    status(code, headers=, body=)   answer this status (after reading the upload, as a real server would)
    stall()                         accept, then never answer (a place slower than any timeout)
    reset_after(n)                  read n bytes of the upload, then reset the connection (TCP RST)
    tamper(offset)                  pass through, with the answer's byte at offset flipped (a liar)
    truncate(size)                  pass through, the answer cut after size bytes (a stream that broke off)
    serve(body, content_type=)      answer these bytes with 200 (a liar that claims what it lacks)
    endless_car(root)               a CARv1 of root that never ends: the same stray block, over and over
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import ClientSession, ClientTimeout, web

from node import car
from node import cid as cids
from node.cid import Cid

FORWARD_TIMEOUT = 60.0
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host",
                        "content-length", "content-encoding"})


@dataclass(frozen=True, slots=True)
class Answer:
    """What the upstream answered, read whole (test DAGs are small)."""

    status: int
    headers: dict[str, str]
    body: bytes


Fault = Callable[[web.Request, "FaultServer"], Awaitable[web.StreamResponse]]


@dataclass
class _Rule:
    fault: Fault
    path: str
    method: str | None
    times: int | None

    def takes(self, request: web.Request) -> bool:
        return ((self.times is None or self.times > 0) and request.path.startswith(self.path)
                and (self.method is None or request.method == self.method))


@dataclass
class FaultServer:
    """A FAKE loopback server injecting faults, in front of `upstream` (a real server) if given."""

    upstream: str | None = None
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path?query) of every request
    url: str = ""
    _rules: list[_Rule] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _session: ClientSession | None = None

    def inject(self, fault: Fault, *, path: str = "", method: str | None = None,
               times: int | None = None) -> None:
        """Apply fault to matching requests: `times` of them (None: every one, until clear())."""
        self._rules.append(_Rule(fault, path, method, times))

    def clear(self) -> None:
        """Let every request through again."""
        self._rules.clear()

    async def __aenter__(self) -> FaultServer:
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self._session = ClientSession(timeout=ClientTimeout(total=FORWARD_TIMEOUT), auto_decompress=False)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        rule = next((rule for rule in self._rules if rule.takes(request)), None)
        if rule is not None:
            if rule.times is not None:
                rule.times -= 1
            return await rule.fault(request, self)
        if self.upstream is None:
            await drain(request)
            return web.Response(status=404, text="no fault injected for this request\n")
        answer = await self.forward(request)
        return web.Response(status=answer.status, headers=answer.headers, body=answer.body)

    async def forward(self, request: web.Request) -> Answer:
        """Send the request on to the upstream, its body streamed; its whole answer."""
        assert self._session is not None and self.upstream is not None, "forward needs an upstream"
        headers = {name: value for name, value in request.headers.items() if name.lower() not in HOP_BY_HOP}
        data = request.content if request.body_exists else None
        async with self._session.request(request.method, self.upstream + request.path_qs, headers=headers,
                                         data=data, allow_redirects=False) as response:
            body = await response.read()
            kept = {name: value for name, value in response.headers.items() if name.lower() not in HOP_BY_HOP}
            return Answer(response.status, kept, body)


async def drain(request: web.Request) -> int:
    """Read the whole upload, as a server does before it answers; return its size."""
    size = 0
    async for chunk in request.content.iter_chunked(256 * 1024):
        size += len(chunk)
    return size


def status(code: int, *, headers: dict[str, str] | None = None, body: bytes = b"") -> Fault:
    async def fault(request: web.Request, server: FaultServer) -> web.StreamResponse:
        await drain(request)
        return web.Response(status=code, headers=headers, body=body)

    return fault


def serve(body: bytes, *, content_type: str = "application/json") -> Fault:
    async def fault(request: web.Request, server: FaultServer) -> web.StreamResponse:
        await drain(request)
        return web.Response(body=body, content_type=content_type)

    return fault


def stall() -> Fault:
    async def fault(request: web.Request, server: FaultServer) -> web.StreamResponse:
        await asyncio.Event().wait()  # until the server shuts down and cancels this handler
        raise AssertionError("unreachable")

    return fault


def reset_after(received: int) -> Fault:
    async def fault(request: web.Request, server: FaultServer) -> web.StreamResponse:
        got = 0
        while got < received and (chunk := await request.content.read(received - got)):
            got += len(chunk)
        transport = request.transport
        assert transport is not None
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
        transport.abort()
        return web.Response(status=500)  # never reaches the client: the connection is gone

    return fault


def tamper(offset: int) -> Fault:
    """Pass through, flipping one byte of a non-empty answer body (offset may be negative)."""
    async def fault(request: web.Request, server: FaultServer) -> web.StreamResponse:
        answer = await server.forward(request)
        body = bytearray(answer.body)
        if body:
            body[offset] ^= 0x01
        return web.Response(status=answer.status, headers=answer.headers, body=bytes(body))

    return fault


def truncate(size: int) -> Fault:
    """Pass through, answering only the first size bytes of the body (with a matching Content-Length)."""
    async def fault(request: web.Request, server: FaultServer) -> web.StreamResponse:
        answer = await server.forward(request)
        return web.Response(status=answer.status, headers=answer.headers, body=answer.body[:size])

    return fault


def endless_car(root: Cid) -> Fault:
    """A CAR whose sections never end, all of one small raw block nobody asked for."""
    async def fault(request: web.Request, server: FaultServer) -> web.StreamResponse:
        stray = b"a block nobody asked for"
        section = car.encode_section(cids.cid_of(stray, cids.RAW), stray)
        response = web.StreamResponse(headers={"Content-Type": "application/vnd.ipld.car"})
        await response.prepare(request)
        await response.write(car.encode_header([root]))
        while True:  # until the client hangs up, or the server shuts down
            await response.write(section * 64)

    return fault


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (the port was bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
