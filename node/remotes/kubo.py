"""A Kubo node's RPC API (`/api/v0`) as a place: dag/import to push, pin/ls to follow, pin/rm to remove.

I/O edge. Speaks Kubo's wire format (POST only, options in the query string,
NDJSON answers, errors as {"Message", "Code", "Type"}), which artkeep's own
/api/v0 and js-ipfs also speak; CIDs in answers are parsed in any multibase and
compared as CIDv1 (js-ipfs prints base58btc CIDv1, Kubo prints CIDv0 as given).
A push first asks pin/ls: a root already pinned recursively is "claimed" and
nothing is sent. Otherwise the work's CAR goes up as one streamed multipart
file part with pin-roots=true, and the answer must name the root with no pin
error. Reads ask with offline=true, so the node answers from its own store and
never fetches the block from the network (which would prove nothing).

Options of a `kubo` place:
    timeout   seconds to wait for a connection or for the next bytes of an answer (default 60)
The token is sent as `Authorization: Bearer TOKEN`, or as Basic when it is "user:password"
(Kubo's API.Authorizations takes either).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar, Final

import aiohttp

from node import cid as cids
from node.car import MAX_BLOCK_SIZE
from node.cid import Cid
from node.errors import InvalidCid
from node.remotes.base import (
    BlockMissing,
    CarBody,
    NotSupported,
    Permanent,
    PlaceSpec,
    Presence,
    Pushed,
    Remote,
    Retryable,
)
from node.remotes.http import PlaceHttp, auth_header, car_upload, close_stream, error_detail
from node.remotes.options import check_options, timeout_of

API: Final = "/api/v0"
# Kubo answers a command error with HTTP 500 and a message; these phrases are what "absent" looks like
# (js-ipfs's file blockstore says ENOENT's "no such file or directory" for a block it does not have).
NOT_PINNED: Final = ("not pinned",)
# How Kubo, js-ipfs ("ENOENT: no such file or directory") and artkeep (a damaged block) say a block
# cannot be served.
NO_BLOCK: Final = ("not found", "could not find", "no such block", "no such file or directory",
                   "does not match its cid")
MAX_ERROR_BODY: Final = 4096
log = logging.getLogger("artkeep.remotes")


def same_cid(text: object, cid: Cid) -> bool:
    """Whether an answer's CID string names cid (any multibase, CIDv0 or v1)."""
    if not isinstance(text, str):
        return False
    try:
        return cids.parse(text).to_v1() == cid.to_v1()
    except InvalidCid:
        return False


class KuboRemote(Remote):
    kind: ClassVar[str] = "kubo"
    token_required: ClassVar[bool] = False  # Kubo's RPC has no auth unless API.Authorizations says so

    def __init__(self, spec: PlaceSpec, session: aiohttp.ClientSession) -> None:
        super().__init__(spec, session)
        self.options = check_options(self.kind, spec.options)
        self.http = PlaceHttp(spec, session, headers=auth_header(spec.token), timeout=timeout_of(spec),
                              token_required=self.token_required)

    async def push(self, root: Cid, car: CarBody, *, name: str, meta: Mapping[str, str],
                   again: bool = False) -> Pushed:
        if not again and await self.presence(root, None) == "pinned":
            return Pushed("claimed", detail="pin/ls lists it as a recursive pin already")
        await self._import(root, car, name)
        log.info("pushed %s to %s", root, self.http.label, extra={"cid": str(root), "place": self.spec.name})
        return Pushed("pushed")

    async def _import(self, root: Cid, car: CarBody, name: str) -> None:
        what = "POST /api/v0/dag/import"
        stream = car()
        try:
            async with self.http.call("POST", f"{API}/dag/import", params={"pin-roots": "true"},
                                      data=car_upload(stream, name or str(root))) as response:
                records = await self.http.json_lines(response, what)
        finally:
            await close_stream(stream)
        for record in records:
            if isinstance(record, dict) and record.get("Type") == "error":
                raise self.http.error(Retryable, f"{what} failed while answering: {record.get('Message')}")
            found = record.get("Root") if isinstance(record, dict) else None
            if isinstance(found, dict) and same_cid(link_text(found.get("Cid")), root):
                if found.get("PinErrorMsg"):
                    raise self.http.error(Permanent, f"{what} took the CAR but did not pin {root}: "
                                                     f"{found['PinErrorMsg']}")
                return
        raise self.http.error(Retryable, f"{what} did not report pinning {root}")

    async def presence(self, root: Cid, handle: str | None) -> Presence:
        what = "POST /api/v0/pin/ls"
        async with self.http.call("POST", f"{API}/pin/ls", params={"arg": str(root), "type": "recursive"},
                                  allow=(200, 404, 500)) as response:
            if response.status == 404:
                return "missing"
            if response.status != 200:
                await self._expect_absent(response, what, NOT_PINNED)
                return "missing"
            listing = await self.http.json(response, what)
        keys = listing.get("Keys") if isinstance(listing, dict) else None
        if isinstance(keys, dict) and any(same_cid(cid, root) for cid in keys):
            return "pinned"
        return "missing"

    async def remove(self, root: Cid, handle: str | None) -> None:
        what = "POST /api/v0/pin/rm"
        async with self.http.call("POST", f"{API}/pin/rm", params={"arg": str(root)},
                                  allow=(200, 500)) as response:
            if response.status != 200:
                await self._expect_absent(response, what, NOT_PINNED)

    async def get_block(self, cid: Cid) -> bytes:
        what = "POST /api/v0/block/get"
        async with self.http.call("POST", f"{API}/block/get", params={"arg": str(cid), "offline": "true"},
                                  allow=(200, 500)) as response:
            if response.status != 200:
                await self._expect_absent(response, what, NO_BLOCK)
                raise BlockMissing(self.http.scrub(f"{self.http.label}: has no block {cid}"))
            return await self.http.read(response, MAX_BLOCK_SIZE, what, truncate=True)

    async def get_car(self, root: Cid) -> AsyncIterator[bytes]:
        what = "POST /api/v0/dag/export"
        async with self.http.call("POST", f"{API}/dag/export", params={"arg": str(root), "offline": "true"},
                                  allow=(200, 404, 500)) as response:
            if response.status == 404:  # no such command (artkeep's /api/v0 has none): read block by block
                raise NotSupported(self.http.scrub(f"{self.http.label}: dag/export is not served"))
            if response.status != 200:
                await self._expect_absent(response, what, NO_BLOCK)
                raise BlockMissing(self.http.scrub(f"{self.http.label}: cannot export {root}: a block is "
                                                   "missing"))
            async for chunk in self.http.chunks(response, what):
                yield chunk

    async def _expect_absent(self, response: aiohttp.ClientResponse, what: str,
                             phrases: tuple[str, ...]) -> None:
        """Return if the error answer says the thing is not there; else raise what the answer means."""
        detail = error_detail(await self.http.read(response, MAX_ERROR_BODY, what, truncate=True))
        if any(phrase in detail.lower() for phrase in phrases):
            return
        raise self.http.error(Retryable, f"{what} answered HTTP {response.status}: {detail}")


def link_text(value: Any) -> Any:
    """The CID string of a DAG-JSON link {"/": "..."} (Kubo, Cluster before 1.0), or the value itself."""
    return value.get("/") if isinstance(value, dict) else value
