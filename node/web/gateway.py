"""The read side over HTTP: the IPFS trustless gateway (raw blocks, CARs) and files for browsers, under /ipfs.

I/O edge, thin: node/trustless.py decides formats, scopes, headers and
which blocks go out; this module reads blocks and writes with backpressure.
Every block is re-hashed before it goes out. A small raw block already in
the page cache is read and hashed on the loop (a thread hop costs more than
the work); any other read is off the loop: CARs and files in batches, the
next batch gathered while the last is sent, its blocks read and hashed
ahead on a small pool of their own. It never fetches from the network:
what is not in the store is 404. Errors are text/plain, as gateways answer
them.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import TypeVar
from urllib.parse import unquote, urlencode

from aiohttp import web
from multidict import CIMultiDict

from node import car, dag, trustless, unixfs
from node import cid as cids
from node.cid import Cid
from node.errors import InputError, IntegrityError, NodeError, NotAcceptable, NotCached
from node.node import Node
from node.trustless import Format
from node.unixfs import NodeType
from node.web.context import node_of, require_token

log = logging.getLogger("artkeep.gateway")
_T = TypeVar("_T")

INLINE_BLOCK_BYTES = 64 * 1024  # cached blocks up to this are read and hashed on the loop (tens of µs)
BATCH_BYTES = 4 * 1024 * 1024  # read this much per trip to a worker thread
BATCH_PIECES = 1024
READ_AHEAD = 16  # block files hinted to the OS ahead of a stream (16 MiB with 1 MiB chunks)
PREFETCH_BLOCKS = 4  # blocks read and verified ahead of a stream, on the read pool
READ_THREADS = 2  # the read pool: two blocks hashed at once (hashlib lets go of the GIL)
READ_POOL = web.AppKey("gateway_read_pool", ThreadPoolExecutor)
PREFIX = "/ipfs/"


def setup(app: web.Application) -> None:
    """Mount the gateway routes on the root app (not a sub-app: that costs two more layers a request)."""
    app.router.add_get(PREFIX + "{cid}", _handle)
    app.router.add_get(PREFIX + "{cid}/{path:.*}", _handle)
    # Streams read their blocks on a few threads of their own, not on any of the default
    # executor's many: each thread that allocates megabyte blocks keeps a glibc arena.
    app[READ_POOL] = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="artkeep-block-read")
    app.cleanup_ctx.append(_read_pool)


async def _read_pool(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: stop the read pool's threads once the server stops (reads in flight finish)."""
    yield
    app[READ_POOL].shutdown(wait=False, cancel_futures=True)


def _plain_error(request: web.Request, exc: NodeError) -> web.Response:
    # A block that rotted in our own store is our fault, not a bad upstream's.
    status = 500 if isinstance(exc, IntegrityError) else exc.http_status
    if status >= 500:
        log.error("%s %s: %s", request.method, request.path, exc.message)
    headers = {"X-Content-Type-Options": "nosniff"}
    if isinstance(exc, trustless.Unsatisfiable):
        headers["Content-Range"] = f"bytes */{exc.size}"
    return web.Response(status=status, text=exc.message + "\n", headers=headers)


# Recently served CIDs keep their parsed form and their header values: a CID's text
# costs a base32 encoding, a few µs each time, and a raw block takes ~100 µs in all.
@functools.lru_cache(maxsize=4096)
def _parse_cid(text: str) -> Cid:
    return cids.parse(text)


_cid_text = functools.lru_cache(maxsize=4096)(str)
_raw_etag = functools.lru_cache(maxsize=4096)(trustless.raw_etag)
_disposition = functools.lru_cache(maxsize=4096)(trustless.content_disposition)


async def _run(fn: Callable[..., _T], *args: object) -> _T:
    """fn(*args) on a worker thread; lighter than asyncio.to_thread (no context copy)."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


class _Request:
    """What every answer needs from the request: the CID, the path, the format."""

    def __init__(self, request: web.Request) -> None:
        raw = request.rel_url.raw_path
        cid_text, _, rest = raw[len(PREFIX):].partition("/")
        self.request = request
        self.root = _parse_cid(unquote(cid_text))
        self.segments = trustless.split_path(unquote(rest))
        self.trailing_slash = raw.endswith("/")
        self.content_path = raw.rstrip("/")  # still percent-encoded: safe in a header
        self.negotiated = trustless.negotiate(request.query, request.headers.get("Accept"))
        self.head = request.method == "HEAD"
        self.node: Node = node_of(request)

    def not_modified(self, etag: str) -> bool:
        return trustless.etag_matches(self.request.headers.get("If-None-Match"), etag)

    def base_headers(self, etag: str, content_type: str) -> CIMultiDict[str]:
        headers: CIMultiDict[str] = CIMultiDict()
        headers["Content-Type"] = content_type
        headers["Etag"] = etag
        headers["Cache-Control"] = trustless.CACHE_IMMUTABLE
        headers["X-Content-Type-Options"] = "nosniff"
        headers["X-Ipfs-Path"] = self.content_path
        headers["Vary"] = "Accept"
        return headers

    def trustless_headers(self, etag: str, content_type: str, extension: str) -> CIMultiDict[str]:
        headers = self.base_headers(etag, content_type)
        name = self.request.query.get("filename") or f"{_cid_text(self.root)}.{extension}"
        headers["Content-Disposition"] = _disposition("attachment", name)
        if self.negotiated.by_accept:
            query = {**self.request.query, "format": self.negotiated.format.value}
            headers["Content-Location"] = f"{self.request.rel_url.raw_path}?{urlencode(query)}"
        return headers


async def _handle(request: web.Request) -> web.StreamResponse:
    try:
        return await _answer(request)
    except NodeError as exc:
        return _plain_error(request, exc)


async def _answer(request: web.Request) -> web.StreamResponse:
    await require_token(request, write=False)
    asked = _Request(request)
    if "only-if-cached" in request.headers.get("Cache-Control", "") \
            and not await _run(asked.node.has_block, asked.root):
        raise NotCached(f"{asked.root} is not in this node's store")
    if asked.negotiated.format == Format.RAW:
        return await _raw(asked)
    if asked.negotiated.format == Format.CAR:
        return await _car(asked)
    return await _deserialized(asked)


# --- application/vnd.ipld.raw -----------------------------------------------------------------------

async def _raw(asked: _Request) -> web.StreamResponse:
    cid = asked.root
    if asked.segments:
        cid = (await _run(trustless.resolve, cid, asked.segments, asked.node.get_block)).terminal
    etag = _raw_etag(cid)
    headers = asked.trustless_headers(etag, trustless.MEDIA_RAW, "bin")
    headers["Accept-Ranges"] = "bytes"
    if asked.not_modified(etag) or asked.head:
        size = len(cid.digest) if cid.hash_code == cids.IDENTITY else await _run(asked.node.block_size, cid)
        if asked.not_modified(etag):
            return web.Response(status=304, headers=headers)
        headers["Content-Length"] = str(size)
        return _head_response(headers)
    block = asked.node.get_block_if_cached(cid, INLINE_BLOCK_BYTES)
    if block is None:
        block = await _run(asked.node.get_block, cid)
    wanted = trustless.parse_range(_range_header(asked, etag), len(block))
    if wanted is None:
        return web.Response(body=block, headers=headers)
    headers["Content-Range"] = wanted.content_range(len(block))
    return web.Response(status=206, body=block[wanted.first:wanted.last + 1], headers=headers)


def _range_header(asked: _Request, etag: str) -> str | None:
    """The Range header, unless If-Range names another representation."""
    if_range = asked.request.headers.get("If-Range")
    if if_range is not None and if_range.strip() != etag:
        return None
    return asked.request.headers.get("Range")


def _head_response(headers: CIMultiDict[str]) -> web.StreamResponse:
    """Headers only, keeping the GET's Content-Length (web.Response would say 0 for its empty body)."""
    return web.StreamResponse(headers=headers)


# --- application/vnd.ipld.car --------------------------------------------------------------------------

async def _car(asked: _Request) -> web.StreamResponse:
    scope = trustless.parse_scope(asked.request.query)
    variant = asked.negotiated.car
    get_block = asked.node.get_block
    plan = await _run(trustless.plan_car, asked.root, asked.segments, scope, get_block)
    etag = trustless.car_etag(asked.root, asked.segments, scope, variant)
    headers = asked.trustless_headers(etag, variant.media_type, "car")
    headers["Accept-Ranges"] = "none"
    headers["X-Ipfs-Roots"] = ",".join(str(c) for c in plan.resolved.chain)
    if asked.not_modified(etag):
        return web.Response(status=304, headers=headers)
    if asked.head:
        return web.Response(headers=headers)
    expected = plan.byte_range[1] - plan.byte_range[0] + 1 if plan.byte_range else None
    prefetch = _Prefetch(asked.node, asked.request.config_dict[READ_POOL], expected)
    prefetch.note(plan.resolved.terminal, plan.terminal_block)
    blocks = trustless.car_blocks(plan, prefetch.get_block, variant.dups)
    response = web.StreamResponse(headers=headers)
    await response.prepare(asked.request)
    await response.write(car.encode_header([asked.root]))
    await _pump(asked, response, _batches(blocks, _section))
    await response.write_eof()
    return response


class _Prefetch:
    """A get_block for one stream that reads and verifies the blocks it expects next, on the read pool.

    It follows the walk's depth-first order: the links of each block read go
    to the front of the queue, and the next READ_AHEAD of them are hinted to
    the OS, so the disk works ahead. Once the walk asks for a block, the next
    PREFETCH_BLOCKS are also read and hashed on the pool's threads (hashlib
    lets go of the GIL, so two cores hash at once). Each block is verified
    before it is handed out, and errors come from get_block at the same point
    of the walk as without prefetching. A wrong guess (a link the scope or
    range skips) costs a hint, or a read once the walk is under way; a stream
    expected to be small (a short range) only hints, so it wastes no reads.
    """

    def __init__(self, node: Node, pool: Executor, expected_bytes: int | None = None) -> None:
        self._node = node
        self._pool = pool
        self._depth = PREFETCH_BLOCKS if expected_bytes is None or expected_bytes > BATCH_BYTES else 0
        self._upcoming: deque[Cid] = deque()
        self._queued: set[Cid] = set()
        self._advised: set[Cid] = set()
        self._reads: dict[Cid, Future[bytes]] = {}

    def get_block(self, cid: Cid) -> bytes:
        read = self._reads.pop(cid, None)
        block = read.result() if read is not None else self._node.get_block(cid)
        self.note(cid, block)
        for next_cid in itertools.islice(self._upcoming, self._depth):
            if next_cid not in self._reads and next_cid.hash_code != cids.IDENTITY:
                self._reads[next_cid] = self._pool.submit(self._node.get_block, next_cid)
        return block

    def note(self, cid: Cid, block: bytes) -> None:
        """cid was just read (here, or before the stream began): hint what follows it."""
        if cid in self._queued:
            while self._upcoming and (skipped := self._upcoming.popleft()) != cid:
                read = self._reads.pop(skipped, None)
                if read is not None:
                    read.cancel()
        if cid.codec != cids.RAW:
            links = [link for link in dag.links_of(cid, block) if link not in self._queued]
            self._upcoming.extendleft(reversed(links))
            self._queued.update(links)
        fresh = [c for c in itertools.islice(self._upcoming, READ_AHEAD) if c not in self._advised]
        if fresh:
            self._node.advise_blocks(fresh)
            self._advised.update(fresh)


def _section(item: tuple[Cid, bytes]) -> Sequence[bytes]:
    cid, block = item
    return car.section_head(cid, len(block)), block  # the block is sent as it is, never copied


def _batches(items: Iterator[_T], parts: Callable[[_T], Sequence[bytes]]) -> Callable[[], list[bytes]]:
    """A function for a worker thread: the next ~BATCH_BYTES of output, [] at the end."""

    def next_batch() -> list[bytes]:
        batch: list[bytes] = []
        size = 0
        for item in items:
            pieces = parts(item)
            batch.extend(pieces)
            size += sum(len(piece) for piece in pieces)
            if size >= BATCH_BYTES or len(batch) >= BATCH_PIECES:
                break
        return batch

    return next_batch


async def _pump(asked: _Request, response: web.StreamResponse, next_batch: Callable[[], list[bytes]],
                first: list[bytes] | None = None, expected: int | None = None) -> None:
    """Send batches as they are read, reading the next while this one goes out.

    A block that is missing or damaged halfway cannot change the 200 already
    sent: the connection is cut so the client sees a truncated body, never a
    complete-looking one. expected, if given, is the exact byte count to send.
    """
    loop = asyncio.get_running_loop()
    sent = 0
    try:
        batch = first if first is not None else await loop.run_in_executor(None, next_batch)
        while batch:
            pending = loop.run_in_executor(None, next_batch)
            for piece in batch:
                await response.write(piece)
                sent += len(piece)
            batch = await pending
    except NodeError as exc:
        log.warning("%s: stream cut after %d bytes: %s", asked.content_path, sent, exc.message,
                    extra={"cid": str(asked.root), "sent": sent})
        _cut(asked.request)
        return
    if expected is not None and sent != expected:
        log.warning("%s: the file's blocks held %d bytes, its root says %d; stream cut",
                    asked.content_path, sent, expected, extra={"cid": str(asked.root)})
        _cut(asked.request)


def _cut(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


# --- files and directories for browsers ---------------------------------------------------------------

async def _deserialized(asked: _Request) -> web.StreamResponse:
    request = asked.request
    if request.headers.get("Service-Worker") == "script":
        raise InputError("service worker registration is not allowed on this gateway")
    get_block = asked.node.get_block
    resolved = await _run(trustless.resolve, asked.root, asked.segments, get_block)
    terminal = resolved.terminal
    block = await _run(get_block, terminal)
    node = trustless.unixfs_or_none(terminal, block)
    if node is None:
        raise NotAcceptable(f"{terminal} is {terminal.codec_name} data, not a UnixFS file or directory; "
                            "ask for ?format=raw or ?format=car")
    kind = node.unixfs.type
    roots = ",".join(str(c) for c in resolved.chain)
    name: str | None = asked.segments[-1] if asked.segments else None
    if kind in (NodeType.DIRECTORY, NodeType.HAMT_SHARD):
        if not asked.trailing_slash:
            location = request.rel_url.raw_path + "/" + (f"?{request.rel_url.raw_query_string}"
                                                         if request.rel_url.raw_query_string else "")
            raise web.HTTPMovedPermanently(location)
        index = await _run(trustless.find_index, terminal, block, get_block)
        if index is None:
            return await _listing(asked, terminal, block, roots)
        block = await _run(get_block, index)
        terminal, node = index, unixfs.decode_node(index, block)
        kind, name = node.unixfs.type, "index.html"
    if kind == NodeType.SYMLINK:
        return _symlink(asked, terminal, node, roots)
    if kind not in (NodeType.FILE, NodeType.RAW):
        raise NotAcceptable(f"{terminal} is a UnixFS {kind.name.lower()}; ask for ?format=car")
    return await _file(asked, terminal, block, unixfs.file_size(node), name, roots)


async def _file(asked: _Request, cid: Cid, root_block: bytes, size: int, name: str | None,
                roots: str) -> web.StreamResponse:
    request = asked.request
    filename = request.query.get("filename") or name
    etag = trustless.file_etag(cid)
    wanted = trustless.parse_range(_range_header(asked, etag), size)
    first, last = (wanted.first, wanted.last) if wanted else (0, size - 1)
    get_block = asked.node.get_block
    prefetch = _Prefetch(asked.node, request.config_dict[READ_POOL], last - first + 1)
    prefetch.note(cid, root_block)
    next_batch = _batches(trustless.file_bytes(cid, prefetch.get_block, first, last, root_block), _whole)
    opening: list[bytes] = []
    if size and not (wanted is None and asked.head and _extension_known(filename)):
        opening = await _run(next_batch)  # read anyway, and the type is sniffed from it
    head = b"".join(opening)[:trustless.SNIFF_BYTES]
    if first > 0 and not _extension_known(filename):
        head = b"".join(await _run(lambda: list(trustless.file_bytes(
            cid, get_block, 0, min(size, trustless.SNIFF_BYTES) - 1, root_block))))
    media = trustless.content_type(filename, head)
    headers = asked.base_headers(etag, media)
    headers["Accept-Ranges"] = "bytes"
    headers["X-Ipfs-Roots"] = roots
    if trustless.is_active(media):
        headers["Content-Security-Policy"] = "sandbox"
    download = request.query.get("download") == "true"
    if filename or download:
        headers["Content-Disposition"] = trustless.content_disposition(
            "attachment" if download else "inline", filename or str(cid))
    if asked.not_modified(etag):
        return web.Response(status=304, headers=headers)
    status = 200
    if wanted is not None:
        status = 206
        headers["Content-Range"] = wanted.content_range(size)
    length = last - first + 1
    headers["Content-Length"] = str(length)
    if asked.head:
        return _head_response(headers)
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = length
    await response.prepare(request)
    if length:
        await _pump(asked, response, next_batch, first=opening, expected=length)
    await response.write_eof()
    return response


def _whole(piece: bytes) -> Sequence[bytes]:
    return (piece,)


def _extension_known(filename: str | None) -> bool:
    return trustless.content_type(filename, b"\0") != trustless.OCTET_STREAM


def _symlink(asked: _Request, cid: Cid, node: unixfs.UnixFsNode, roots: str) -> web.Response:
    etag = trustless.file_etag(cid)
    headers = asked.base_headers(etag, "text/plain; charset=utf-8")
    headers["X-Ipfs-Roots"] = roots
    if asked.not_modified(etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=node.unixfs.data or b"", headers=headers)


async def _listing(asked: _Request, cid: Cid, block: bytes, roots: str) -> web.StreamResponse:
    etag = trustless.listing_etag(cid)
    headers = asked.base_headers(etag, "text/html; charset=utf-8")
    headers["X-Ipfs-Roots"] = roots
    headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
    if asked.not_modified(etag):
        return web.Response(status=304, headers=headers)

    def first_entries() -> tuple[list[trustless.ListingEntry], bool]:
        found: list[trustless.ListingEntry] = []
        for entry in trustless.directory_entries(cid, block, asked.node.get_block):
            if len(found) == trustless.MAX_LISTING_ENTRIES:
                return found, True
            found.append(entry)
        return found, False

    entries, truncated = await _run(first_entries)
    page = trustless.render_listing(unquote(asked.content_path) + "/", cid, entries, truncated).encode()
    if asked.head:
        headers["Content-Length"] = str(len(page))
        return _head_response(headers)
    return web.Response(body=page, headers=headers)

