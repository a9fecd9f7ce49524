"""Fetch a DAG from its origins' trustless gateways: every address allowed, every block verified.

I/O edge. Each connection goes to an address `NetworkPolicy` allows: IP
literals are checked before the request, names by a resolver that drops
every disallowed address it gets back, so the address checked is the
address connected to (DNS rebinding cannot slip in between). Redirects are
followed by hand and checked the same way. One origin at a time: first the
whole DAG as a CAR (`?format=car&dag-scope=all`), then whatever is still
missing block by block (`?format=raw`), every block hashed against its CID
before it is staged. Nothing reaches the store unless the DAG is complete.
Never follows links outside the DAG it was asked for, never proxies.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from types import TracebackType

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from node import __version__
from node.blockstore import MAX_BLOCK_SIZE
from node.bridge import BlockingReader
from node.cid import Cid
from node.errors import FetchError, InvalidOrigin, NodeError, OriginRefused, TooLarge
from node.intake import DagIntake
from node.netpolicy import NetworkPolicy, Origin, parse_address, parse_origin
from node.node import Node

CAR_MEDIA = "application/vnd.ipld.car"
RAW_MEDIA = "application/vnd.ipld.raw"
MAX_REDIRECTS = 3
CHUNK = 256 * 1024
log = logging.getLogger("artkeep.fetch")


def system_resolver() -> AbstractResolver:
    """The resolver names go through before the policy filters them (tests swap in their own)."""
    return aiohttp.DefaultResolver()


class AllowedResolver(AbstractResolver):
    """Resolves with `inner`, then keeps only the addresses the policy allows (OriginRefused if none)."""

    def __init__(self, inner: AbstractResolver, policy: NetworkPolicy) -> None:
        self._inner = inner
        self._policy = policy

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        allowed = [result for result in found if self._policy.allows(result["host"])]
        if not allowed:
            addresses = ", ".join(sorted({result["host"] for result in found})) or "no address"
            raise OriginRefused(f"{host} resolves to {addresses}, outside fetch.allow_networks "
                                f"({self._policy}); nothing was sent to it")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


class _Budget:
    """Bytes one request may still download across all its origins."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    @property
    def remaining(self) -> int:
        return self.limit - self.used

    def spend(self, size: int) -> None:
        self.used += size
        if self.used > self.limit:
            raise TooLarge(f"the DAG is over the {self.limit}-byte fetch limit")


class Fetcher:
    """One HTTP client for all fetches; use as `async with Fetcher(...) as fetcher`."""

    def __init__(self, policy: NetworkPolicy, *, timeout: float, max_bytes: int,
                 resolver: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Fetcher:
        resolver = AllowedResolver(self._resolver or system_resolver(), self.policy)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=resolver, limit=32),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout, sock_read=self.timeout),
            headers={"User-Agent": f"artkeep/{__version__}"},
            cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, node: Node, root: Cid, origins: Sequence[str]) -> DagIntake:
        """A complete intake of root's DAG from the first origin that delivers it; the caller keeps it.

        FetchError naming what went wrong with every origin if none does.
        """
        here = node.receive_dag(root)
        if await asyncio.to_thread(here.next_wanted) is None:
            return here  # complete already: no origin is asked anything
        reasons: list[str] = []
        usable: list[Origin] = []
        for text in origins:
            try:
                usable.append(parse_origin(text))
            except InvalidOrigin as exc:
                reasons.append(exc.message)
        budget = _Budget(self.max_bytes)
        for origin in usable:
            intake = node.receive_dag(root)
            try:
                await self._fetch_from(origin, intake, budget)
            except NodeError as exc:
                await asyncio.to_thread(intake.abort)
                log.info("fetch of %s from %s failed: %s", root, origin, exc.message)
                reasons.append(f"{origin}: {exc.message}")
                if isinstance(exc, TooLarge):
                    break
                continue
            log.info("fetched %s from %s (%d blocks, %d bytes)", root, origin, intake.received, budget.used)
            return intake
        if not usable:
            reasons.append("no origin is an HTTP(S) trustless gateway this node can fetch from")
        raise FetchError(f"could not fetch {root}: {'; '.join(reasons)}")

    async def _fetch_from(self, origin: Origin, intake: DagIntake, budget: _Budget) -> None:
        try:
            await self._car(origin, intake, budget)
            car_failure = None
        except (OriginRefused, TooLarge):
            raise
        except NodeError as exc:
            car_failure = exc.message
            log.info("CAR of %s from %s failed (%s); asking block by block", intake.root, origin, car_failure)
        try:
            while (cid := await asyncio.to_thread(intake.next_wanted)) is not None:
                block = await self._raw(origin, cid, budget)
                await asyncio.to_thread(intake.add, cid, block)
        except NodeError as exc:
            if car_failure is None:
                raise
            raise type(exc)(f"CAR: {car_failure}; then block by block: {exc.message}") from None

    async def _car(self, origin: Origin, intake: DagIntake, budget: _Budget) -> None:
        async with self._get(origin, f"/ipfs/{intake.root}?format=car&dag-scope=all", CAR_MEDIA) as response:
            loop = asyncio.get_running_loop()
            reader = BlockingReader(loop, lambda size: _read(response, size), budget.remaining,
                                    self.timeout * 2)  # the session's sock_read timeout fires first
            ingest = asyncio.ensure_future(asyncio.to_thread(intake.add_car, reader))
            try:
                await asyncio.shield(ingest)
            except TooLarge:
                raise TooLarge(f"the DAG is over the {budget.limit}-byte fetch limit") from None
            except asyncio.CancelledError:
                # The thread still holds the intake: end its stream, let it stop, then let go.
                response.close()
                with suppress(NodeError, aiohttp.ClientError):
                    await ingest
                raise
            finally:
                budget.used += reader.consumed

    async def _raw(self, origin: Origin, cid: Cid, budget: _Budget) -> bytes:
        async with self._get(origin, f"/ipfs/{cid}?format=raw", RAW_MEDIA) as response:
            block = bytearray()
            while chunk := await _read(response, CHUNK):
                block += chunk
                budget.spend(len(chunk))
                if len(block) > MAX_BLOCK_SIZE:
                    raise FetchError(f"block {cid} is over the {MAX_BLOCK_SIZE}-byte block limit")
            return bytes(block)

    @asynccontextmanager
    async def _get(self, origin: Origin, target: str,
                   media_type: str) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET with redirects followed by hand, each hop's address checked; only a 200 of media_type."""
        assert self._session is not None, "use the Fetcher as an async context manager"
        url = URL(origin.base + target, encoded=True)
        for _ in range(MAX_REDIRECTS + 1):
            self._check_host(url)
            try:
                response = await self._session.get(url, headers={"Accept": media_type}, allow_redirects=False)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise FetchError(f"{url.host}:{url.port}: {_describe(exc)}") from None
            location = response.headers.get("Location")
            if response.status in (301, 302, 303, 307, 308) and location:
                response.release()
                url = url.join(URL(location))
                continue
            try:
                if response.status != 200:
                    raise FetchError(f"{url} answered HTTP {response.status}")
                if response.content_type != media_type:
                    raise FetchError(f"{url} answered {response.content_type!r}, not {media_type}")
                yield response
            finally:
                response.release()
            return
        raise FetchError(f"more than {MAX_REDIRECTS} redirects from {origin}")

    def _check_host(self, url: URL) -> None:
        """Refuse a disallowed IP literal here: aiohttp does not ask the resolver about those."""
        if url.scheme not in ("http", "https") or not url.host or url.user or url.password:
            raise FetchError(f"refusing to fetch {url}: only plain http(s) URLs without credentials")
        try:
            address = parse_address(url.host)
        except NodeError:
            return  # a name: AllowedResolver checks every address it resolves to
        self.policy.check(address)


async def _read(response: aiohttp.ClientResponse, size: int) -> bytes:
    try:
        return await response.content.read(size)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise FetchError(f"{response.url.host}: {_describe(exc)}") from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
