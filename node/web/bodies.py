"""Small request bodies with a limit (big uploads go through node.bridge.BlockingReader).

I/O edge. `read_limited` reads a small body (JSON) under a byte limit.
"""

from __future__ import annotations

from aiohttp import web

from node.bridge import CHUNK
from node.errors import TooLarge


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The whole body, or TooLarge as soon as it passes limit bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"request body of {request.content_length} bytes is over the {limit}-byte limit")
    body = bytearray()
    while chunk := await request.content.read(CHUNK):
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"request body is over the {limit}-byte limit")
    return bytes(body)
