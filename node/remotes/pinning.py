"""Any IPFS Pinning Service API (v1.0.0) endpoint as a place: ask it to pin, follow the request, delete it.

I/O edge. A push sends no bytes: `POST /pins {cid, name, origins, meta}` asks
the service to fetch the DAG from our gateway (option `origins`), and the
request's id is the handle that follows it: `GET /pins/{requestid}` maps
queued/pinning → "pinning", pinned → "pinned", failed → "failed", 404 →
"missing". Pushing is idempotent: a request the service already has for the
CID (`GET /pins?cid=`) is reused; a failed one is replaced (`POST
/pins/{requestid}`) rather than left beside a new one. Rate limits (429 with
Retry-After) surface as Retryable with retry_after; this module never waits or
retries by itself. Reads need the service's gateway (option `gateway`); without
it get_block and get_car raise NotSupported.

Options of a `pinning` place:
    origins   comma-separated multiaddrs or http(s) URLs of OUR gateway, where the service fetches
              the blocks from (e.g. /dns4/art.example.org/tcp/443/https); default: push.origins
    gateway   a trustless gateway URL of the service, used to read blocks back for audits
    timeout   seconds to wait for a connection or for the next bytes of an answer (default 60)
The URL is the service's endpoint without /pins; the token (required) goes as `Authorization: Bearer`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, ClassVar, Final, Literal
from urllib.parse import quote

import aiohttp

from node.cid import Cid
from node.remotes.base import CarBody, Permanent, PlaceSpec, Presence, Pushed, Retryable
from node.remotes.gateway import GatewayReader, ReadsThroughGateway, gateway_reader
from node.remotes.http import PlaceHttp, auth_header
from node.remotes.options import check_options, timeout_of

STATUSES: Final[Mapping[str, Presence]] = {"queued": "pinning", "pinning": "pinning", "pinned": "pinned",
                                           "failed": "failed"}
# Which of several requests for one CID to follow: the one furthest along, then the newest.
PREFERENCE: Final = ("pinned", "pinning", "queued", "failed")
MAX_NAME: Final = 255
FIND_LIMIT: Final = 100
log = logging.getLogger("artkeep.remotes")


class PinningRemote(ReadsThroughGateway):
    kind: ClassVar[str] = "pinning"

    def __init__(self, spec: PlaceSpec, session: aiohttp.ClientSession) -> None:
        super().__init__(spec, session)
        self.options = check_options(self.kind, spec.options)
        self.origins = self.options["origins"].split(",") if "origins" in self.options else []
        self.http = PlaceHttp(spec, session, headers=auth_header(spec.token, basic_allowed=False),
                              timeout=timeout_of(spec), token_required=True)
        self.reader: GatewayReader | None = gateway_reader(spec, session, self.options)

    async def push(self, root: Cid, car: CarBody, *, name: str, meta: Mapping[str, str],
                   again: bool = False) -> Pushed:
        pin: dict[str, Any] = {"cid": str(root), "origins": self.origins, "meta": dict(meta)}
        if name:
            pin["name"] = name[:MAX_NAME]
        existing = await self._find(root)
        if existing and existing[0]["status"] != "failed":
            found = existing[0]
            state: Literal["pushed", "claimed"] = "claimed" if found["status"] == "pinned" else "pushed"
            return Pushed(state, handle=found["requestid"], detail=f"request {found['requestid']} exists")
        if not self.origins:
            raise self.http.error(Permanent, "has no origins to fetch from: set the place's origins "
                                             "option (or push.origins) to this node's public gateway")
        path = _pin_path(existing[0]["requestid"]) if existing else "/pins"  # replace a failed request
        what = f"POST {path}"
        async with self.http.call("POST", path, data=json.dumps(pin).encode(),
                                  headers={"Content-Type": "application/json"},
                                  allow=(200, 201, 202)) as response:
            created = self._pin_status(await self.http.json(response, what), what)
        log.info("asked %s to pin %s (request %s)", self.http.label, root, created["requestid"],
                 extra={"cid": str(root), "place": self.spec.name})
        state = "claimed" if created["status"] == "pinned" else "pushed"
        return Pushed(state, handle=created["requestid"], detail=f"request {created['requestid']} "
                                                                 f"is {created['status']}")

    async def presence(self, root: Cid, handle: str | None) -> Presence:
        if handle is None:
            existing = await self._find(root)
            return STATUSES[existing[0]["status"]] if existing else "missing"
        what = f"GET {_pin_path(handle)}"
        async with self.http.call("GET", _pin_path(handle), allow=(200, 404)) as response:
            if response.status == 404:
                return "missing"
            found = self._pin_status(await self.http.json(response, what), what)
        return STATUSES[found["status"]]

    async def remove(self, root: Cid, handle: str | None) -> None:
        handles = [handle] if handle is not None else [found["requestid"] for found in await self._find(root)]
        for requestid in handles:
            async with self.http.call("DELETE", _pin_path(requestid), allow=(200, 202, 204, 404)):
                pass


    async def _find(self, root: Cid) -> list[dict[str, Any]]:
        """The service's requests for root, the one to follow first."""
        what = "GET /pins?cid="
        params = {"cid": str(root), "status": ",".join(STATUSES), "limit": str(FIND_LIMIT)}
        async with self.http.call("GET", "/pins", params=params) as response:
            answer = await self.http.json(response, what)
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list):
            raise self.http.error(Retryable, f"{what}: the answer has no results list")
        found = [self._pin_status(item, what) for item in results]
        # Results come newest first (the spec's order); a stable sort keeps that within each status.
        return sorted(found, key=lambda item: PREFERENCE.index(item["status"]))

    def _pin_status(self, value: Any, what: str) -> dict[str, Any]:
        """A PinStatus with a requestid and a known status, or Retryable: the service answered nonsense."""
        if (not isinstance(value, dict) or not isinstance(value.get("requestid"), str)
                or not value["requestid"] or value.get("status") not in STATUSES):
            raise self.http.error(Retryable, f"{what}: the answer is not a PinStatus: {str(value)[:120]}")
        return value


def _pin_path(requestid: str) -> str:
    return "/pins/" + quote(requestid, safe="")  # an id is the service's text: never let it change the path
