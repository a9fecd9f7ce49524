"""The gateway as a client sees it: trustless raw blocks and CARs, and files for browsers, on a real server.

Each test names the rule of ../shared/spec/trustless-gateway-rules.json (or
the path-gateway behaviour) it holds the server to. Blocks come from the
published fixtures (Kubo's and gateway-conformance's CARs) and from files
built here with small chunks, so every file has several levels of blocks.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from node import car, dag, trustless, unixfs
from node import cid as cids
from node.cid import Cid
from node.errors import InputError, NotAcceptable
from node.node import Node
from node.profiles import UNIXFS_V0_2015, UNIXFS_V1_2025, Profile
from node.trustless import DagScope, EntityBytes, Format
from tests.conftest import IPFS_FIXTURES, Served

RAW = "application/vnd.ipld.raw"
CAR = "application/vnd.ipld.car"
IMMUTABLE = "public, max-age=29030400, immutable"
PROBE = "bafkqaaa"
ABSENT = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"  # sha256 of "hello world"
# 1000-byte chunks, at most 4 links per node: a 10 kB file is three levels deep.
SMALL_V1: Profile = replace(UNIXFS_V1_2025, name="test-small-v1", chunk_size=1000, file_max_links=4)
SMALL_V0: Profile = replace(UNIXFS_V0_2015, name="test-small-v0", chunk_size=1000, file_max_links=4)

DIR_WITH_FILES = "bafybeihchr7vmgjaasntayyatmp5sv6xza57iy2h4xj7g46bpjij6yhrmy"
MULTIBLOCK = "bafybeigcisqd7m5nf3qmuvjdbakl5bdnh4ocrmacaqkpuh77qjvggmt2sa"
RAW_BLOCK_ROOT = "bafybeie72edlprgtlwwctzljf6gkn2wnlrddqjbkxo3jomh4n7omwblxly"
HAMT_ROOT = "bafybeidbclfqleg2uojchspzd4bob56dqetqjsj27gy2cq3klkkgxtpn4i"
MISSING_LEAF_ROOT = "QmYhmPjhFjYFyaoiuNzYv8WGavpSRDwdHWe5B4M5du5Rtk"
CBOR_ROOT = "bafyreibs4utpgbn7uqegmd2goqz4bkyflre2ek2iwv743fhvylwi4zeeim"


# --- helpers ------------------------------------------------------------------------------------

def import_fixture(node: Node, name: str) -> None:
    with (IPFS_FIXTURES / "car" / name).open("rb") as stream:
        node.import_car(stream, name)


def store_bytes(node: Node, data: bytes, profile: Profile = SMALL_V1) -> Cid:
    """Build a UnixFS file of data under profile and put every block in the node's store."""
    blocks: dict[Cid, bytes] = {}
    link = unixfs.build_bytes(data, profile, lambda cid, parts: blocks.setdefault(cid, b"".join(parts)))
    put_all(node, blocks)
    return link.cid


def put_all(node: Node, blocks: dict[Cid, bytes]) -> None:
    """Straight into the store, many writes in flight (one fsync each through put_block is slow)."""
    with node.store.writer() as writer:
        for cid, block in blocks.items():
            writer.put(cid, [block])


def store_directory(node: Node, files: dict[str, bytes], profile: Profile = SMALL_V1) -> Cid:
    blocks: dict[Cid, bytes] = {}

    def sink(cid: Cid, parts: Any) -> None:
        blocks.setdefault(cid, b"".join(parts))

    entries = [unixfs.DirEntry(name, unixfs.build_bytes(data, profile, sink)) for name, data in files.items()]
    root = unixfs.directory(entries, profile, sink)
    put_all(node, blocks)
    return root.cid


def read_car_bytes(body: bytes) -> tuple[list[Cid], list[tuple[Cid, bytes]]]:
    """Roots and blocks of a CAR, every block checked against its CID."""
    reader = car.read_car(io.BytesIO(body))
    return list(reader.roots), list(reader)


def random_bytes(size: int, seed: str = "gateway") -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


async def get(served: Served, path: str, headers: dict[str, str] | None = None,
              method: str = "GET", **kwargs: Any) -> tuple[int, bytes, Any]:
    async with served.session.request(method, served.url + path, headers=headers or {},
                                      allow_redirects=False, **kwargs) as response:
        return response.status, await response.read(), response.headers


def walk_order(node: Node, root: Cid) -> list[Cid]:
    return [cid for cid, _ in dag.walk(root, node.get_block)]


# --- pure rules (no server) ------------------------------------------------------------------------

@pytest.mark.parametrize(("query", "accept", "expected"), [
    ({"format": "raw"}, None, Format.RAW),
    ({}, RAW, Format.RAW),
    ({"format": "car"}, None, Format.CAR),
    ({}, CAR, Format.CAR),
    ({"format": "raw"}, CAR, Format.RAW),  # the query wins over Accept
    ({}, None, Format.FILE),
    ({}, "text/html,application/xhtml+xml,*/*;q=0.8", Format.FILE),
    ({}, f"{CAR};q=0.5, {RAW}", Format.RAW),  # by quality, not by order
    ({}, f"{CAR};version=2, {RAW};q=0.1", Format.RAW),  # a variant we cannot make is skipped
])
def test_format_negotiation(query: dict[str, str], accept: str | None, expected: Format) -> None:
    assert trustless.negotiate(query, accept).format == expected


@pytest.mark.parametrize(("query", "accept", "error"), [
    ({"format": "tar"}, None, NotAcceptable),
    ({"format": "dag-json"}, None, NotAcceptable),
    ({"format": "nonsense"}, None, InputError),
    ({}, "application/vnd.ipld.dag-json", NotAcceptable),
    ({}, f"{CAR}; version=2", NotAcceptable),
    ({}, f"{CAR}; order=foo", NotAcceptable),
    ({"format": "car", "car-version": "2"}, None, NotAcceptable),
    ({"format": "car", "car-dups": "maybe"}, None, NotAcceptable),
])
def test_unsupported_formats_are_refused(query: dict[str, str], accept: str | None,
                                         error: type[Exception]) -> None:
    with pytest.raises(error):
        trustless.negotiate(query, accept)


def test_car_parameters_in_the_query_win_over_accept() -> None:
    accepted = trustless.negotiate({"format": "car"}, f"{CAR}; version=1; order=dfs; dups=y")
    assert accepted.car.dups and "dups=y" in accepted.car.media_type
    overridden = trustless.negotiate({"format": "car", "car-dups": "n"}, f"{CAR}; dups=y")
    assert not overridden.car.dups


@pytest.mark.parametrize(("raw", "size", "expected"), [
    ("0:*", 100, (0, 99)),
    ("0:0", 100, (0, 0)),
    ("10:19", 100, (10, 19)),
    ("-10:*", 100, (90, 99)),
    ("-1000:*", 100, (0, 99)),  # partly before the start: clamped
    ("5:-10", 100, (5, 90)),  # to the 10th byte from the end, as -10:* starts there
    ("50:1000", 100, (50, 99)),  # partly past the end: clamped
    ("60:-50", 100, None),  # no byte: like dag-scope=block
])
def test_entity_bytes_resolve_against_the_file_size(raw: str, size: int,
                                                     expected: tuple[int, int] | None) -> None:
    scope = trustless.parse_scope({"entity-bytes": raw})
    assert scope.dag_scope == DagScope.ENTITY and scope.entity_bytes is not None
    assert scope.entity_bytes.resolve(size) == expected


def test_entity_bytes_wholly_past_the_end_is_400() -> None:
    with pytest.raises(InputError):
        EntityBytes(100, None).resolve(100)


@pytest.mark.parametrize("query", [
    {"dag-scope": "everything"}, {"entity-bytes": "a:b"}, {"entity-bytes": "10"},
    {"entity-bytes": "10:5"}, {"entity-bytes": "-5:5"}, {"entity-bytes": "0:*", "dag-scope": "all"},
])
def test_bad_scope_parameters_are_400(query: dict[str, str]) -> None:
    with pytest.raises(InputError):
        trustless.parse_scope(query)


@pytest.mark.parametrize(("head", "media"), [
    (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "image/png"),
    (b"\xff\xd8\xff\xe0\0\x10JFIF", "image/jpeg"),
    (b"RIFF\x24\0\0\0WEBPVP8 ", "image/webp"),
    (b"GIF89a\x01\0", "image/gif"),
    (b"\0\0\0\x1cftypavif\0\0\0\0", "image/avif"),
    (b"<?xml version='1.0'?><svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
    (b"  <!DOCTYPE html><p>hi", "text/html; charset=utf-8"),
    ("plain text, ünïcode".encode(), "text/plain; charset=utf-8"),
    (b"\0\1\2\3binary", "application/octet-stream"),
])
def test_content_type_is_sniffed_from_the_first_bytes(head: bytes, media: str) -> None:
    assert trustless.content_type(None, head) == media


def test_a_known_extension_decides_the_type() -> None:
    assert trustless.content_type("work.json", b"\x89PNG\r\n\x1a\n") == "application/json"
    assert trustless.content_type("noext", b"\x89PNG\r\n\x1a\n") == "image/png"


@pytest.mark.parametrize(("header", "size", "expected"), [
    ("bytes=0-99", 1000, (0, 99)), ("bytes=900-", 1000, (900, 999)), ("bytes=-100", 1000, (900, 999)),
    ("bytes=990-2000", 1000, (990, 999)), ("bytes=0-0,5-6", 1000, None), ("items=0-1", 1000, None),
    ("bytes=5-1", 1000, None),
])
def test_range_header(header: str, size: int, expected: tuple[int, int] | None) -> None:
    found = trustless.parse_range(header, size)
    assert (None if found is None else (found.first, found.last)) == expected


def test_unsatisfiable_range() -> None:
    with pytest.raises(trustless.Unsatisfiable):
        trustless.parse_range("bytes=1000-", 1000)


def test_etags_change_with_every_car_parameter() -> None:
    root = cids.parse(DIR_WITH_FILES)
    variant = trustless.CarVariant()
    etags = {
        trustless.car_etag(root, [], trustless.Scope(), variant),
        trustless.car_etag(root, [], trustless.Scope(DagScope.ENTITY), variant),
        trustless.car_etag(root, [], trustless.Scope(DagScope.BLOCK), variant),
        trustless.car_etag(root, [], trustless.Scope(DagScope.ENTITY, EntityBytes(0, 9)), variant),
        trustless.car_etag(root, [], trustless.Scope(DagScope.ENTITY, EntityBytes(0, None)), variant),
        trustless.car_etag(root, [], trustless.Scope(), trustless.CarVariant(dups=True)),
        trustless.car_etag(root, ["a"], trustless.Scope(), variant),
        trustless.raw_etag(root),
    }
    assert len(etags) == 8


def test_content_disposition_keeps_odd_names_safe() -> None:
    assert trustless.content_disposition("attachment", "a.bin") == 'attachment; filename="a.bin"'
    value = trustless.content_disposition("inline", 'ü"\r\n.png')
    assert "\r" not in value and "\n" not in value and 'filename="____.png"' in value
    assert "filename*=UTF-8''%C3%BC%22%0D%0A.png" in value


# --- raw blocks ------------------------------------------------------------------------------------

async def test_raw_block_is_the_exact_block_with_trustless_headers(served: Served) -> None:
    import_fixture(served.node, "dir-with-files.car")
    ascii_txt = "bafkreifkam6ns4aoolg3wedr4uzrs3kvq66p4pecirz6y2vlrngla62mxm"
    for cid_text in (DIR_WITH_FILES, MULTIBLOCK, ascii_txt):
        cid = cids.parse(cid_text)
        status, body, headers = await get(served, f"/ipfs/{cid_text}?format=raw")
        assert status == 200
        assert body == served.node.get_block(cid)
        assert hashlib.sha256(body).digest() == cid.digest
        assert headers["Content-Type"] == RAW
        assert headers["Content-Length"] == str(len(body))
        assert headers["Content-Disposition"] == f'attachment; filename="{cid_text}.bin"'
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Cache-Control"] == IMMUTABLE
        assert headers["Etag"] == f'"{cid_text}.raw"'
        assert headers["X-Ipfs-Path"] == f"/ipfs/{cid_text}"
        assert "Content-Location" not in headers


async def test_raw_by_accept_alone_says_where_the_format_lives(served: Served) -> None:
    import_fixture(served.node, "dir-with-files.car")
    status, body, headers = await get(served, f"/ipfs/{MULTIBLOCK}", {"Accept": RAW})
    assert status == 200 and body == served.node.get_block(cids.parse(MULTIBLOCK))
    assert headers["Content-Location"] == f"/ipfs/{MULTIBLOCK}?format=raw"
    assert headers["Vary"] == "Accept"


async def test_raw_filename_parameter(served: Served) -> None:
    import_fixture(served.node, "dir-with-files.car")
    _, _, headers = await get(served, f"/ipfs/{MULTIBLOCK}?format=raw&filename=foobar.bin")
    assert headers["Content-Disposition"] == 'attachment; filename="foobar.bin"'


async def test_raw_head_has_the_headers_and_no_body(served: Served) -> None:
    import_fixture(served.node, "dir-with-files.car")
    size = len(served.node.get_block(cids.parse(MULTIBLOCK)))
    status, body, headers = await get(served, f"/ipfs/{MULTIBLOCK}?format=raw", method="HEAD")
    assert status == 200 and body == b""
    assert headers["Content-Length"] == str(size) and headers["Content-Type"] == RAW


async def test_raw_with_a_path_answers_the_block_at_its_end(served: Served) -> None:
    import_fixture(served.node, "dir-with-files.car")
    status, body, headers = await get(served, f"/ipfs/{DIR_WITH_FILES}/multiblock.txt?format=raw")
    assert status == 200 and body == served.node.get_block(cids.parse(MULTIBLOCK))
    assert headers["Etag"] == f'"{MULTIBLOCK}.raw"'


async def test_raw_block_range(served: Served) -> None:
    import_fixture(served.node, "dir-with-files.car")
    block = served.node.get_block(cids.parse(MULTIBLOCK))
    status, body, headers = await get(served, f"/ipfs/{MULTIBLOCK}?format=raw", {"Range": "bytes=2-9"})
    assert status == 206 and body == block[2:10]
    assert headers["Content-Range"] == f"bytes 2-9/{len(block)}"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_probe_cid_answers_raw(served: Served, method: str) -> None:
    status, body, headers = await get(served, f"/ipfs/{PROBE}?format=raw", {"Accept": RAW}, method=method)
    assert status == 200 and body == b""
    if method == "GET":
        assert headers["Content-Length"] == "0"


async def test_probe_cid_answers_car_with_its_root(served: Served) -> None:
    status, body, headers = await get(served, f"/ipfs/{PROBE}?format=car", {"Accept": CAR})
    assert status == 200
    roots, blocks = read_car_bytes(body)
    assert [str(r) for r in roots] == [PROBE]
    assert blocks == []  # identity CIDs are never sent as blocks
    assert headers["Content-Type"].startswith(f"{CAR}; version=1")


async def test_cid_in_any_multibase_and_v0(served: Served, tmp_path: Path) -> None:
    from multiformats import multibase

    v0 = store_bytes(served.node, b"a small v0 file", SMALL_V0)
    block = served.node.get_block(v0)
    assert v0.version == 0
    spellings = [str(v0), str(v0.to_v1())] + [multibase.encode(bytes(v0.to_v1()), base)
                                              for base in ("base58btc", "base16", "base36", "base64url")]
    for spelling in spellings:
        status, body, _ = await get(served, f"/ipfs/{spelling}?format=raw")
        assert (status, body) == (200, block), spelling


# --- errors ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("query", ["?format=raw", "?format=car", "", "?format=car&dag-scope=block"])
async def test_absent_root_is_404(served: Served, query: str) -> None:
    for method in ("GET", "HEAD"):
        status, _, _ = await get(served, f"/ipfs/{ABSENT}{query}", method=method)
        assert status == 404, (query, method)


async def test_absent_path_is_404(served: Served) -> None:
    import_fixture(served.node, "dir-with-files.car")
    for query in ("?format=car", "?format=raw", ""):
        status, body, headers = await get(served, f"/ipfs/{DIR_WITH_FILES}/nope.txt{query}")
        assert status == 404, query
        assert headers["Content-Type"].startswith("text/plain") and b"nope.txt" in body


@pytest.mark.parametrize(("path", "status"), [
    ("/ipfs/not-a-cid?format=raw", 400),
    ("/ipfs/bafyINVALID?format=car", 400),
    (f"/ipfs/{PROBE}?format=car&dag-scope=some", 400),
    (f"/ipfs/{PROBE}?format=car&entity-bytes=x:y", 400),
    (f"/ipfs/{PROBE}?format=nonsense", 400),
    (f"/ipfs/{PROBE}?format=tar", 406),
    (f"/ipfs/{PROBE}?format=dag-json", 406),
    (f"/ipfs/{PROBE}?format=car&car-version=2", 406),
    (f"/ipfs/{PROBE}?format=car&car-order=rand", 406),
])
async def test_bad_requests(served: Served, path: str, status: int) -> None:
    got, body, headers = await get(served, path)
    assert got == status, body
    assert headers["Content-Type"].startswith("text/plain")


async def test_unsupported_accept_is_406(served: Served) -> None:
    for accept in ("application/vnd.ipld.dag-json", "application/vnd.ipfs.ipns-record",
                   f"{CAR}; version=2", f"{CAR}; order=random"):
        status, _, _ = await get(served, f"/ipfs/{PROBE}", {"Accept": accept})
        assert status == 406, accept


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_writes_to_the_gateway_are_405(served: Served, method: str) -> None:
    status, _, headers = await get(served, f"/ipfs/{PROBE}?format=raw", method=method)
    assert status == 405
    assert "GET" in headers["Allow"]


async def test_if_none_match_gives_304(served: Served) -> None:
    import_fixture(served.node, "dir-with-files.car")
    for query, accept in (("?format=raw", RAW), ("?format=car", CAR), ("?format=car&dag-scope=entity", CAR),
                          ("/multiblock.txt", "text/html")):
        path = f"/ipfs/{DIR_WITH_FILES}{query}"
        status, _, headers = await get(served, path, {"Accept": accept})
        assert status == 200, query
        etag = headers["Etag"]
        status, body, again = await get(served, path, {"Accept": accept, "If-None-Match": etag})
        assert (status, body) == (304, b""), query
        assert again["Etag"] == etag
        status, _, _ = await get(served, path, {"Accept": accept, "If-None-Match": '"other"'})
        assert status == 200


async def test_only_if_cached_is_412_for_what_is_not_here(served: Served) -> None:
    import_fixture(served.node, "dir-with-files.car")
    status, _, _ = await get(served, f"/ipfs/{ABSENT}?format=raw", {"Cache-Control": "only-if-cached"})
    assert status == 412
    status, _, _ = await get(served, f"/ipfs/{DIR_WITH_FILES}?format=raw",
                             {"Cache-Control": "only-if-cached"}, method="HEAD")
    assert status == 200


async def test_a_damaged_block_is_a_server_error_not_wrong_bytes(served: Served) -> None:
    cid = store_bytes(served.node, b"these bytes will rot on disk")
    path = served.node.store.path_of(cid)
    os.chmod(path, 0o644)
    path.write_bytes(b"these bytes will r0t on disk")
    status, body, _ = await get(served, f"/ipfs/{cid}?format=raw")
    assert status == 500 and b"damaged" in body


# context.require_token stores the token under a str request key, which aiohttp 3.14 warns about.
async def test_private_reads_need_a_token(serve_app: Any) -> None:
    served = await serve_app(serve_private_reads=True)
    status, _, _ = await get(served, f"/ipfs/{PROBE}?format=raw")
    assert status == 401
    status, _, _ = await get(served, f"/ipfs/{PROBE}?format=raw", served.auth)
    assert status == 200


# --- CARs --------------------------------------------------------------------------------------------

async def test_car_of_a_whole_dag_is_depth_first_without_duplicates(served: Served) -> None:
    import_fixture(served.node, "dir-with-files.car")
    status, body, headers = await get(served, f"/ipfs/{DIR_WITH_FILES}?format=car")
    assert status == 200
    assert headers["Content-Type"] == f"{CAR}; version=1; order=dfs; dups=n"
    assert headers["Content-Disposition"] == f'attachment; filename="{DIR_WITH_FILES}.car"'
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == IMMUTABLE
    assert headers["Accept-Ranges"] == "none"
    assert headers["Etag"].startswith(f'W/"{DIR_WITH_FILES}.car.')
    assert headers["X-Ipfs-Roots"] == DIR_WITH_FILES
    roots, blocks = read_car_bytes(body)
    assert [str(r) for r in roots] == [DIR_WITH_FILES]
    assert [str(cid) for cid, _ in blocks] == fixture_order("car/dir-with-files.car")


def fixture_order(name: str) -> list[str]:
    """The block CIDs of a fixture CAR in file order, as its manifest records them."""
    import json

    files = json.loads((IPFS_FIXTURES / "manifest.json").read_text())["files"]
    order: list[str] = next(entry for entry in files if entry["file"] == name)["car_facts"][
        "block_cids_in_file_order"]
    return order


async def test_car_by_accept_alone(served: Served) -> None:
    import_fixture(served.node, "dir-with-files.car")
    status, body, headers = await get(served, f"/ipfs/{DIR_WITH_FILES}",
                                      {"Accept": f"{CAR}; version=1; order=dfs; dups=n"})
    assert status == 200 and headers["Content-Location"] == f"/ipfs/{DIR_WITH_FILES}?format=car"
    assert len(read_car_bytes(body)[1]) == 9


async def test_car_head_has_headers_and_no_body(served: Served) -> None:
    import_fixture(served.node, "dir-with-files.car")
    status, body, headers = await get(served, f"/ipfs/{DIR_WITH_FILES}?format=car", method="HEAD")
    assert status == 200 and body == b""
    assert headers["Content-Type"].startswith(f"{CAR}; version=1")


async def test_car_entity_on_a_path_sends_the_path_then_the_file(served: Served) -> None:
    """gateway-conformance: root dir, (subdir,) file root, the file's leaves; in that order."""
    import_fixture(served.node, "dir-with-files.car")
    status, body, headers = await get(served,
                                      f"/ipfs/{DIR_WITH_FILES}/multiblock.txt?format=car&dag-scope=entity")
    assert status == 200
    expected = [DIR_WITH_FILES, *[str(c) for c in walk_order(served.node, cids.parse(MULTIBLOCK))]]
    assert [str(cid) for cid, _ in read_car_bytes(body)[1]] == expected
    assert headers["X-Ipfs-Roots"] == f"{DIR_WITH_FILES},{MULTIBLOCK}"
    assert headers["X-Ipfs-Path"] == f"/ipfs/{DIR_WITH_FILES}/multiblock.txt"

    import_fixture(served.node, "gateway-raw-block.car")
    status, body, _ = await get(served, f"/ipfs/{RAW_BLOCK_ROOT}/dir/ascii.txt?format=car&dag-scope=entity")
    assert [str(cid) for cid, _ in read_car_bytes(body)[1]] == fixture_order("car/gateway-raw-block.car")


async def test_car_block_scope_is_the_path_and_one_block(served: Served) -> None:
    import_fixture(served.node, "dir-with-files.car")
    _, body, _ = await get(served, f"/ipfs/{DIR_WITH_FILES}/multiblock.txt?format=car&dag-scope=block")
    assert [str(cid) for cid, _ in read_car_bytes(body)[1]] == [DIR_WITH_FILES, MULTIBLOCK]
    _, body, _ = await get(served, f"/ipfs/{DIR_WITH_FILES}?format=car&dag-scope=block")
    assert [str(cid) for cid, _ in read_car_bytes(body)[1]] == [DIR_WITH_FILES]


async def test_car_entity_of_a_directory_is_only_the_directory(served: Served) -> None:
    import_fixture(served.node, "dir-with-files.car")
    _, body, _ = await get(served, f"/ipfs/{DIR_WITH_FILES}?format=car&dag-scope=entity")
    assert [str(cid) for cid, _ in read_car_bytes(body)[1]] == [DIR_WITH_FILES]
    # entity-bytes means nothing to a directory: ignored, the answer is dag-scope=entity's
    _, ranged, _ = await get(served, f"/ipfs/{DIR_WITH_FILES}?format=car&entity-bytes=0:10")
    assert ranged == body


def leaf_ranges(node: Node, root: Cid, size: int) -> dict[Cid, tuple[int, int]]:
    """Every leaf with data, and the file bytes it holds [first, last]."""
    return {piece.cid: (piece.offset, piece.offset + len(piece.data) - 1)
            for piece in trustless.file_pieces(root, node.get_block, 0, size - 1) if piece.data}


@pytest.mark.parametrize("profile", [SMALL_V1, SMALL_V0], ids=["raw-leaves", "dag-pb-leaves"])
@pytest.mark.parametrize("entity_bytes", [
    "0:*", "0:0", "999:1000", "1500:2499", "-1024:*", "499:-1000", "9000:100000", "-1:*", "12345:-1",
])
async def test_car_entity_bytes_holds_exactly_the_blocks_of_the_range(served: Served, profile: Profile,
                                                                        entity_bytes: str) -> None:
    data = random_bytes(23_456, seed=profile.name)
    root = store_bytes(served.node, data, profile)
    status, body, headers = await get(served, f"/ipfs/{root}?format=car&entity-bytes={entity_bytes}")
    assert status == 200
    assert headers["Content-Type"] == f"{CAR}; version=1; order=dfs; dups=n"
    _, blocks = read_car_bytes(body)
    spec = trustless.parse_scope({"entity-bytes": entity_bytes}).entity_bytes
    assert spec is not None
    wanted = spec.resolve(len(data))
    assert wanted is not None
    first, last = wanted
    # Complete: the range can be read from the CAR's blocks alone.
    held = dict(blocks)
    got = b"".join(trustless.file_bytes(root, lambda c: held[c], first, last))
    assert got == data[first:last + 1]
    # Minimal: exactly the leaves that overlap the range, no other.
    leaves = leaf_ranges(served.node, root, len(data))
    sent_leaves = {cid for cid, _ in blocks if cid in leaves}
    assert sent_leaves == {cid for cid, (a, b) in leaves.items() if a <= last and b >= first}
    # Depth-first order: the same order as the whole file's walk, filtered.
    full = walk_order(served.node, root)
    assert [cid for cid, _ in blocks] == [cid for cid in full if cid in held]


async def test_car_entity_bytes_edge_cases(served: Served) -> None:
    data = random_bytes(5000)
    root = store_bytes(served.node, data)
    status, _, _ = await get(served, f"/ipfs/{root}?format=car&entity-bytes=5000:*")
    assert status == 400  # wholly past the end, and we can tell before streaming
    status, body, _ = await get(served, f"/ipfs/{root}?format=car&entity-bytes=3000:-3000")
    assert status == 200  # no byte selected: like dag-scope=block
    assert [cid for cid, _ in read_car_bytes(body)[1]] == [root]


async def test_car_entity_bytes_on_a_path(served: Served) -> None:
    data = random_bytes(10_000, seed="pathed")
    folder = store_directory(served.node, {"a.bin": data, "b.txt": b"beside"})
    status, body, _ = await get(served, f"/ipfs/{folder}/a.bin?format=car&entity-bytes=2500:3499")
    assert status == 200
    blocks = read_car_bytes(body)[1]
    assert blocks[0][0] == folder  # the path's block first
    held = dict(blocks)
    file_root = blocks[1][0]
    assert b"".join(trustless.file_bytes(file_root, lambda c: held[c], 2500, 3499)) == data[2500:3500]


async def test_car_dups(served: Served) -> None:
    data = bytes(1000) * 6 + b"tail"  # six identical chunks: one leaf CID, six links to it
    root = store_bytes(served.node, data)
    _, once, headers = await get(served, f"/ipfs/{root}?format=car")
    assert headers["Content-Type"].endswith("dups=n")
    _, twice, headers_y = await get(served, f"/ipfs/{root}?format=car&car-dups=y")
    assert headers_y["Content-Type"] == f"{CAR}; version=1; order=dfs; dups=y"
    cids_once = [cid for cid, _ in read_car_bytes(once)[1]]
    cids_twice = [cid for cid, _ in read_car_bytes(twice)[1]]
    assert len(cids_once) == len(set(cids_once))
    assert len(cids_twice) > len(cids_once) and set(cids_twice) == set(cids_once)
    assert headers["Etag"] != headers_y["Etag"]
    _, by_accept, _ = await get(served, f"/ipfs/{root}", {"Accept": f"{CAR}; version=1; dups=y"})
    assert by_accept == twice


async def test_car_order_unk_is_answered_depth_first(served: Served) -> None:
    import_fixture(served.node, "dir-with-files.car")
    status, _, headers = await get(served, f"/ipfs/{DIR_WITH_FILES}?format=car&car-order=unk")
    assert status == 200 and "order=dfs" in headers["Content-Type"]


async def test_etags_differ_by_format_and_scope(served: Served) -> None:
    import_fixture(served.node, "dir-with-files.car")
    etags = set()
    for query in ("format=raw", "format=car", "format=car&dag-scope=entity", "format=car&dag-scope=block",
                  "format=car&entity-bytes=0:10"):
        _, _, headers = await get(served, f"/ipfs/{MULTIBLOCK}?{query}")
        etags.add(headers["Etag"])
    assert len(etags) == 5


async def test_car_through_a_hamt_directory(served: Served) -> None:
    import_fixture(served.node, "single-layer-hamt-with-multi-block-files.car")
    _, body, _ = await get(served, f"/ipfs/{HAMT_ROOT}/470.txt?format=car&dag-scope=entity")
    blocks = [cid for cid, _ in read_car_bytes(body)[1]]
    file_blocks = walk_order(served.node, cids.parse(MULTIBLOCK))
    assert blocks[-len(file_blocks):] == file_blocks
    path_blocks = blocks[:-len(file_blocks)]
    assert path_blocks[0] == cids.parse(HAMT_ROOT)
    # Only the shards on the way to 470.txt, not the whole directory.
    assert len(path_blocks) <= 2
    # dag-scope=entity of the HAMT itself: every shard, no file
    _, body, _ = await get(served, f"/ipfs/{HAMT_ROOT}?format=car&dag-scope=entity")
    shard_cids = [cid for cid, _ in read_car_bytes(body)[1]]
    assert shard_cids[0] == cids.parse(HAMT_ROOT) and not set(shard_cids) & set(file_blocks)
    hamt_root = cids.parse(HAMT_ROOT)
    get_block = served.node.get_block
    names = list(trustless.directory_entries(hamt_root, get_block(hamt_root), get_block))
    assert len(names) == 1000


async def test_car_of_dag_cbor(served: Served) -> None:
    import_fixture(served.node, "dag-cbor-traversal.car")
    _, body, _ = await get(served, f"/ipfs/{CBOR_ROOT}?format=car")
    assert len(read_car_bytes(body)[1]) == 3
    _, body, _ = await get(served, f"/ipfs/{CBOR_ROOT}?format=car&dag-scope=entity")
    assert [str(cid) for cid, _ in read_car_bytes(body)[1]] == [CBOR_ROOT]  # entity of non-UnixFS = block
    status, _, _ = await get(served, f"/ipfs/{CBOR_ROOT}", {"Accept": "text/html"})
    assert status == 406


async def test_a_missing_child_cuts_the_car_stream(served: Served) -> None:
    import_fixture(served.node, "file-3k-and-3-blocks-missing-block.car")
    with pytest.raises(aiohttp.ClientPayloadError):
        await get(served, f"/ipfs/{MISSING_LEAF_ROOT}?format=car")
    # what came before the gap is still served where it is whole
    status, body, _ = await get(served, f"/ipfs/{MISSING_LEAF_ROOT}?format=car&entity-bytes=0:1023")
    assert status == 200 and len(read_car_bytes(body)[1]) == 2


async def test_a_large_car_streams_in_order(served: Served) -> None:
    data = random_bytes(3_000_000, seed="large")
    root = store_bytes(served.node, data, replace(SMALL_V1, chunk_size=4096, file_max_links=64))
    async with served.session.get(f"{served.url}/ipfs/{root}?format=car") as response:
        assert response.status == 200 and "Content-Length" not in response.headers
        body = await response.read()
    _, blocks = read_car_bytes(body)
    held = dict(blocks)
    assert b"".join(unixfs.read_file(root, lambda c: held[c])) == data
    assert [cid for cid, _ in blocks] == walk_order(served.node, root)


# --- files for browsers ------------------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n" + random_bytes(5000, "png")


async def test_browser_gets_the_file_with_its_type(served: Served) -> None:
    root = store_bytes(served.node, PNG)
    status, body, headers = await get(served, f"/ipfs/{root}", {"Accept": "text/html,*/*;q=0.8"})
    assert status == 200 and body == PNG
    assert headers["Content-Type"] == "image/png"
    assert headers["Content-Length"] == str(len(PNG))
    assert headers["Etag"] == f'"{root}"'
    assert headers["Cache-Control"] == IMMUTABLE
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["X-Ipfs-Roots"] == str(root)
    assert "Content-Security-Policy" not in headers and "Content-Disposition" not in headers


async def test_browser_head_of_a_file(served: Served) -> None:
    root = store_bytes(served.node, PNG)
    status, body, headers = await get(served, f"/ipfs/{root}", method="HEAD")
    assert status == 200 and body == b""
    assert headers["Content-Type"] == "image/png" and headers["Content-Length"] == str(len(PNG))


async def test_filename_and_download_set_content_disposition(served: Served) -> None:
    root = store_bytes(served.node, PNG)
    _, _, headers = await get(served, f"/ipfs/{root}?filename=work.png")
    assert headers["Content-Disposition"] == 'inline; filename="work.png"'
    _, _, headers = await get(served, f"/ipfs/{root}?filename=%C3%A9t%C3%A9.png&download=true")
    assert headers["Content-Disposition"] == ("attachment; filename=\"_t_.png\"; "
                                              "filename*=UTF-8''%C3%A9t%C3%A9.png")


@pytest.mark.parametrize(("header", "first", "last"), [
    ("bytes=0-99", 0, 99), ("bytes=999-2500", 999, 2500), ("bytes=4000-", 4000, len(PNG) - 1),
    ("bytes=-10", len(PNG) - 10, len(PNG) - 1),
])
async def test_browser_range_requests(served: Served, header: str, first: int, last: int) -> None:
    root = store_bytes(served.node, PNG)
    status, body, headers = await get(served, f"/ipfs/{root}", {"Range": header})
    assert status == 206 and body == PNG[first:last + 1]
    assert headers["Content-Range"] == f"bytes {first}-{last}/{len(PNG)}"
    assert headers["Content-Type"] == "image/png"  # sniffed from the start, not from the range


async def test_browser_range_edge_cases(served: Served) -> None:
    root = store_bytes(served.node, PNG)
    status, _, headers = await get(served, f"/ipfs/{root}", {"Range": f"bytes={len(PNG)}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(PNG)}"
    status, body, _ = await get(served, f"/ipfs/{root}", {"Range": "bytes=0-1,5-6"})
    assert status == 200 and body == PNG  # several ranges: the whole file
    status, body, _ = await get(served, f"/ipfs/{root}", {"Range": "bytes=0-1", "If-Range": '"other"'})
    assert status == 200 and body == PNG


async def test_active_content_is_sandboxed(served: Served) -> None:
    html_page = b"<!DOCTYPE html><script>alert(document.cookie)</script>"
    svg = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"
    folder = store_directory(served.node, {"page.html": html_page, "pic.svg": svg, "page.txt": html_page})
    for name, media in (("page.html", "text/html"), ("pic.svg", "image/svg+xml")):
        _, _, headers = await get(served, f"/ipfs/{folder}/{name}")
        assert headers["Content-Type"].startswith(media)
        assert headers["Content-Security-Policy"] == "sandbox"
        assert headers["X-Content-Type-Options"] == "nosniff"
    _, _, headers = await get(served, f"/ipfs/{folder}/page.txt")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"


async def test_directory_listing_escapes_names(served: Served) -> None:
    evil = '<img src=x onerror="alert(1)">.txt'
    folder = store_directory(served.node, {evil: b"x", "a b.txt": b"y"})
    status, _, headers = await get(served, f"/ipfs/{folder}")
    assert status == 301 and headers["Location"] == f"/ipfs/{folder}/"
    status, body, headers = await get(served, f"/ipfs/{folder}/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert "sandbox" in headers["Content-Security-Policy"]
    page = body.decode()
    assert "<img" not in page and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;.txt" in page
    assert 'href="a%20b.txt"' in page
    status, body, _ = await get(served, f"/ipfs/{folder}/a%20b.txt")
    assert (status, body) == (200, b"y")


async def test_directory_with_index_html_serves_it(served: Served) -> None:
    folder = store_directory(served.node, {"index.html": b"<!DOCTYPE html><p>gallery</p>", "x.png": PNG})
    status, body, headers = await get(served, f"/ipfs/{folder}/")
    assert status == 200 and body == b"<!DOCTYPE html><p>gallery</p>"
    assert headers["Content-Type"].startswith("text/html") and headers["Content-Security-Policy"] == "sandbox"


async def test_browser_reads_through_a_hamt_directory(served: Served) -> None:
    import_fixture(served.node, "single-layer-hamt-with-multi-block-files.car")
    expected = b"".join(unixfs.read_file(cids.parse(MULTIBLOCK), served.node.get_block))
    status, body, headers = await get(served, f"/ipfs/{HAMT_ROOT}/470.txt")
    assert status == 200 and body == expected
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    status, body, _ = await get(served, f"/ipfs/{HAMT_ROOT}/")
    assert status == 200 and body.count(b"<tr>") == 1001  # a header row and 1000 names


async def test_browser_file_verified_across_many_blocks(served: Served) -> None:
    data = random_bytes(50_000, seed="browser")
    root = store_bytes(served.node, data)
    status, body, headers = await get(served, f"/ipfs/{root}")
    assert status == 200 and body == data
    assert headers["Content-Type"] == "application/octet-stream"


async def test_browser_empty_file(served: Served) -> None:
    root = store_bytes(served.node, b"")
    status, body, headers = await get(served, f"/ipfs/{root}")
    assert (status, body) == (200, b"") and headers["Content-Length"] == "0"


async def test_browser_never_gets_a_whole_looking_file_with_a_hole(served: Served) -> None:
    import_fixture(served.node, "file-3k-and-3-blocks-missing-block.car")
    # The gap is in the first batch read, before any header went out: an honest error status.
    status, body, _ = await get(served, f"/ipfs/{MISSING_LEAF_ROOT}")
    assert status == 404 and b"QmSNLTo6Wv9dfroVaw7MFYjLqf9ho7PKrgsjdzYDtv8h1W" in body
    # A gap after the response has started cuts the connection.
    data = random_bytes(6 * 1024 * 1024, seed="gap")
    root = store_bytes(served.node, data, replace(SMALL_V1, chunk_size=256 * 1024, file_max_links=64))
    pieces = trustless.file_pieces(root, served.node.get_block, 0, len(data) - 1)
    last_leaf = [piece.cid for piece in pieces][-1]
    served.node.store.delete(last_leaf)
    with pytest.raises(aiohttp.ClientPayloadError):
        await get(served, f"/ipfs/{root}")


async def test_service_worker_registration_is_refused(served: Served) -> None:
    root = store_bytes(served.node, b"self.addEventListener('fetch', () => {})")
    status, _, _ = await get(served, f"/ipfs/{root}", {"Service-Worker": "script"})
    assert status == 400


async def test_symlink_is_shown_as_its_target(served: Served) -> None:
    import_fixture(served.node, "symlink.car")
    status, body, headers = await get(served, "/ipfs/QmWvY6FaqFMS89YAQ9NAPjVP4WZKA1qbHbicc9HeSKQTgt/bar")
    assert (status, body) == (200, b"foo")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"


def test_blocks_of_a_plan_never_include_identity_cids() -> None:
    identity = cids.Cid(1, cids.RAW, b"\x00\x00")
    plan = trustless.plan_car(identity, [], trustless.Scope(), lambda c: c.digest)
    assert list(trustless.car_blocks(plan, lambda c: c.digest, dups=False)) == []
