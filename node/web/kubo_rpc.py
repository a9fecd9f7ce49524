"""Kubo's RPC API under /api/v0: the subset a pusher or kubo-rpc-client needs to write to artkeep.

I/O edge: thin handlers over Node that answer in Kubo's wire format (go-ipfs-cmds): POST only,
options in the query string, files as multipart parts, JSON or NDJSON out, and errors as
{"Message", "Code", "Type": "error"}. It never fetches from the network: like
`ipfs --offline`, it pins only DAGs whose every block is already here. Every command needs an
API token; uploads stream to a worker thread and are never held whole in memory.
docs/http-api.md ("Kubo RPC subset") lists each command and how it differs from Kubo.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import platform
import sys
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from aiohttp import BodyPartReader, MultipartReader, hdrs, web
from multidict import CIMultiDict

from node import __version__, signing, varint
from node import cid as cids
from node.blockstore import MAX_BLOCK_SIZE
from node.bridge import CHUNK, BlockingReader
from node.car import BinaryStream
from node.cid import Cid
from node.errors import (
    BlockNotFound,
    BlockTooLarge,
    InputError,
    NodeError,
    PinNotFound,
    TooLarge,
    Unauthorized,
    UploadStalled,
)
from node.node import Node
from node.web.context import TOKEN, node_of, offload, options_of, require_token

PREFIX: Final = "/api/v0"
JSON: Final = "application/json"
AGENT: Final = f"artkeep/{__version__}"
ALLOW: Final = "OPTIONS, POST"
# go-ipfs-cmds error codes: ErrNormal answers 500, ErrClient 400.
ERR_NORMAL: Final = 0
ERR_CLIENT: Final = 1
PIN_TYPES: Final = ("direct", "indirect", "recursive", "all")
DIRECTORY_PART: Final = "application/x-directory"
# Values Go's strconv.ParseBool accepts; a bare `?flag` counts as true.
TRUE_VALUES: Final = frozenset({"", "1", "t", "T", "TRUE", "true", "True"})
FALSE_VALUES: Final = frozenset({"0", "f", "F", "FALSE", "false", "False"})
BIG_BLOCK: Final = (f"produced block is over {MAX_BLOCK_SIZE // (1024 * 1024)}MiB: big blocks can't be "
                    "exchanged with other peers. consider using UnixFS for automatic chunking of bigger "
                    "files (artkeep never stores bigger blocks, allow-big-block or not)")
HASHES: Final = {name: code for code, name in cids.HASH_NAMES.items() if code != cids.IDENTITY}
CODECS: Final = {name: code for code, name in cids.CODEC_NAMES.items()}
# The deprecated block/put `format` names Kubo still maps to codecs.
LEGACY_FORMATS: Final = {"v0": "dag-pb", "protobuf": "dag-pb", "cbor": "dag-cbor"}
# libp2p's PublicKey protobuf for an Ed25519 key: Type = 1 (Ed25519), then Data, 32 bytes.
ED25519_KEY_PROTO: Final = b"\x08\x01\x12\x20"
GOARCH: Final = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm"}

Command = Callable[[web.Request], Awaitable[web.StreamResponse]]
Record = dict[str, Any]
_T = TypeVar("_T")


class _BadRequest(InputError):
    """The request does not call the command correctly (go-ipfs-cmds answers 400 in plain text)."""


def setup(app: web.Application) -> None:
    """Mount /api/v0 on the root app: one dispatcher, so auth, method and 404 come in Kubo's order."""
    rpc = web.Application(middlewares=[_kubo_errors])
    rpc.router.add_route("*", "/{command:.*}", _dispatch)
    app.add_subapp(PREFIX, rpc)


# --- the protocol: auth, method, command lookup, errors, response shapes

async def _dispatch(request: web.Request) -> web.StreamResponse:
    await _authorize(request)  # Kubo checks API.Authorizations before anything else
    if request.method == hdrs.METH_OPTIONS:
        return web.Response(status=204, headers={hdrs.ALLOW: ALLOW})
    if request.method != hdrs.METH_POST:
        return _plain(405, "405 - Method Not Allowed", {hdrs.ALLOW: ALLOW})
    command = COMMANDS.get(request.match_info["command"])
    if command is None:
        return _plain(404, "404 page not found")
    return await command(request)


async def _authorize(request: web.Request) -> None:
    """Accept `Bearer TOKEN`, and `Basic` with the token as password (any user name), as Kubo does."""
    scheme, _, credentials = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    if scheme.lower() != "basic":
        await require_token(request, write=True)
        return
    try:
        _, _, secret = base64.b64decode(credentials.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("malformed Basic credentials") from None
    headers = CIMultiDict(request.headers)
    headers[hdrs.AUTHORIZATION] = f"Bearer {secret}"
    token = await require_token(request.clone(headers=headers), write=True)
    assert token is not None  # write=True never passes without one
    request[TOKEN] = token


@web.middleware
async def _kubo_errors(request: web.Request, handler: Command) -> web.StreamResponse:
    try:
        return await handler(request)
    except Unauthorized as exc:
        return _plain(403, f"Kubo RPC Access Denied: {exc.message}")
    except _BadRequest as exc:
        return _plain(400, exc.message)
    except (TooLarge, UploadStalled) as exc:  # artkeep's own limits keep their status
        return _error(exc.http_status, exc.message, ERR_CLIENT)
    except NodeError as exc:  # every command error is a 500 in Kubo
        return _error(500, exc.message, ERR_NORMAL)


def _plain(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """What Go's http.Error sends: the message and a newline, as text."""
    return web.Response(status=status, text=message + "\n", headers={
        hdrs.CONTENT_TYPE: "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff",
        **(headers or {})})


def _error(status: int, message: str, code: int) -> web.Response:
    return web.Response(status=status, body=_line({"Message": message, "Code": code, "Type": "error"}),
                        headers={hdrs.CONTENT_TYPE: JSON})


def _line(record: Record) -> bytes:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _single(record: Record) -> web.Response:
    """A command that emits one value (cmds.EmitOnce)."""
    return web.Response(body=_line(record), headers={hdrs.CONTENT_TYPE: JSON})


async def _ndjson(request: web.Request, records: Iterable[Record]) -> web.StreamResponse:
    """A command that emits values one by one: NDJSON, flagged with X-Chunked-Output as Kubo does."""
    response = web.StreamResponse(headers={hdrs.CONTENT_TYPE: JSON, "X-Chunked-Output": "1"})
    await response.prepare(request)
    for record in records:
        await response.write(_line(record))
    await response.write_eof()
    return response


# --- arguments and options

def _args(request: web.Request, name: str, *, variadic: bool) -> list[str]:
    args = request.query.getall("arg", [])
    if not args:
        raise _BadRequest(f'argument "{name}" is required')
    if not variadic and len(args) > 1:
        raise _BadRequest(f"expected 1 argument(s), got {len(args)}")
    return args


def _option(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise _BadRequest(f"expected key {name} to have only a single value, received {values}")
    return values[0] if values else None


def _flag(request: web.Request, name: str, default: bool) -> bool:
    value = _option(request, name)
    if value is None:
        return default
    if value in TRUE_VALUES or value in FALSE_VALUES:
        return value in TRUE_VALUES
    raise _BadRequest(f'could not convert value "{value}" to type "bool" (for option "-{name}")')


def _integer(request: web.Request, name: str, default: int) -> int:
    value = _option(request, name)
    try:
        return default if value is None else int(value)
    except ValueError:
        raise _BadRequest(f'could not convert value "{value}" to type "int" (for option "-{name}")') from None


async def _resolve_all(request: web.Request, paths: list[str]) -> list[Cid]:
    """CIDs or /ipfs/ paths (through UnixFS folders already here) to CIDs, parsed strictly."""
    return await offload(lambda: [node_of(request).resolve(path) for path in paths])


# --- uploads: multipart file parts streamed to a worker thread

class Uploads:
    """The file parts of a multipart body, as (name, stream) pairs for a worker thread to read.

    Iterate it only on a thread other than the loop's. Parts are fetched on the loop; all of
    them together may carry `limit` bytes, and every wait for data ends after `stall_timeout`.
    Malformed multipart framing raises InputError.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, body: MultipartReader, limit: int,
                 stall_timeout: float) -> None:
        self._loop = loop
        self._body = body
        self._limit = limit
        self._stall_timeout = stall_timeout
        self.count = 0

    def __iter__(self) -> Iterator[tuple[str, BinaryStream]]:
        used = 0
        while (part := self._on_loop(self._next_part())) is not None:
            reader = BlockingReader(self._loop, functools.partial(self._read_chunk, part),
                                    self._limit - used, self._stall_timeout)
            self.count += 1
            yield urllib.parse.unquote(part.filename or ""), reader  # clients URL-escape file names
            while reader.read(CHUNK):  # what the consumer left unread still counts against the limit
                pass
            used += reader.consumed

    def _on_loop(self, step: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(step, self._loop).result()

    async def _next_part(self) -> BodyPartReader | None:
        part = await self._framed(self._body.next())
        if part is None:
            return None
        if not isinstance(part, BodyPartReader) or part.headers.get(hdrs.CONTENT_TYPE) == DIRECTORY_PART:
            raise InputError("expected a file handle")
        return part

    async def _read_chunk(self, part: BodyPartReader, size: int) -> bytes:
        return await self._framed(part.read_chunk(size))

    async def _framed(self, step: Awaitable[_T]) -> _T:
        try:
            return await asyncio.wait_for(step, self._stall_timeout)
        except TimeoutError:
            raise UploadStalled(f"no data for {self._stall_timeout:g} s; the upload was dropped") from None
        except ValueError as exc:  # aiohttp's word for broken multipart framing
            raise InputError(f"malformed multipart body: {exc}") from None


async def _uploads(request: web.Request) -> Uploads:
    """The request's file parts; the body must be multipart/form-data under the upload limit."""
    options = options_of(request)
    limit = options.max_upload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"request body of {request.content_length} bytes is over the {limit}-byte limit")
    if request.content_type != "multipart/form-data":
        raise _BadRequest("file argument 'path' is required")
    try:
        body = await request.multipart()
    except (AssertionError, ValueError, KeyError) as exc:  # aiohttp refuses a missing or bad boundary
        raise _BadRequest(f"malformed multipart body: {exc!r}") from None
    return Uploads(asyncio.get_running_loop(), body, limit, options.upload_timeout)


# --- commands

async def _dag_import(request: web.Request) -> web.StreamResponse:
    pin_roots = _flag(request, "pin-roots", True)
    stats = _flag(request, "stats", False)
    uploads = await _uploads(request)
    done = await offload(node_of(request).import_cars, uploads, pin_roots=pin_roots)
    if not uploads.count:
        raise _BadRequest("file argument 'path' is required")
    records: list[Record] = []
    if pin_roots:
        records += [{"Root": {"Cid": {"/": str(root)}, "PinErrorMsg": done.pin_errors.get(root, "")}}
                    for root in done.roots]
    if stats:
        records.append({"Stats": {"BlockCount": done.blocks, "BlockBytesCount": done.block_bytes}})
    return await _ndjson(request, records)


@dataclass(frozen=True, slots=True)
class CidPrefix:
    """How block/put names a block: CID version, codec and multihash function."""

    version: int
    codec: int
    hash_code: int

    def cid_of(self, block: bytes) -> Cid:
        digest = cids.hash_block(self.hash_code, block)
        multihash = varint.encode(self.hash_code) + varint.encode(len(digest)) + digest
        return Cid(self.version, self.codec, multihash)


def _block_prefix(request: web.Request) -> CidPrefix:
    """Kubo's block/put options: cid-codec (default raw, CIDv1), the deprecated format, mhtype, mhlen."""
    codec = _option(request, "cid-codec") or ""
    legacy = _option(request, "format") or ""
    if legacy and codec not in ("", "raw"):
        raise InputError('unable to use "format" (deprecated) and a custom "cid-codec" at the same time')
    codec = LEGACY_FORMATS.get(legacy, legacy) if legacy else codec or "raw"
    if codec not in CODECS:
        raise InputError(f"artkeep stores only {', '.join(CODECS)} blocks, not {codec!r}")
    hash_name = _option(request, "mhtype") or "sha2-256"
    if hash_name not in HASHES:
        raise InputError(f"unrecognized multihash function: {hash_name}")
    prefix = CidPrefix(0 if legacy == "v0" else 1, CODECS[codec], HASHES[hash_name])
    digest_size = len(cids.hash_block(prefix.hash_code, b""))
    if _integer(request, "mhlen", -1) not in (-1, digest_size):
        raise InputError(f"artkeep makes only full {hash_name} digests (mhlen -1 or {digest_size})")
    if prefix.version == 0 and prefix.hash_code != cids.SHA2_256:
        raise InputError("only sha2-256 is allowed with CIDv0")
    return prefix


def _put_blocks(node: Node, uploads: Uploads, prefix: CidPrefix, pin: bool) -> list[Record]:
    """Store each uploaded part as one block (on a worker thread); pin each if asked."""
    stats: list[Record] = []
    for name, stream in uploads:
        block = _read_at_most(stream, MAX_BLOCK_SIZE + 1)
        if len(block) > MAX_BLOCK_SIZE:
            raise BlockTooLarge(BIG_BLOCK)
        cid = prefix.cid_of(block)
        node.put_block(cid, block)
        if pin:
            node.pin_root(cid, name)
        stats.append({"Key": str(cid), "Size": len(block)})
    return stats


def _read_at_most(stream: BinaryStream, limit: int) -> bytes:
    data = bytearray()
    while len(data) < limit and (chunk := stream.read(limit - len(data))):
        data += chunk
    return bytes(data)


async def _block_put(request: web.Request) -> web.StreamResponse:
    prefix = _block_prefix(request)
    pin = _flag(request, "pin", False)
    uploads = await _uploads(request)
    stats = await offload(_put_blocks, node_of(request), uploads, prefix, pin)
    if not uploads.count:
        raise _BadRequest("file argument 'data' is required")
    return await _ndjson(request, stats)


async def _local_block(request: web.Request) -> tuple[Cid, bytes]:
    """The block named by the one `arg`, from the store only (re-hashed on the way)."""
    [cid] = await _resolve_all(request, _args(request, "cid", variadic=False))
    node = node_of(request)
    if not await offload(node.has_block, cid):
        raise BlockNotFound(f"block was not found locally (offline): ipld: could not find {cid}")
    return cid, await offload(node.get_block, cid)


async def _block_get(request: web.Request) -> web.StreamResponse:
    _, block = await _local_block(request)
    return web.Response(body=block, headers={hdrs.CONTENT_TYPE: "text/plain", "X-Stream-Output": "1",
                                             "X-Content-Type-Options": "nosniff"})


async def _block_stat(request: web.Request) -> web.StreamResponse:
    cid, block = await _local_block(request)
    return _single({"Key": str(cid), "Size": len(block)})


async def _pin_add(request: web.Request) -> web.StreamResponse:
    paths = _args(request, "ipfs-path", variadic=True)
    if not _flag(request, "recursive", True):
        raise _BadRequest("artkeep keeps recursive pins only: direct pins (recursive=false) are not "
                          "supported")
    name = _option(request, "name") or ""
    roots = await _resolve_all(request, paths)
    node = node_of(request)
    await offload(lambda: [node.pin_root(root, name) for root in roots])
    return _single({"Pins": [str(root) for root in roots]})


def _unpin_all(node: Node, roots: list[Cid], recursive: bool) -> None:
    """Remove every pin, or none if one of them is not a pin."""
    for root in roots:
        if node.get_pin(root) is None:
            raise PinNotFound(f"{root} is not pinned or pinned indirectly")
        if not recursive:
            raise InputError(f"{root} is pinned recursively")
    for root in roots:
        node.unpin(root)


async def _pin_rm(request: web.Request) -> web.StreamResponse:
    paths = _args(request, "ipfs-path", variadic=True)
    recursive = _flag(request, "recursive", True)
    roots = await _resolve_all(request, paths)
    await offload(_unpin_all, node_of(request), roots, recursive)
    return _single({"Pins": [str(root) for root in roots]})


@dataclass(frozen=True, slots=True)
class PinListing:
    """pin/ls's question: which type, which CIDs (none: all), and whether to show names."""

    kind: str
    wanted: list[Cid]
    names: bool
    name_filter: str

    def answer(self, node: Node) -> list[tuple[str, str, str]]:
        """(CID, type, name) of each pin asked for; PinNotFound names the first wanted CID that is not."""
        pins = {pin.cid: pin for pin in node.pins()} if self.kind != "direct" else {}
        owners = node.pinned_blocks() if self.kind in ("indirect", "all") else {}
        if self.wanted:
            return [self._one(cid, pins, owners) for cid in self.wanted]
        listed = [(pin.cid, "recursive", pin.name if self.names else "") for pin in pins.values()
                  if self.name_filter in pin.name] if self.kind in ("recursive", "all") else []
        if not self.name_filter:
            listed += sorted((str(cid), "indirect", "") for cid in owners if str(cid) not in pins)
        return listed

    def _one(self, cid: Cid, pins: dict[str, Any], owners: dict[Cid, Cid]) -> tuple[str, str, str]:
        if self.kind in ("recursive", "all") and str(cid) in pins:
            return str(cid), "recursive", ""
        if cid in owners and str(cid) not in pins:
            return str(cid), f"indirect through {owners[cid]}", ""
        raise PinNotFound(f"path '/ipfs/{cid}' is not pinned")


async def _pin_ls(request: web.Request) -> web.StreamResponse:
    kind = _option(request, "type") or "all"
    if kind not in PIN_TYPES:
        raise InputError(f"invalid type '{kind}', must be one of {{direct, indirect, recursive, all}}")
    name_filter = _option(request, "name") or ""
    paths = request.query.getall("arg", [])
    listing = PinListing(kind, await _resolve_all(request, paths) if paths else [],
                         _flag(request, "names", False) or bool(name_filter), name_filter)
    found = await offload(listing.answer, node_of(request))
    if _flag(request, "stream", False):
        # Go's PinLsObject: Cid, Name, Type, each left out when empty.
        return await _ndjson(request, ({key: value for key, value in
                                        (("Cid", cid), ("Name", name), ("Type", kind)) if value}
                                       for cid, kind, name in found))
    keys = {cid: {"Type": kind, "Name": name} for cid, kind, name in found}
    return _single({"Keys": keys} if keys else {})  # Kubo leaves out an empty Keys


async def _id(request: web.Request) -> web.StreamResponse:
    public = await offload(node_of(request).public_key)
    peer = signing.peer_id(public)
    asked = request.query.getall("arg", [])
    if asked and asked != [peer]:
        raise InputError(f"artkeep has no libp2p routing: it cannot look up peer {asked[0]}")
    return _single({
        "ID": peer,
        "PublicKey": base64.b64encode(ED25519_KEY_PROTO + public).decode(),
        "Addresses": [],  # artkeep speaks no libp2p: nothing to dial
        "AgentVersion": AGENT,
        "Protocols": [],
    })


async def _version(request: web.Request) -> web.StreamResponse:
    machine = platform.machine().lower()
    return _single({
        "Version": __version__,  # artkeep's version, not a Kubo version
        "Commit": "",
        "Repo": "",
        "System": f"{GOARCH.get(machine, machine)}/{sys.platform}",
        "Golang": f"python{platform.python_version()}",  # the runtime, in the field Kubo uses for Go's
    })


COMMANDS: Final[dict[str, Command]] = {
    "dag/import": _dag_import,
    "block/put": _block_put,
    "block/get": _block_get,
    "block/stat": _block_stat,
    "pin/add": _pin_add,
    "pin/ls": _pin_ls,
    "pin/rm": _pin_rm,
    "id": _id,
    "version": _version,
}
