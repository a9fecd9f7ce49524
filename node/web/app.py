"""The root aiohttp application: shared middlewares, /healthz, /metrics, and the API sub-apps.

I/O edge. One middleware does, outermost first: a concurrency limit (429
beyond serve.max_concurrent_requests), then request metrics and one
structured log line per request, then NodeError → a JSON error. Each API
(the gateway in its handler, the others as sub-apps) renders errors in its
own protocol's format before they reach the root.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from node import __version__
from node.errors import NodeError
from node.node import Node
from node.pusher import Pusher
from node.scheduler import AuditSchedule
from node.web import gallery, gateway, kubo_rpc, psa
from node.web.context import METRICS, NODE, OPTIONS, PUSHER, ServeOptions, node_of, offload
from node.web.metrics import Counter, Histogram, Registry

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("artkeep.http")
AUDIT = web.AppKey("audit_schedule", AuditSchedule)
UNLIMITED_PATHS = frozenset({"/healthz", "/metrics"})  # always answer, even when busy
STORE_USAGE_MAX_AGE = 60.0  # seconds a /metrics store walk is reused


def build_app(node: Node, options: ServeOptions) -> web.Application:
    metrics = Registry()
    app = web.Application(
        client_max_size=options.max_request_bytes,
        middlewares=[_front(options.max_concurrent_requests, metrics)],
    )
    app[NODE] = node
    app[OPTIONS] = options
    app[METRICS] = metrics
    app.router.add_get("/api", _index)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics_page(metrics))
    gateway.setup(app)
    psa.setup(app)
    kubo_rpc.setup(app)
    gallery.setup(app)  # HTML pages at /, /works, /health, /import
    app[PUSHER] = Pusher(node, options.push)
    app.cleanup_ctx.append(_push_queue)
    if node.audit_policy.schedule:
        pusher = app[PUSHER]
        app[AUDIT] = AuditSchedule(node, node.audit_policy, metrics=metrics,
                                   on_repair=lambda _queued: pusher.wake.set())  # repairs go out at once
        app.cleanup_ctx.append(_audit_schedule)
    return app


async def _audit_schedule(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: run the audit jobs (node.scheduler) while the daemon runs; a round in flight is
    cancelled at cleanup, and what is due then is checked after the next start."""
    async with app[AUDIT]:
        yield


async def _push_queue(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: drain the push queue in the background while the daemon runs; stop it at cleanup.

    Its state is the copies table, so whatever a stop interrupts is taken up again at the next start.
    """
    stop = asyncio.Event()
    async with app[PUSHER] as pusher:
        task = asyncio.create_task(pusher.serve(stop, app[OPTIONS].plan_interval), name="push queue")
        yield
        stop.set()
        try:
            await asyncio.wait_for(task, timeout=app[OPTIONS].shutdown_timeout)
        except TimeoutError:
            log.warning("push queue: stopped pushes in flight; they resume at the next start")


def _front(limit: int, metrics: Registry) -> Middleware:
    """The root middlewares as one (a coroutine layer a request, not three), outermost first."""
    in_flight = metrics.gauge("artkeep_http_requests_in_flight", "Requests being handled now.")
    refused = metrics.counter("artkeep_http_requests_refused_total",
                              "Requests refused with 429 because too many were in flight.")
    requests = metrics.counter("artkeep_http_requests_total", "HTTP requests answered, by API and status.")
    seconds = metrics.histogram("artkeep_http_request_duration_seconds",
                                "Time to answer an HTTP request, by API.")

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        limited = request.path not in UNLIMITED_PATHS
        if limited:
            if in_flight.value >= limit:
                refused.inc()
                return web.json_response({"error": f"busy: {limit} requests in flight; retry shortly"},
                                         status=429, headers={"Retry-After": "1"})
            in_flight.add(1)
        started = time.perf_counter()
        status = 500
        try:
            try:
                response = await handler(request)
            except NodeError as exc:
                response = web.json_response({"error": exc.message}, status=exc.http_status)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            if limited:
                in_flight.add(-1)
            _observe(request, status, time.perf_counter() - started, requests, seconds)

    return middleware


def _observe(request: web.Request, status: int, elapsed: float, requests: Counter,
             seconds: Histogram) -> None:
    """Request metrics, and one log line when the level lets it through (its fields cost µs to build)."""
    api = _api_of(request.path)
    requests.inc(api=api, method=request.method, status=str(status))
    seconds.observe(elapsed, api=api)
    if log.isEnabledFor(logging.INFO):
        log.info("%s %s %d %.1f ms", request.method, request.path_qs, status, elapsed * 1000,
                 extra={"method": request.method, "path": request.path, "status": status,
                        "ms": round(elapsed * 1000, 2), "remote": request.remote})


def _api_of(path: str) -> str:
    for prefix, api in (("/ipfs/", "gateway"), ("/psa", "psa"), ("/api/v0/", "kubo_rpc")):
        if path.startswith(prefix):
            return api
    if path in UNLIMITED_PATHS or path == "/api":
        return path
    return "gallery" if path == "/" or path.startswith(gallery.PREFIXES) else "other"


async def _index(request: web.Request) -> web.Response:
    return web.json_response({
        "name": "artkeep", "version": __version__,
        "apis": {"gateway": "/ipfs/{cid}", "pinning_service": "/psa", "kubo_rpc": "/api/v0",
                 "health": "/healthz", "metrics": "/metrics", "gallery": "/"},
    })


async def _healthz(request: web.Request) -> web.Response:
    pins = await offload(node_of(request).count_pins)
    return web.json_response({"status": "ok", "version": __version__, "pins": pins})


def _metrics_page(metrics: Registry) -> Handler:
    pins = metrics.gauge("artkeep_pins", "Pins in the index.")
    blocks = metrics.gauge("artkeep_store_blocks",
                           "Blocks in the local store (refreshed at most every minute).")
    stored = metrics.gauge("artkeep_store_bytes", "Bytes of blocks in the local store (refreshed at most "
                                                  "every minute).")
    last_walk = [-STORE_USAGE_MAX_AGE]

    def refresh(node: Node) -> None:
        pins.set(node.count_pins())
        if time.monotonic() - last_walk[0] >= STORE_USAGE_MAX_AGE:
            usage = node.usage()
            blocks.set(usage.blocks)
            stored.set(usage.bytes)
            last_walk[0] = time.monotonic()

    async def handler(request: web.Request) -> web.Response:
        await offload(refresh, node_of(request))
        return web.Response(body=metrics.render().encode(), headers={
            "Content-Type": "text/plain; version=0.0.4; charset=utf-8", "X-Content-Type-Options": "nosniff"})

    return handler
