"""A read-only place: any trustless gateway, as an audit target; and the gateway reads other kinds share.

I/O edge. `GatewayReader` asks `/ipfs/{cid}?format=raw` for one block and
`/ipfs/{root}?format=car&dag-scope=all` for a whole DAG, with the matching
Accept headers, and hands back what it got, unverified (read_back re-hashes).
An answer in another media type means the URL is not a trustless gateway: that
is Permanent, never reported as corrupt data. It never sends a token to a
gateway unless the place's own API is that gateway (peer, gateway kinds).

Options of a `gateway` place:
    timeout   seconds to wait for a connection or for the next bytes of an answer (default 60)
The token, if any, goes as `Authorization: Bearer` (an artkeep node with serve.private_reads).
`presence` is `HEAD /ipfs/{cid}?format=raw`: 200 → pinned; 404, 410 (and 412, a gateway
answering only from its cache) → missing. A gateway place watches every pin its `holds`
allows: `push` sends nothing, it asks `presence` and is `claimed` when the gateway serves the
root (BlockMissing otherwise); the push queue and the audit then read the blocks back. remove
raises NotSupported.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import ClassVar, Final

import aiohttp

from node.car import MAX_BLOCK_SIZE
from node.cid import Cid
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
from node.remotes.http import CAR_MEDIA, PlaceHttp, auth_header
from node.remotes.options import check_options, timeout_of

RAW_MEDIA: Final = "application/vnd.ipld.raw"
CAR_ACCEPT: Final = f"{CAR_MEDIA}; version=1; order=dfs; dups=n"
GONE: Final = (404, 410, 412)


class GatewayReader:
    """Reads blocks and CARs from one trustless gateway."""

    def __init__(self, http: PlaceHttp) -> None:
        self.http = http

    async def presence(self, cid: Cid) -> Presence:
        async with self.http.call("HEAD", f"/ipfs/{cid}", params={"format": "raw"},
                                  headers={"Accept": RAW_MEDIA}, allow=(200, *GONE),
                                  redirects=True) as response:
            return "pinned" if response.status == 200 else "missing"

    async def get_block(self, cid: Cid) -> bytes:
        what = f"GET /ipfs/{cid}?format=raw"
        async with self.http.call("GET", f"/ipfs/{cid}", params={"format": "raw"},
                                  headers={"Accept": RAW_MEDIA}, allow=(200, *GONE),
                                  redirects=True) as response:
            self._check_served(response, RAW_MEDIA, what, f"block {cid}")
            # A block is never over the limit: return one byte more, so a longer answer cannot hash right.
            return await self.http.read(response, MAX_BLOCK_SIZE, what, truncate=True)

    async def get_car(self, root: Cid) -> AsyncIterator[bytes]:
        what = f"GET /ipfs/{root}?format=car"
        async with self.http.call("GET", f"/ipfs/{root}", params={"format": "car", "dag-scope": "all"},
                                  headers={"Accept": CAR_ACCEPT}, allow=(200, *GONE),
                                  redirects=True) as response:
            self._check_served(response, CAR_MEDIA, what, f"DAG {root}")
            async for chunk in self.http.chunks(response, what):
                yield chunk

    def _check_served(self, response: aiohttp.ClientResponse, media: str, what: str, wanted: str) -> None:
        """BlockMissing unless the gateway answered 200, Permanent unless with the media type asked for."""
        if response.status != 200:
            raise BlockMissing(self.http.scrub(f"{self.http.label}: has no {wanted} "
                                               f"(HTTP {response.status})"))
        if response.content_type != media:
            raise self.http.error(Permanent, f"{what} answered {response.content_type or 'no media type'!r}, "
                                             f"not {media}: is this URL a trustless gateway?")


def gateway_reader(spec: PlaceSpec, session: aiohttp.ClientSession, options: Mapping[str, str]) -> \
        GatewayReader | None:
    """The reader for a place's `gateway` option (no credentials: it is another host's business), if set."""
    url = options.get("gateway")
    if url is None:
        return None
    return GatewayReader(PlaceHttp(spec, session, base=url, timeout=timeout_of(spec)))


class GatewayRemote(Remote):
    kind: ClassVar[str] = "gateway"
    writable: ClassVar[bool] = False

    def __init__(self, spec: PlaceSpec, session: aiohttp.ClientSession) -> None:
        super().__init__(spec, session)
        check_options(self.kind, spec.options)
        http = PlaceHttp(spec, session, headers=auth_header(spec.token, basic_allowed=False),
                         timeout=timeout_of(spec))
        self.reader = GatewayReader(http)

    async def push(self, root: Cid, car: CarBody, *, name: str, meta: Mapping[str, str],
                   again: bool = False) -> Pushed:
        """Nothing can be sent to a gateway: a copy there is one it serves on its own. "Pushing" looks
        whether it does (then the queue reads every block back); until it does, the copy is failing."""
        if await self.reader.presence(root) == "pinned":
            return Pushed("claimed", None, "the gateway serves it")
        raise BlockMissing(self.reader.http.scrub(f"{self.reader.http.label}: does not serve {root} (a "
                                                  "gateway is only watched; nothing can be pushed to it)"))

    async def presence(self, root: Cid, handle: str | None) -> Presence:
        return await self.reader.presence(root)

    async def remove(self, root: Cid, handle: str | None) -> None:
        raise NotSupported(f"gateway place {self.spec.name!r} is read-only: nothing to remove")

    async def get_block(self, cid: Cid) -> bytes:
        return await self.reader.get_block(cid)

    async def get_car(self, root: Cid) -> AsyncIterator[bytes]:
        async for chunk in self.reader.get_car(root):
            yield chunk


class ReadsThroughGateway(Remote):
    """A kind whose copies can be read back only through its optional `gateway` option (pinning, cluster)."""

    reader: GatewayReader | None

    async def get_block(self, cid: Cid) -> bytes:
        return await self._reader().get_block(cid)

    async def get_car(self, root: Cid) -> AsyncIterator[bytes]:
        async for chunk in self._reader().get_car(root):
            yield chunk

    def _reader(self) -> GatewayReader:
        if self.reader is None:
            raise NotSupported(f"{self.kind} place {self.spec.name!r} has no gateway option: its blocks "
                               "cannot be read back")
        return self.reader
