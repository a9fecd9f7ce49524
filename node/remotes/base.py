"""The one interface between artkeep and a place that keeps copies: push, follow, remove, read back.

I/O edge (each implementation speaks HTTP with the aiohttp ClientSession it is
given). The push queue (node.pusher) and the auditor only ever call these
methods; what a kind needs beyond them stays in its own module. A remote never
decides whether bytes are right: `get_block` and `get_car` hand back what the
place served, and the caller re-hashes it against the CIDs it already knows.

Every failure is a RemoteError that says whether trying again can help:
    RemoteError
    ├── Retryable        timeouts, refused or reset connections, 5xx, 429 (with retry_after)
    └── Permanent        auth refused, quota full, a request the place will never accept
        └── NotSupported the kind cannot do this at all (e.g. push to a read-only gateway)
and BlockMissing when the place answers but does not have a block.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Final, Literal

if TYPE_CHECKING:  # only named in annotations: the CLI imports this module and should not pay for aiohttp
    import aiohttp

from node.cid import Cid

KINDS: Final = ("kubo", "pinning", "cluster", "peer", "gateway")
HOLDS: Final = ("all", "works", "pins")

# A fresh stream of the DAG's CAR bytes each time it is called, so a retry can send it again.
CarBody = Callable[[], AsyncIterator[bytes]]


@dataclass(frozen=True, slots=True)
class PlaceSpec:
    """A place as the user added it (`artkeep place add`) and the index stores it."""

    name: str
    kind: str                    # one of KINDS
    url: str                     # base URL of its API (Kubo RPC, PSA, Cluster REST, artkeep node, gateway)
    token: str | None = field(default=None, repr=False)  # secret: bearer token or "user:password"
    options: Mapping[str, str] = field(default_factory=dict)  # kind-specific, see each module
    quota_bytes: int | None = None   # most DAG bytes we may place there; None = no quota
    holds: str = "all"           # one of HOLDS: what the replication policy may put there

    def public(self) -> dict[str, object]:
        """What `place ls --json` and logs may show: everything but the secret."""
        return {"name": self.name, "kind": self.kind, "url": self.url, "options": dict(self.options),
                "quota_bytes": self.quota_bytes, "holds": self.holds, "token": self.token is not None}


@dataclass(frozen=True, slots=True)
class Pushed:
    """What a push achieved: the place took the bytes ("pushed"), or already says it pins them ("claimed").

    `handle` is what the kind needs to follow the push later (a PSA requestid); None when the CID is enough.
    """

    state: Literal["pushed", "claimed"]
    handle: str | None = None
    detail: str = ""


# What a place says about a root: never proof, only its word.
Presence = Literal["pinned", "pinning", "missing", "failed"]


class RemoteError(Exception):
    """A place did not do what was asked."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def message(self) -> str:
        return str(self.args[0])


class Retryable(RemoteError):
    """A failure that may pass: the place is down, slow, busy or broke off."""


class Permanent(RemoteError):
    """A failure that will not pass by waiting: retrying is pointless until the user acts."""


class NotSupported(Permanent):
    """This kind of place cannot do that."""


class BlockMissing(RemoteError):
    """The place answered, and does not have this block."""


class Remote(ABC):
    """One place. Implementations take the spec and a shared session, and hold no other state that matters."""

    kind: ClassVar[str]
    writable: ClassVar[bool] = True   # False: audit target only (gateway)

    def __init__(self, spec: PlaceSpec, session: aiohttp.ClientSession) -> None:
        self.spec = spec
        self.session = session

    @abstractmethod
    async def push(self, root: Cid, car: CarBody, *, name: str, meta: Mapping[str, str],
                   again: bool = False) -> Pushed:
        """Hand the DAG under `root` to the place and ask it to pin it; idempotent (pushing twice is fine).

        `again`: our last read-back from there failed, so send the bytes even if the place says it
        pins them already (it lost or damaged some).
        """

    @abstractmethod
    async def presence(self, root: Cid, handle: str | None) -> Presence:
        """What the place says about `root` (pin/ls, PSA status, Cluster peer_map, HEAD): cheap, not proof."""

    @abstractmethod
    async def remove(self, root: Cid, handle: str | None) -> None:
        """Ask the place to stop pinning `root`; removing what is not there is not an error."""

    @abstractmethod
    async def get_block(self, cid: Cid) -> bytes:
        """The bytes the place serves for one block, unverified; BlockMissing if it has none."""

    async def get_car(self, root: Cid) -> AsyncIterator[bytes]:
        """The place's CAR of the whole DAG, unverified, as chunks. Default: NotSupported."""
        raise NotSupported(f"{self.kind} place {self.spec.name!r} serves no CAR; read blocks one by one")
        yield b""  # pragma: no cover - makes this an async generator
