"""Another artkeep node as a place: pushed to through its Kubo-compatible /api/v0, read back from its gateway.

I/O edge. Writes are the kubo kind's (dag/import, pin/ls, pin/rm) with the
token the other node gave us. Before the first write, the node's /api/v0/id
must answer the peer ID we were told (option public_key): a mismatch means the
URL now leads to some other node, and nothing is sent (Permanent). Reads go to
the same node's trustless gateway (/ipfs/{cid}?format=raw and ?format=car),
with the token too, for a node that keeps reads private.

Options of a `peer` place:
    public_key   the other node's peer ID (12D3KooW…, as `artkeep id` prints it there); required
    timeout      seconds to wait for a connection or for the next bytes of an answer (default 60)
The token (required) is an API token created on the other node (`artkeep token create`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import ClassVar

import aiohttp

from node.cid import Cid
from node.remotes.base import CarBody, Permanent, PlaceSpec, Pushed, Retryable
from node.remotes.gateway import GatewayReader
from node.remotes.kubo import API, KuboRemote


class PeerRemote(KuboRemote):
    kind: ClassVar[str] = "peer"
    token_required: ClassVar[bool] = True  # an artkeep node's /api/v0 always needs one

    def __init__(self, spec: PlaceSpec, session: aiohttp.ClientSession) -> None:
        super().__init__(spec, session)
        self.peer_id = self.options["public_key"]
        self.reader = GatewayReader(self.http)
        self._identified = False

    async def push(self, root: Cid, car: CarBody, *, name: str, meta: Mapping[str, str],
                   again: bool = False) -> Pushed:
        await self.identify()
        return await super().push(root, car, name=name, meta=meta, again=again)

    async def remove(self, root: Cid, handle: str | None) -> None:
        await self.identify()
        await super().remove(root, handle)

    async def identify(self) -> None:
        """Permanent unless the node at the URL is the peer we were told about (asked once per instance)."""
        if self._identified:
            return
        what = "POST /api/v0/id"
        async with self.http.call("POST", f"{API}/id") as response:
            answer = await self.http.json(response, what)
        found = answer.get("ID") if isinstance(answer, dict) else None
        if not isinstance(found, str):
            raise self.http.error(Retryable, f"{what} did not say which peer it is")
        if found != self.peer_id:
            raise self.http.error(Permanent, f"the node there is peer {found}, not {self.peer_id}: the URL "
                                             "leads to another node; nothing was sent")
        self._identified = True

    async def get_block(self, cid: Cid) -> bytes:
        return await self.reader.get_block(cid)

    async def get_car(self, root: Cid) -> AsyncIterator[bytes]:
        async for chunk in self.reader.get_car(root):
            yield chunk
