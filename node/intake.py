"""The blocks of one DAG arriving from elsewhere: verified, staged, and kept only if the DAG is complete.

I/O edge over the blockstore's staging area. Every block is checked against
its CID and decoded for links before it is staged; staged blocks are
invisible until `commit`, which refuses an incomplete DAG. So a fetch that
fails halfway, or an origin that sends one bad block, leaves the store as
it was. Blocks that arrive but are not part of the DAG are dropped at commit.
Not thread-safe: one intake is fed from one thread at a time.
"""

from __future__ import annotations

from node import car, dag
from node import cid as cids
from node.blockstore import Blockstore, Staging
from node.cid import Cid
from node.errors import BlockMismatch, BlockNotFound, NodeError


class DagIntake:
    def __init__(self, store: Blockstore, root: Cid) -> None:
        self.root = root
        self._store = store
        self._staging: Staging | None = None
        self._links: dict[Cid, list[Cid]] = {}  # staged block → its links
        self._seen: set[Cid] = set()
        self._pending = [root]
        self.received = 0  # blocks accepted, including ones the store already had

    def add(self, cid: Cid, block: bytes) -> None:
        """Check block against cid (BlockMismatch) and its codec (CodecError), then stage it."""
        if not cids.matches(cid, block):
            raise BlockMismatch(f"block {cid} does not match its CID")
        try:
            links = dag.links_of(cid, block)
        except NodeError as exc:
            raise type(exc)(f"block {cid}: {exc.message}") from None
        self.received += 1
        if cid in self._links or self._store.has(cid):
            return
        if self._staging is None:
            self._staging = self._store.staging()
        self._staging.put(cid, block)
        self._links[cid] = links

    def add_car(self, stream: car.BinaryStream) -> None:
        """Stage every block of a CAR (its header roots are ignored: we know which root we want)."""
        for cid, block in car.read_car(stream):
            self.add(cid, block)

    def next_wanted(self) -> Cid | None:
        """A block of the DAG that is neither staged nor stored, or None once the DAG is complete.

        Walks depth first from the root through staged and stored blocks, so
        calling it after each `add` gives the order a per-block fetch needs.
        """
        while self._pending:
            cid = self._pending[-1]
            if cid in self._seen:
                self._pending.pop()
                continue
            if cid in self._links:
                links = self._links[cid]
            elif self._store.has(cid):
                links = [] if cid.codec == cids.RAW else dag.links_of(cid, self._store.get(cid))
            else:
                return cid
            self._pending.pop()
            self._seen.add(cid)
            self._pending.extend(reversed(links))
        return None

    def commit(self) -> int:
        """Move the DAG's staged blocks into the store; return how many were new.

        BlockNotFound (and nothing kept) if the DAG is incomplete.
        """
        absent = self.next_wanted()
        if absent is not None:
            self.abort()
            raise BlockNotFound(f"the DAG under {self.root} lacks block {absent}")
        if self._staging is None:
            return 0
        staging, self._staging = self._staging, None
        staging.cids = [cid for cid in staging.cids if cid in self._seen]
        return staging.commit()

    def abort(self) -> None:
        """Drop every staged block."""
        if self._staging is not None:
            self._staging.abort()
            self._staging = None
