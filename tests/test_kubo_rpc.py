"""The Kubo RPC subset (/api/v0) as a client sees it: real requests against a loopback server.

Shapes, content types and status codes follow Kubo's go-ipfs-cmds: POST only, command errors as
500 {"Message","Code","Type":"error"}, bad calls as 400 text, unknown commands 404, no token 403.
Every refused upload must leave the store exactly as it was.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import FormData

from node import car, dagcbor, dagpb, signing
from node import cid as cids
from node.blockstore import MAX_BLOCK_SIZE
from node.cid import Cid
from tests.conftest import IPFS_FIXTURES, Served

CARS = IPFS_FIXTURES / "car"
# context.TOKEN is a plain str request key, which aiohttp 3.14 warns about (and warnings are errors
# here). Until context.py uses web.RequestKey, let authorized requests through the warning.
DIR_WITH_FILES = "bafybeihchr7vmgjaasntayyatmp5sv6xza57iy2h4xj7g46bpjij6yhrmy"
MISSING_BLOCK_ROOT = "QmYhmPjhFjYFyaoiuNzYv8WGavpSRDwdHWe5B4M5du5Rtk"


class Answer:
    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status = status
        self.body = body
        self.headers = headers

    @property
    def json(self) -> object:
        return json.loads(self.body)

    @property
    def lines(self) -> list[object]:
        return [json.loads(line) for line in self.body.splitlines() if line.strip()]

    def __repr__(self) -> str:
        return f"Answer({self.status}, {self.body[:500]!r})"


async def rpc(served: Served, command: str, params: list[tuple[str, str]] | None = None, *,
              data: object = None, method: str = "POST", headers: dict[str, str] | None = None) -> Answer:
    """One call, as `curl -X POST -H 'Authorization: Bearer …' http://…/api/v0/<command>?…` makes it."""
    if isinstance(data, bytes):
        data = io.BytesIO(data)
    async with served.session.request(method, f"{served.url}/api/v0/{command}", params=params or [],
                                      data=data, headers=served.auth if headers is None else headers) as resp:
        return Answer(resp.status, await resp.read(), dict(resp.headers))


def files(*parts: bytes, name: str = "upload.car") -> FormData:
    form = FormData()
    for part in parts:
        # BytesIO: aiohttp warns about (and these tests refuse) big raw bytes bodies
        form.add_field("file", io.BytesIO(part), filename=name, content_type="application/octet-stream")
    return form


def assert_kubo_error(answer: Answer, status: int, fragment: str) -> None:
    assert answer.status == status, answer
    assert answer.headers["Content-Type"] == "application/json"
    error = answer.json
    assert isinstance(error, dict) and set(error) == {"Message", "Code", "Type"}, error
    assert error["Type"] == "error" and error["Code"] == (0 if status == 500 else 1)
    assert fragment in error["Message"], error


def snapshot(served: Served) -> tuple[list[str], list[str]]:
    """Every file under the blockstore and every pin: what a refused upload must not change."""
    root = served.node.store.root
    stored = sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())
    return stored, sorted(pin.cid for pin in served.node.pins())


def dag_car(blocks: list[bytes], roots: list[Cid] | None = None) -> tuple[Cid, bytes, list[Cid]]:
    """A DAG-CBOR root linking raw leaves, as a CAR: (root, CAR bytes, leaf CIDs)."""
    leaves = [cids.cid_of(block, cids.RAW) for block in blocks]
    root_block = dagcbor.encode({"leaves": list(leaves)})
    root = cids.cid_of(root_block, cids.DAG_CBOR)
    out = bytearray()
    writer = car.CarWriter(out.extend, roots or [root])
    writer.add(root, root_block)
    for cid, block in zip(leaves, blocks, strict=True):
        writer.add(cid, block)
    return root, bytes(out), leaves


# --- dag/import

async def test_dag_import_pins_the_roots_and_answers_like_kubo(served: Served) -> None:
    answer = await rpc(served, "dag/import", [("stats", "true")],
                       data=files((CARS / "dir-with-files.car").read_bytes()))
    assert answer.status == 200, answer
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.headers["X-Chunked-Output"] == "1"
    assert answer.lines == [
        {"Root": {"Cid": {"/": DIR_WITH_FILES}, "PinErrorMsg": ""}},
        {"Stats": {"BlockCount": 9, "BlockBytesCount": answer.lines[1]["Stats"]["BlockBytesCount"]}},  # type: ignore[index]
    ]
    assert answer.lines[1]["Stats"]["BlockBytesCount"] > 0  # type: ignore[index]
    pin = served.node.get_pin(cids.parse(DIR_WITH_FILES))
    assert pin is not None and pin.name == "upload.car"


async def test_dag_import_takes_a_carv2(served: Served) -> None:
    with (CARS / "carv2-basic.car").open("rb") as stream:
        roots = [str(root) for root in car.read_car(stream).roots]
    answer = await rpc(served, "dag/import", data=files((CARS / "carv2-basic.car").read_bytes()))
    assert answer.status == 200, answer
    assert [line["Root"]["Cid"]["/"] for line in answer.lines] == roots  # type: ignore[index]
    assert all(line["Root"]["PinErrorMsg"] == "" for line in answer.lines)  # type: ignore[index]
    assert sorted(pin.cid for pin in served.node.pins()) == sorted(roots)


async def test_dag_import_without_pin_roots_stores_but_pins_nothing(served: Served) -> None:
    answer = await rpc(served, "dag/import", [("pin-roots", "false")],
                       data=files((CARS / "dir-with-files.car").read_bytes()))
    assert answer.status == 200 and answer.lines == [], answer
    assert served.node.has_block(cids.parse(DIR_WITH_FILES))
    assert served.node.pins() == []


async def test_an_incomplete_root_is_reported_in_pin_error_msg_and_not_pinned(served: Served) -> None:
    answer = await rpc(served, "dag/import",
                       data=files((CARS / "file-3k-and-3-blocks-missing-block.car").read_bytes()))
    assert answer.status == 200, answer
    [line] = answer.lines
    assert line["Root"]["Cid"] == {"/": MISSING_BLOCK_ROOT}  # type: ignore[index]
    assert "block was not found locally (offline): ipld: could not find" in line["Root"]["PinErrorMsg"]  # type: ignore[index]
    assert served.node.pins() == []
    assert served.node.has_block(cids.parse(MISSING_BLOCK_ROOT))


async def test_a_root_completed_by_a_later_car_of_the_same_upload_is_pinned(served: Served) -> None:
    root, whole, leaves = dag_car([b"first leaf", b"second leaf"])
    without_last = whole[:-(len(b"second leaf") + len(bytes(leaves[1])) + 1)]
    last_only = bytearray()
    car.CarWriter(last_only.extend, [leaves[1]]).add(leaves[1], b"second leaf")
    answer = await rpc(served, "dag/import", data=files(without_last, bytes(last_only)))
    assert answer.status == 200, answer
    assert answer.lines == [{"Root": {"Cid": {"/": str(root)}, "PinErrorMsg": ""}},
                            {"Root": {"Cid": {"/": str(leaves[1])}, "PinErrorMsg": ""}}]
    assert {pin.cid for pin in served.node.pins()} == {str(root), str(leaves[1])}


async def test_a_car_with_one_bad_block_is_refused_whole(served: Served) -> None:
    _, good, _ = dag_car([b"a good leaf"])
    _, bad, _ = dag_car([b"leaf one", b"leaf two, soon damaged"])
    bad = bad[:-1] + bytes([bad[-1] ^ 1])
    before = snapshot(served)
    answer = await rpc(served, "dag/import", data=files(good, bad))
    assert_kubo_error(answer, 500, "does not match its CID")
    assert snapshot(served) == before


def multipart(body: bytes, boundary: str = "xyzzy") -> tuple[bytes, dict[str, str]]:
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.car\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head + body + f"\r\n--{boundary}--\r\n".encode(), {
        "Content-Type": f"multipart/form-data; boundary={boundary}"}


@pytest.mark.parametrize(("case", "status", "fragment"), [
    ("not multipart", 400, "file argument 'path' is required"),
    ("no boundary", 400, "malformed multipart body"),
    ("garbage multipart", 500, "malformed multipart body"),
    ("garbage car", 500, "the header at byte 0"),
    ("truncated car", 500, "truncated CAR"),
    ("truncated multipart", 500, "truncated CAR"),
    ("no parts", 400, "file argument 'path' is required"),
    ("directory part", 500, "expected a file handle"),
    ("block over 2 MiB", 500, "limit"),
])
async def test_bad_upload_bodies_leave_the_store_untouched(served: Served, case: str, status: int,
                                                         fragment: str) -> None:
    _, whole, _ = dag_car([b"x" * 5000, b"y" * 5000])
    headers = dict(served.auth)
    if case == "not multipart":
        body, headers["Content-Type"] = whole, "application/octet-stream"
    elif case == "no boundary":
        body, headers["Content-Type"] = whole, "multipart/form-data"
    elif case == "garbage multipart":
        body, headers["Content-Type"] = b"\x00garbage\r\n" * 100, "multipart/form-data; boundary=xyzzy"
    elif case == "garbage car":
        body, extra = multipart(b"\x00garbage" * 100)
        headers.update(extra)
    elif case == "truncated car":
        body, extra = multipart(whole[:-100])
        headers.update(extra)
    elif case == "truncated multipart":
        body, extra = multipart(whole)
        body = body[:len(body) // 2]
        headers.update(extra)
    elif case == "no parts":
        body, headers["Content-Type"] = b"--xyzzy--\r\n", "multipart/form-data; boundary=xyzzy"
    elif case == "directory part":
        body = (b"--xyzzy\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d\"\r\n"
                b"Content-Type: application/x-directory\r\n\r\n\r\n--xyzzy--\r\n")
        headers["Content-Type"] = "multipart/form-data; boundary=xyzzy"
    else:
        big = b"z" * (MAX_BLOCK_SIZE + 1)
        _, over, _ = dag_car([big])
        body, extra = multipart(over)
        headers.update(extra)
    before = snapshot(served)
    answer = await rpc(served, "dag/import", data=body, headers=headers)
    if status == 400:
        assert answer.status == 400 and fragment in answer.body.decode(), answer
        assert answer.headers["Content-Type"].startswith("text/plain")
    else:
        assert_kubo_error(answer, status, fragment)
    assert snapshot(served) == before


async def test_an_upload_over_the_limit_is_refused_and_nothing_is_kept(serve_app) -> None:  # type: ignore[no-untyped-def]
    served: Served = await serve_app(serve_max_upload_bytes=20_000)
    _, whole, _ = dag_car([b"x" * 15_000, b"y" * 15_000])
    before = snapshot(served)
    answer = await rpc(served, "dag/import", data=files(whole))  # declared length over the limit
    assert_kubo_error(answer, 413, "limit")

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the limit applies as bytes arrive
        body, _ = multipart(whole)
        for start in range(0, len(body), 4096):
            yield body[start:start + 4096]

    answer = await rpc(served, "dag/import", data=chunked(),
                       headers={**served.auth, "Content-Type": "multipart/form-data; boundary=xyzzy"})
    assert_kubo_error(answer, 413, "limit")
    assert snapshot(served) == before


async def test_a_stalled_upload_is_dropped_and_nothing_is_kept(serve_app) -> None:  # type: ignore[no-untyped-def]
    served: Served = await serve_app(serve_upload_timeout=0.5)
    _, whole, _ = dag_car([b"x" * 5000, b"y" * 5000])
    body, headers = multipart(whole)
    release = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield body[:len(body) // 2]
        await release.wait()  # the client goes quiet
        yield body[len(body) // 2:]

    before = snapshot(served)
    try:
        answer = await asyncio.wait_for(rpc(served, "dag/import", data=stalls(),
                                            headers={**served.auth, **headers}), 10)
    finally:
        release.set()
    assert_kubo_error(answer, 408, "no data for 0.5 s")
    assert snapshot(served) == before


# --- block/put, block/get, block/stat

async def test_block_put_get_and_stat_round_trip_with_kubo_cids(served: Served) -> None:
    data = b"a raw block\n"
    put = await rpc(served, "block/put", data=files(data, name="blob"))
    assert put.status == 200 and put.headers["X-Chunked-Output"] == "1", put
    key = str(cids.cid_of(data, cids.RAW))  # Kubo's default: CIDv1, raw, sha2-256
    assert put.lines == [{"Key": key, "Size": len(data)}]

    got = await rpc(served, "block/get", [("arg", key)])
    assert got.status == 200 and got.body == data
    assert got.headers["Content-Type"] == "text/plain" and got.headers["X-Stream-Output"] == "1"

    stat = await rpc(served, "block/stat", [("arg", f"/ipfs/{key}")])
    assert stat.status == 200 and stat.json == {"Key": key, "Size": len(data)}
    assert "X-Chunked-Output" not in stat.headers
    assert served.node.pins() == []  # pin defaults to false


async def test_block_put_honours_codec_format_hash_and_pin(served: Served) -> None:
    node = dagpb.encode(dagpb.PBNode(data=b"\x08\x01"))
    v0 = await rpc(served, "block/put", [("format", "v0")], data=files(node))
    assert v0.lines == [{"Key": str(cids.cid_of(node, cids.DAG_PB, version=0)), "Size": len(node)}], v0
    assert v0.lines[0]["Key"].startswith("Qm")  # type: ignore[index]

    cbor = dagcbor.encode({"hello": "world"})
    pinned = await rpc(served, "block/put", [("cid-codec", "dag-cbor"), ("mhtype", "sha2-512"),
                                             ("pin", "true")], data=files(cbor))
    key = pinned.lines[0]["Key"]  # type: ignore[index]
    parsed = cids.parse(key)
    assert (parsed.version, parsed.codec, parsed.hash_code) == (1, cids.DAG_CBOR, cids.SHA2_512)
    assert served.node.get_pin(parsed) is not None

    both = await rpc(served, "block/put", [("format", "v0"), ("cid-codec", "dag-cbor")], data=files(cbor))
    assert_kubo_error(both, 500, 'unable to use "format" (deprecated) and a custom "cid-codec"')
    unknown_hash = await rpc(served, "block/put", [("mhtype", "md5")], data=files(cbor))
    assert_kubo_error(unknown_hash, 500, "unrecognized multihash function: md5")


@pytest.mark.parametrize(("params", "block", "fragment"), [
    ([], b"b" * (MAX_BLOCK_SIZE + 1), "produced block is over 2MiB"),
    ([("cid-codec", "dag-pb")], b"\xff\xffnot dag-pb", "dag-pb"),
    ([("cid-codec", "dag-json")], b"{}", "artkeep stores only"),
])
async def test_block_put_refuses_what_it_cannot_keep_and_stores_nothing(
        served: Served, params: list[tuple[str, str]], block: bytes, fragment: str) -> None:
    before = snapshot(served)
    assert_kubo_error(await rpc(served, "block/put", params, data=files(block)), 500, fragment)
    assert snapshot(served) == before


async def test_block_commands_answer_kubo_errors(served: Served) -> None:
    absent = str(cids.cid_of(b"never stored", cids.RAW))
    for command in ("block/get", "block/stat"):
        assert_kubo_error(await rpc(served, command, [("arg", absent)]), 500,
                          f"block was not found locally (offline): ipld: could not find {absent}")
        assert_kubo_error(await rpc(served, command, [("arg", "bafy-not-a-cid")]), 500, "not a CID")
        missing = await rpc(served, command)
        assert missing.status == 400 and missing.body == b'argument "cid" is required\n', missing
        assert missing.headers["Content-Type"] == "text/plain; charset=utf-8"
        two = await rpc(served, command, [("arg", absent), ("arg", absent)])
        assert two.status == 400 and b"expected 1 argument(s), got 2" in two.body


# --- pin/add, pin/ls, pin/rm

async def test_pins_are_added_listed_and_removed_like_kubo(served: Served) -> None:
    root, whole, leaves = dag_car([b"leaf a", b"leaf b"])
    await rpc(served, "dag/import", [("pin-roots", "false")], data=files(whole))
    added = await rpc(served, "pin/add", [("arg", str(root)), ("name", "my work")])
    assert added.status == 200 and added.json == {"Pins": [str(root)]}, added
    pin = served.node.get_pin(root)
    assert pin is not None and pin.name == "my work"

    listed = await rpc(served, "pin/ls", [("type", "recursive")])
    assert listed.json == {"Keys": {str(root): {"Type": "recursive", "Name": ""}}}, listed
    named = await rpc(served, "pin/ls", [("type", "recursive"), ("names", "true")])
    assert named.json == {"Keys": {str(root): {"Type": "recursive", "Name": "my work"}}}
    everything = await rpc(served, "pin/ls")
    assert everything.json == {"Keys": {str(root): {"Type": "recursive", "Name": ""},
                                        **{str(leaf): {"Type": "indirect", "Name": ""} for leaf in leaves}}}
    streamed = await rpc(served, "pin/ls", [("stream", "true"), ("type", "recursive")])
    assert streamed.headers["X-Chunked-Output"] == "1"
    assert streamed.lines == [{"Cid": str(root), "Type": "recursive"}]
    one = await rpc(served, "pin/ls", [("arg", str(leaves[0]))])
    assert one.json == {"Keys": {str(leaves[0]): {"Type": f"indirect through {root}", "Name": ""}}}
    assert (await rpc(served, "pin/ls", [("type", "direct")])).json == {}

    removed = await rpc(served, "pin/rm", [("arg", str(root))])
    assert removed.status == 200 and removed.json == {"Pins": [str(root)]}
    assert served.node.pins() == []
    assert_kubo_error(await rpc(served, "pin/rm", [("arg", str(root))]), 500, "is not pinned")
    assert_kubo_error(await rpc(served, "pin/ls", [("arg", str(root))]), 500,
                      f"path '/ipfs/{root}' is not pinned")
    assert_kubo_error(await rpc(served, "pin/ls", [("type", "sideways")]), 500, "invalid type 'sideways'")


async def test_pin_add_pins_only_what_is_complete_here_and_never_fetches(served: Served) -> None:
    root, _, leaves = dag_car([b"present", b"absent"])
    partial = bytearray()
    writer = car.CarWriter(partial.extend, [root])
    writer.add(root, served_block := dagcbor.encode({"leaves": list(leaves)}))
    writer.add(leaves[0], b"present")
    assert cids.cid_of(served_block, cids.DAG_CBOR) == root
    await rpc(served, "dag/import", [("pin-roots", "false")], data=files(bytes(partial)))
    answer = await rpc(served, "pin/add", [("arg", str(root))])
    assert_kubo_error(answer, 500, str(leaves[1]))
    assert served.node.pins() == []
    never_seen = str(cids.cid_of(b"nowhere", cids.RAW))
    assert_kubo_error(await rpc(served, "pin/add", [("arg", never_seen)]), 500, never_seen)
    refused = await rpc(served, "pin/add", [("arg", str(leaves[0])), ("recursive", "false")])
    assert refused.status == 400 and b"direct pins" in refused.body


# --- id, version

async def test_id_names_the_node_by_its_ed25519_key(served: Served) -> None:
    answer = await rpc(served, "id")
    assert answer.status == 200, answer
    identity = answer.json
    assert isinstance(identity, dict)
    assert set(identity) == {"ID", "PublicKey", "Addresses", "AgentVersion", "Protocols"}
    public = served.node.public_key()
    assert identity["ID"] == signing.peer_id(public) and identity["ID"].startswith("12D3KooW")
    assert base64.b64decode(identity["PublicKey"]) == b"\x08\x01\x12\x20" + public
    assert identity["AgentVersion"].startswith("artkeep/")
    assert (await rpc(served, "id")).json == identity  # stable
    assert_kubo_error(await rpc(served, "id", [("arg", "12D3KooWSomeoneElse")]), 500, "no libp2p routing")


async def test_version_answers_kubos_fields_with_artkeeps_version(served: Served) -> None:
    from node import __version__

    answer = await rpc(served, "version")
    assert answer.status == 200
    assert answer.json == {"Version": __version__, "Commit": "", "Repo": "",
                           "System": answer.json["System"], "Golang": answer.json["Golang"]}  # type: ignore[index]


# --- the protocol: auth, methods, unknown commands, option syntax

COMMANDS = ["dag/import", "block/put", "block/get", "block/stat", "pin/add", "pin/ls", "pin/rm", "id",
            "version", "no/such/command"]


@pytest.mark.parametrize("command", COMMANDS)
async def test_every_command_needs_a_valid_token(served: Served, command: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic !!!"},
                    {"Authorization": "Basic " + base64.b64encode(b"user:wrong").decode()}):
        answer = await rpc(served, command, headers=headers)
        assert answer.status == 403, (headers, answer)
        assert answer.body.startswith(b"Kubo RPC Access Denied: ")
    assert served.node.pins() == []


async def test_basic_auth_with_the_token_as_password_is_accepted(served: Served) -> None:
    basic = base64.b64encode(f"anyone:{served.token}".encode()).decode()
    answer = await rpc(served, "version", headers={"Authorization": f"Basic {basic}"})
    assert answer.status == 200, answer


async def test_only_post_is_allowed_and_unknown_commands_are_404(served: Served) -> None:
    got = await rpc(served, "version", method="GET")
    assert got.status == 405 and got.body == b"405 - Method Not Allowed\n"
    assert got.headers["Allow"] == "OPTIONS, POST"
    assert (await rpc(served, "version", method="OPTIONS")).status == 204
    unknown = await rpc(served, "no/such/command")
    assert unknown.status == 404 and unknown.body == b"404 page not found\n"


async def test_bad_option_values_are_400_like_go_ipfs_cmds(served: Served) -> None:
    answer = await rpc(served, "dag/import", [("pin-roots", "maybe")], data=files(b""))
    assert answer.status == 400, answer
    assert answer.body == b'could not convert value "maybe" to type "bool" (for option "-pin-roots")\n'
    twice = await rpc(served, "pin/ls", [("type", "all"), ("type", "recursive")])
    assert twice.status == 400 and b"expected key type to have only a single value" in twice.body


def test_fixture_roots_are_what_the_tests_expect() -> None:
    with (CARS / "dir-with-files.car").open("rb") as stream:
        assert [str(root) for root in car.read_car(stream).roots] == [DIR_WITH_FILES]
    with (CARS / "file-3k-and-3-blocks-missing-block.car").open("rb") as stream:
        assert [str(root) for root in car.read_car(stream).roots] == [MISSING_BLOCK_ROOT]
