"""An IPFS Cluster REST API as a place: the CAR delivered with /add, pinned with replication factors.

I/O edge. A push first asks `GET /pins/{cid}`: a root the cluster already
counts as pinned is "claimed" and nothing is sent. Otherwise the work's CAR goes
up as a streamed multipart file to `POST /add?format=car` (so the cluster has
the blocks without fetching them from us), then `POST /pins/{cid}` sets the pin
with replication-min/-max, name and meta-KEY=VALUE. `presence` reads the
GlobalPinInfo peer_map: "pinned" when at least replication_min peers report
pinned (all peers for -1; without the option, every allocated peer),
"pinning" while some are pin_queued or pinning, "failed" when the rest are
errors or too few copies with nothing under way, "missing" when no peer holds
it. Reads need a gateway of the cluster's IPFS peers (option `gateway`).

Options of a `cluster` place:
    replication_min   fewest cluster peers that must pin (-1: all); the cluster's default if unset
    replication_max   most cluster peers that should pin (-1: all); the cluster's default if unset
    gateway           a trustless gateway URL in front of the cluster's IPFS peers, to read blocks back
    timeout           seconds to wait for a connection or for the next bytes of an answer (default 60)
The token is "user:password" for Basic auth (service.json basic_auth_credentials) or a bearer JWT.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar, Final
from urllib.parse import quote

import aiohttp

from node.cid import Cid
from node.remotes.base import CarBody, PlaceSpec, Presence, Pushed, Retryable
from node.remotes.gateway import GatewayReader, ReadsThroughGateway, gateway_reader
from node.remotes.http import PlaceHttp, auth_header, car_upload, close_stream
from node.remotes.kubo import link_text, same_cid
from node.remotes.options import check_options, timeout_of

IN_PROGRESS: Final = frozenset({"pin_queued", "queued", "pinning"})
FAILING: Final = frozenset({"pin_error", "error", "cluster_error", "unexpectedly_unpinned"})
NOT_ALLOCATED: Final = "remote"
log = logging.getLogger("artkeep.remotes")


def cluster_presence(peer_map: Mapping[str, Any], replication_min: int | None) -> Presence:
    """What a GlobalPinInfo peer_map says about a pin, given the replication_min we asked for."""
    statuses = [str(info.get("status", "")) if isinstance(info, dict) else "" for info in peer_map.values()]
    if replication_min is not None and replication_min > 0:
        needed = replication_min
    elif replication_min == -1:
        needed = len(statuses)
    else:
        needed = sum(1 for status in statuses if status != NOT_ALLOCATED)
    pinned = statuses.count("pinned")
    if statuses and pinned >= max(1, needed):
        return "pinned"
    if any(status in IN_PROGRESS for status in statuses):
        return "pinning"
    if pinned or any(status in FAILING for status in statuses):
        return "failed"  # errors, or too few copies with nothing under way: pushing again re-pins
    return "missing"


class ClusterRemote(ReadsThroughGateway):
    kind: ClassVar[str] = "cluster"

    def __init__(self, spec: PlaceSpec, session: aiohttp.ClientSession) -> None:
        super().__init__(spec, session)
        self.options = check_options(self.kind, spec.options)
        self.http = PlaceHttp(spec, session, headers=auth_header(spec.token), timeout=timeout_of(spec))
        self.reader: GatewayReader | None = gateway_reader(spec, session, self.options)
        low = self.options.get("replication_min")
        self.replication_min = int(low) if low is not None else None

    def _pin_options(self, name: str, meta: Mapping[str, str]) -> list[tuple[str, str]]:
        params = [(f"replication-{end}", self.options[f"replication_{end}"]) for end in ("min", "max")
                  if f"replication_{end}" in self.options]
        if name:
            params.append(("name", name))
        params += [(f"meta-{key}", value) for key, value in sorted(meta.items())]
        return params

    async def push(self, root: Cid, car: CarBody, *, name: str, meta: Mapping[str, str],
                   again: bool = False) -> Pushed:
        if not again and await self.presence(root, None) == "pinned":
            return Pushed("claimed", detail="the cluster reports it pinned already")
        options = self._pin_options(name, meta)
        await self._add(root, car, name, options)
        what = "POST /pins/{cid}"
        async with self.http.call("POST", _pin_path(root), params=options, allow=(200, 202)) as response:
            pin = await self.http.json(response, what)
        if not isinstance(pin, dict) or not same_cid(link_text(pin.get("cid")), root):
            raise self.http.error(Retryable, f"{what} did not answer the pin of {root}")
        log.info("pushed %s to %s", root, self.http.label, extra={"cid": str(root), "place": self.spec.name})
        return Pushed("pushed")

    async def _add(self, root: Cid, car: CarBody, name: str, options: list[tuple[str, str]]) -> None:
        what = "POST /add?format=car"
        stream = car()
        try:
            async with self.http.call("POST", "/add", params=[("format", "car"), *options],
                                      data=car_upload(stream, name or str(root))) as response:
                added = await self.http.json_lines(response, what)
        finally:
            await close_stream(stream)
        outputs = [item for value in added for item in (value if isinstance(value, list) else [value])]
        if not any(isinstance(item, dict) and same_cid(link_text(item.get("cid")), root) for item in outputs):
            raise self.http.error(Retryable, f"{what} did not report adding {root}")

    async def presence(self, root: Cid, handle: str | None) -> Presence:
        what = "GET /pins/{cid}"
        async with self.http.call("GET", _pin_path(root), allow=(200, 404)) as response:
            if response.status == 404:
                return "missing"
            status = await self.http.json(response, what)
        peer_map = status.get("peer_map") if isinstance(status, dict) else None
        if not isinstance(peer_map, dict):
            raise self.http.error(Retryable, f"{what}: the answer has no peer_map")
        return cluster_presence(peer_map, self.replication_min)

    async def remove(self, root: Cid, handle: str | None) -> None:
        async with self.http.call("DELETE", _pin_path(root), allow=(200, 202, 204, 404)):
            pass



def _pin_path(root: Cid) -> str:
    return "/pins/" + quote(str(root), safe="")
