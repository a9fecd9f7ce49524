"""Places artkeep pushes works to and audits: one Remote interface (base.py), one module per kind.

`validate_spec` checks what `artkeep place add` was given (no I/O); `open_remote`
makes the Remote for a stored spec over the daemon's shared ClientSession.
Kinds and their options: docs/places.md, and each kind's module docstring.
"""

from __future__ import annotations

from typing import Final

import aiohttp

from node.errors import InputError
from node.remotes.base import PlaceSpec, Remote
from node.remotes.cluster import ClusterRemote
from node.remotes.gateway import GatewayRemote
from node.remotes.kubo import KuboRemote
from node.remotes.options import KIND_OPTIONS, validate_spec
from node.remotes.peer import PeerRemote
from node.remotes.pinning import PinningRemote

REMOTES: Final[dict[str, type[Remote]]] = {remote.kind: remote for remote in (
    KuboRemote, PinningRemote, ClusterRemote, PeerRemote, GatewayRemote)}

__all__ = ["KIND_OPTIONS", "REMOTES", "open_remote", "validate_spec"]


def open_remote(spec: PlaceSpec, session: aiohttp.ClientSession) -> Remote:
    """The Remote for a place; InputError if its kind or options are not (or no longer) valid."""
    remote = REMOTES.get(spec.kind)
    if remote is None:
        raise InputError(f"place {spec.name!r} has unknown kind {spec.kind!r}")
    return remote(spec, session)
