"""A synchronous read(n) over an async byte source, for parsers running on a worker thread.

I/O edge. `BlockingReader` gives a synchronous parser (car.read_car) running
on a worker thread a file-like view of an async byte source (an HTTP upload
or a fetched response), with a byte limit and a stall timeout, buffered so
that one-byte reads stay cheap. Used by the web layer and by node.fetch alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from node.errors import TooLarge, UploadStalled

CHUNK = 256 * 1024


class BlockingReader:
    """read(n) for a worker thread, pulling from an async source on the event loop.

    Call only from a thread other than the loop's. The source returns b"" at
    the end. Passing `limit` bytes raises TooLarge; no bytes for
    `stall_timeout` seconds raises UploadStalled.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, source: Callable[[int], Awaitable[bytes]],
                 limit: int, stall_timeout: float) -> None:
        self._loop = loop
        self._source = source
        self._limit = limit
        self._stall_timeout = stall_timeout
        self._buffer = bytearray()
        self._consumed = 0
        self._ended = False

    @property
    def consumed(self) -> int:
        """Bytes handed out so far."""
        return self._consumed

    def read(self, size: int = -1, /) -> bytes:
        if size < 0:
            while not self._ended:
                self._fill()
            size = len(self._buffer)
        elif not self._buffer and not self._ended:
            self._fill()
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        self._consumed += len(data)
        return data

    def _fill(self) -> None:
        future = asyncio.run_coroutine_threadsafe(self._next_chunk(), self._loop)
        chunk = future.result()
        if not chunk:
            self._ended = True
            return
        self._buffer += chunk

    async def _next_chunk(self) -> bytes:
        try:
            chunk = await asyncio.wait_for(self._source(CHUNK), self._stall_timeout)
        except TimeoutError:
            raise UploadStalled(f"no data for {self._stall_timeout:g} s; the upload was dropped") from None
        if self._consumed + len(self._buffer) + len(chunk) > self._limit:
            raise TooLarge(f"upload is over the {self._limit}-byte limit")
        return chunk
