"""A STAND-IN for IPFS Cluster's REST API, for tests: not IPFS Cluster, and not a fault injector.

Why a stand-in: IPFS Cluster is an external system, and no binary of it can be
installed here (it is Go, there is no Go toolchain, and it is in none of the
package registries we may use). This is the smallest honest imitation, built
from the documented API (../shared/notes/ipfs-interop.md §6.2; ipfs-cluster
`api/rest/restapi.go` and `api/types.go`, 1.x), so that the cluster kind can be
tested against a real server on loopback. Where it stores blocks is real: the
artkeep app it is mounted on (`serve_app(standin.routes())`), whose Node
verifies every block, and whose /ipfs gateway then serves what was pinned.

What it answers (Basic `user:password` or `Bearer <token>` on every route but /health):
    POST   /add?format=car&...      one multipart CAR (single root); pins it, NDJSON AddedOutput
    POST   /pins/{cid}?...          sets the pin: replication-min/-max, name, meta-KEY=VALUE → Pin
    GET    /pins/{cid}              GlobalPinInfo with a peer_map; 404 if not in the pinset
    DELETE /pins/{cid}              unpins → Pin; 404 if not in the pinset
    GET    /health                  204
Errors are Cluster's `{"code": N, "message": "..."}`.

What it simulates: `peers` cluster peers sharing the one store. A pin is
allocated to the first replication-max peers (every peer for -1, the default);
fewer peers than replication-min is an error, as in Cluster. An allocated
peer reports `pinned` when the DAG is pinned in the store, `pin_queued` while
blocks are missing (it never fetches them: a real cluster would use bitswap),
and `pin_error` if the test put it in `failing`. Others report `remote`.
Not simulated: sharding, expiry, user allocations, origins, recover, the
streaming GET /pins listing, JWT issuing (POST /token).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field

from aiohttp import web
from multidict import MultiMapping

from node import cid as cids
from node import signing
from node.errors import InputError, NodeError, PinNotFound
from node.node import Node
from node.web.context import node_of, offload, options_of
from node.web.kubo_rpc import Uploads

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class StandinPin:
    cid: str
    name: str
    replication_min: int
    replication_max: int
    allocations: list[str]
    metadata: dict[str, str]
    timestamp: str


@dataclass
class ClusterStandin:
    """The stand-in's state: its peers, credentials and pinset. Mount `routes()` on a serve_app app."""

    peers: int = 3
    user: str = "admin"
    password: str = "cluster-secret-0123456789"
    bearer: str | None = None
    failing: set[str] = field(default_factory=set)  # peer IDs that report pin_error
    pins: dict[str, StandinPin] = field(default_factory=dict)  # by CIDv1 string
    requests: list[str] = field(default_factory=list)  # "METHOD /path" of every authorized request

    def __post_init__(self) -> None:
        # Stable, well-formed peer IDs: the Ed25519 peer ID of a key made from the peer's number.
        self.peer_ids = [signing.peer_id(hashlib.sha256(f"standin peer {n}".encode()).digest())
                         for n in range(self.peers)]

    @property
    def token(self) -> str:
        """What a cluster place's token is for this stand-in: "user:password"."""
        return f"{self.user}:{self.password}"

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/add", self._guarded(self._add)),
                web.post("/pins/{cid}", self._guarded(self._pin)),
                web.get("/pins/{cid}", self._guarded(self._status)),
                web.delete("/pins/{cid}", self._guarded(self._unpin)),
                web.get("/health", self._health)]

    # --- protocol

    def _guarded(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if not self._authorized(request.headers.get("Authorization", "")):
                return _error(401, "Unauthorized")
            self.requests.append(f"{request.method} {request.path}")
            try:
                return await handler(request)
            except InputError as exc:
                return _error(400, exc.message)
            except NodeError as exc:
                return _error(500, exc.message)

        return guarded

    def _authorized(self, header: str) -> bool:
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer":
            return self.bearer is not None and credentials.strip() == self.bearer
        if scheme.lower() != "basic":
            return False
        try:
            return base64.b64decode(credentials.strip(), validate=True).decode() == self.token
        except (ValueError, UnicodeDecodeError):
            return False

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=204)

    # --- handlers

    async def _add(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("format") != "car":
            raise InputError("this stand-in takes only format=car")
        options = options_of(request)
        uploads = Uploads(asyncio.get_running_loop(), await request.multipart(), options.max_upload_bytes,
                          options.upload_timeout)
        node = node_of(request)
        done = await offload(node.import_cars, uploads, pin_roots=False)
        if len(done.roots) != 1:
            raise InputError(f"a CAR added with format=car must have one root, not {len(done.roots)}")
        [root] = done.roots
        pin = await self._record(node, str(root), request.query)
        added = {"name": pin.name, "cid": pin.cid, "bytes": done.block_bytes, "size": done.block_bytes,
                 "allocations": pin.allocations}
        return web.Response(body=json.dumps(added).encode() + b"\n", content_type="application/json")

    async def _pin(self, request: web.Request) -> web.StreamResponse:
        pin = await self._record(node_of(request), request.match_info["cid"], request.query)
        return web.json_response(self._pin_json(pin))

    async def _status(self, request: web.Request) -> web.StreamResponse:
        pin = self.pins.get(_key(request.match_info["cid"]))
        if pin is None:
            return _error(404, "cid is not part of the global state")
        pinned = await offload(node_of(request).get_pin, cids.parse(pin.cid)) is not None
        peer_map = {}
        for peer in self.peer_ids:
            if peer not in pin.allocations:
                status = "remote"
            elif peer in self.failing:
                status = "pin_error"
            else:
                status = "pinned" if pinned else "pin_queued"
            peer_map[peer] = {"peername": f"standin-{self.peer_ids.index(peer)}", "ipfs_peer_id": peer,
                              "ipfs_peer_addresses": [], "status": status, "timestamp": pin.timestamp,
                              "error": "stand-in peer set to fail" if status == "pin_error" else "",
                              "attempt_count": 0, "priority_pin": False}
        return web.json_response({"cid": pin.cid, "name": pin.name, "allocations": pin.allocations,
                                  "origins": [], "created": pin.timestamp, "metadata": pin.metadata,
                                  "peer_map": peer_map})

    async def _unpin(self, request: web.Request) -> web.StreamResponse:
        pin = self.pins.pop(_key(request.match_info["cid"]), None)
        if pin is None:
            return _error(404, "cid is not part of the global state")
        node = node_of(request)

        def unpin() -> None:
            with suppress(PinNotFound):  # allocated but never complete: nothing was pinned in the store
                node.unpin(cids.parse(pin.cid))

        await offload(unpin)
        return web.json_response(self._pin_json(pin))

    # --- the pinset

    async def _record(self, node: Node, text: str, query: MultiMapping[str]) -> StandinPin:
        root = cids.parse(text)
        low, high = _factor(query.get("replication-min")), _factor(query.get("replication-max"))
        wanted = self.peers if high == -1 else high
        needed = self.peers if low == -1 else low
        if needed > self.peers or needed > wanted:
            raise NodeError(f"not enough peers to allocate CID. Needed at least: {needed}. Wanted at most: "
                            f"{wanted}. Available candidates: {self.peers}")
        metadata = {key.removeprefix("meta-"): value for key, value in query.items()
                    if key.startswith("meta-")}
        pin = StandinPin(str(root), query.get("name", ""), low, high, self.peer_ids[:wanted], metadata,
                         time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self.pins[_key(text)] = pin

        def pin_if_complete() -> None:
            with suppress(NodeError):  # blocks missing: peers stay pin_queued (the stand-in never fetches)
                node.pin_root(root, pin.name or str(root))

        await offload(pin_if_complete)
        return pin

    @staticmethod
    def _pin_json(pin: StandinPin) -> dict[str, object]:
        return {"cid": pin.cid, "type": "pin", "allocations": pin.allocations, "max_depth": -1,
                "reference": None, "timestamp": pin.timestamp, "replication_factor_min": pin.replication_min,
                "replication_factor_max": pin.replication_max, "name": pin.name, "mode": "recursive",
                "shard_size": 0, "user_allocations": None, "expire_at": "0001-01-01T00:00:00Z",
                "metadata": pin.metadata, "pin_update": None, "origins": []}


def _key(text: str) -> str:
    return str(cids.parse(text).to_v1())


def _factor(text: str | None) -> int:
    """A replication factor from the query: absent or 0 is the cluster default (-1, every peer)."""
    if text is None:
        return -1
    try:
        factor = int(text)
    except ValueError:
        raise InputError(f"bad replication factor {text!r}") from None
    return -1 if factor == 0 else factor


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"code": status, "message": message}, status=status)
