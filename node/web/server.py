"""Run the daemon until SIGTERM or SIGINT, then shut down gracefully.

I/O edge. Graceful means: stop accepting connections, let in-flight
requests finish (up to serve.shutdown_timeout), then run the apps' cleanup
(background workers stop; their durable state resumes at the next start).
Blocks are written temp → fsync → rename, so even a kill -9 leaves nothing
half-written; SIGTERM just lets the work in flight complete.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from node.config import Config, parse_listen
from node.node import Node
from node.web.app import build_app
from node.web.context import ServeOptions

WORKER_THREADS = 32  # blocking calls in flight at once (fsync-bound writes, SQLite, hashing)
log = logging.getLogger("artkeep.serve")


async def serve(node: Node, config: Config, announce: Callable[[str], None]) -> None:
    """Serve until a stop signal; announce(url) once the socket is listening."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(WORKER_THREADS, thread_name_prefix="artkeep-worker"))
    options = ServeOptions.from_config(config)
    host, port = parse_listen(str(config["serve.listen"]))
    app = build_app(node, options)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=options.shutdown_timeout)
    await runner.setup()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        url = _url_of(runner, host)
        log.info("serving %s (home %s)", url, node.home, extra={"url": url, "home": str(node.home)})
        announce(url)
        await stop.wait()
        log.info("stopping: letting requests in flight finish")
    finally:
        await runner.cleanup()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("stopped")


def _url_of(runner: web.AppRunner, host: str) -> str:
    """The URL of the bound socket (the real port when 0 was asked for)."""
    bound_port = runner.addresses[0][1]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{bound_port}"
