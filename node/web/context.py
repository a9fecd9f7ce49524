"""What every handler shares: the Node, the serve options, metrics, token checks, off-loop calls.

Handlers never touch SQLite or wait for the disk on the event loop: `offload`
runs a Node call on a worker thread. The one exception is the gateway's raw
fast path, which reads a small block on the loop only when it is already in
the page cache (RWF_NOWAIT; only the open() of a file whose folder entry is
not cached can still wait). Write and admin endpoints call
`require_token(request, write=True)`; read endpoints call it with
write=False, which only asks for a token when `serve.private_reads` is on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from aiohttp import web

from node.config import Config
from node.errors import Unauthorized
from node.index import Token
from node.node import Node
from node.pusher import Pusher, PushSettings
from node.web.metrics import Registry

_P = ParamSpec("_P")
_R = TypeVar("_R")


@dataclass(frozen=True, slots=True)
class ServeOptions:
    private_reads: bool
    max_request_bytes: int
    max_upload_bytes: int
    upload_timeout: float
    max_concurrent_requests: int
    shutdown_timeout: float
    fetch_allow_networks: str
    fetch_timeout: float
    gallery_public: bool  # gallery pages readable without a login (never when private_reads is on)
    import_profile: str  # CID profile of works imported through the gallery
    push: PushSettings
    plan_interval: float       # seconds between looks for pins that need more copies

    @classmethod
    def from_config(cls, config: Config) -> ServeOptions:
        return cls(
            private_reads=bool(config["serve.private_reads"]),
            max_request_bytes=int(config["serve.max_request_bytes"]),
            max_upload_bytes=int(config["serve.max_upload_bytes"]),
            upload_timeout=float(config["serve.upload_timeout"]),
            max_concurrent_requests=int(config["serve.max_concurrent_requests"]),
            shutdown_timeout=float(config["serve.shutdown_timeout"]),
            fetch_allow_networks=str(config["fetch.allow_networks"]),
            fetch_timeout=float(config["fetch.timeout"]),
            gallery_public=bool(config["gallery.public"]) and not bool(config["serve.private_reads"]),
            import_profile=config.profile,
            push=PushSettings.from_config(config),
            plan_interval=float(config["push.plan_interval"]),
        )


NODE = web.AppKey("node", Node)
OPTIONS = web.AppKey("options", ServeOptions)
METRICS = web.AppKey("metrics", Registry)
PUSHER = web.AppKey("pusher", Pusher)
TOKEN = web.RequestKey("token", Token)  # the Token that authorized this request


def node_of(request: web.Request) -> Node:
    return request.config_dict[NODE]


def options_of(request: web.Request) -> ServeOptions:
    return request.config_dict[OPTIONS]


async def offload(fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
    """Run blocking work (SQLite, disk, hashing) on a worker thread."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def require_token(request: web.Request, *, write: bool) -> Token | None:
    """The request's token; Unauthorized if it needs one and has none that is valid."""
    if not write and not options_of(request).private_reads:
        return None
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise Unauthorized("this endpoint needs 'Authorization: Bearer TOKEN' "
                           "(create a token with `artkeep token create`)")
    token = await offload(node_of(request).token_for, secret)
    if token is None:
        raise Unauthorized("unknown or revoked API token")
    request[TOKEN] = token
    return token
