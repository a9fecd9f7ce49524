"""Every kind of place, by name: the Remote for a stored PlaceSpec."""

from __future__ import annotations

from typing import Final

import aiohttp

from node.errors import InputError
from node.remotes.base import PlaceSpec, Remote
from node.remotes.cluster import ClusterRemote
from node.remotes.gateway import GatewayRemote
from node.remotes.kubo import KuboRemote
from node.remotes.peer import PeerRemote
from node.remotes.pinning import PinningRemote

REMOTES: Final[dict[str, type[Remote]]] = {remote.kind: remote for remote in (
    KuboRemote, PinningRemote, ClusterRemote, PeerRemote, GatewayRemote)}


def open_remote(spec: PlaceSpec, session: aiohttp.ClientSession) -> Remote:
    """The Remote for a place; InputError if its kind or options are not (or no longer) valid."""
    remote = REMOTES.get(spec.kind)
    if remote is None:
        raise InputError(f"place {spec.name!r} has unknown kind {spec.kind!r}")
    return remote(spec, session)
