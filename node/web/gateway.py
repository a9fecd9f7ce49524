"""The read side over HTTP: the IPFS trustless gateway (raw blocks, CARs) and files for browsers, under /ipfs.

I/O edge, thin: node/trustless.py decides formats, scopes, headers and
which blocks go out; this module reads blocks off the event loop (one
offloaded read per raw block; CARs and files in batches, the next batch
read while the last is being sent) and writes with backpressure. It never
fetches from the network: what is not in the store is 404. Errors are
text/plain, as gateways answer them.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
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
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_T = TypeVar("_T")

BATCH_BYTES = 4 * 1024 * 1024  # read this much per trip to a worker thread
BATCH_PIECES = 1024
READ_AHEAD = 8  # block files hinted to the OS ahead of a stream (8 MiB with 1 MiB chunks)
PREFIX = "/ipfs/"


def setup(app: web.Application) -> None:
    """Mount the gateway routes on the root app."""
    gateway = web.Application(middlewares=[_plain_errors])
    gateway.router.add_get("/{cid}", _handle)
    gateway.router.add_get("/{cid}/{path:.*}", _handle)
    app.add_subapp("/ipfs", gateway)


@web.middleware
async def _plain_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except NodeError as exc:
        # A block that rotted in our own store is our fault, not a bad upstream's.
        status = 500 if isinstance(exc, IntegrityError) else exc.http_status
        if status >= 500:
            log.error("%s %s: %s", request.method, request.path, exc.message)
        headers = {"X-Content-Type-Options": "nosniff"}
        if isinstance(exc, trustless.Unsatisfiable):
            headers["Content-Range"] = f"bytes */{exc.size}"
        return web.Response(status=status, text=exc.message + "\n", headers=headers)


@functools.lru_cache(maxsize=4096)
def _parse_cid(text: str) -> Cid:
    return cids.parse(text)


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
        name = self.request.query.get("filename") or f"{self.root}.{extension}"
        headers["Content-Disposition"] = trustless.content_disposition("attachment", name)
        if self.negotiated.by_accept:
            query = {**self.request.query, "format": self.negotiated.format.value}
            headers["Content-Location"] = f"{self.request.rel_url.raw_path}?{urlencode(query)}"
        return headers


async def _handle(request: web.Request) -> web.StreamResponse:
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
    etag = trustless.raw_etag(cid)
    headers = asked.trustless_headers(etag, trustless.MEDIA_RAW, "bin")
    headers["Accept-Ranges"] = "bytes"
    if asked.not_modified(etag) or asked.head:
        size = len(cid.digest) if cid.hash_code == cids.IDENTITY else await _run(asked.node.block_size, cid)
        if asked.not_modified(etag):
            return web.Response(status=304, headers=headers)
        headers["Content-Length"] = str(size)
        return _head_response(headers)
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
    read_ahead = _ReadAhead(asked.node)
    read_ahead.note(plan.resolved.terminal, plan.terminal_block)
    blocks = trustless.car_blocks(plan, read_ahead.get_block, variant.dups)
    response = web.StreamResponse(headers=headers)
    await response.prepare(asked.request)
    await response.write(car.encode_header([asked.root]))
    await _pump(asked, response, _batches(blocks, _section))
    await response.write_eof()
    return response


class _ReadAhead:
    """A get_block for one stream that tells the OS which block files come next.

    It follows the walk's depth-first order: the links of each block read go
    to the front of the queue, and the next READ_AHEAD of them are hinted, so
    the disk reads ahead while this thread hashes. A wrong guess (a link the
    scope skips) costs only a hint.
    """

    def __init__(self, node: Node) -> None:
        self._node = node
        self._upcoming: deque[Cid] = deque()
        self._queued: set[Cid] = set()
        self._advised: set[Cid] = set()

    def get_block(self, cid: Cid) -> bytes:
        block = self._node.get_block(cid)
        self.note(cid, block)
        return block

    def note(self, cid: Cid, block: bytes) -> None:
        """cid was just read (here, or before the stream began): hint what follows it."""
        if cid in self._queued:
            while self._upcoming and self._upcoming.popleft() != cid:
                pass
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
    read_ahead = _ReadAhead(asked.node)
    read_ahead.note(cid, root_block)
    next_batch = _batches(trustless.file_bytes(cid, read_ahead.get_block, first, last, root_block), _whole)
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

