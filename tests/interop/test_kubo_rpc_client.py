"""artkeep's Kubo RPC subset driven by the real npm kubo-rpc-client (7.1.0), over loopback.

js/kubo_rpc_client.mjs runs under Node against the in-process server with the API token in its
headers: dag.import of two CARs in one request, block.put/get/stat, pin.add/ls/rm, id, version.
This test checks what the client made of our answers. Skipped when Node or the npm packages are
missing, except under CI=true, where that fails: interop must never vanish silently.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any, Final

import pytest

from node import cid as cids
from node import dagpb, signing
from tests.conftest import Served
from tests.test_kubo_rpc import dag_car

pytestmark = [pytest.mark.interop]

JS_DIR: Final = Path(__file__).resolve().parent / "js"
SCRIPT: Final = JS_DIR / "kubo_rpc_client.mjs"
TIMEOUT: Final = 120.0


def _require_client() -> None:
    problem = None
    if shutil.which("node") is None:
        problem = "Node.js (`node`) is not installed"
    elif not (JS_DIR / "node_modules" / "kubo-rpc-client").is_dir():
        problem = f"{JS_DIR / 'node_modules' / 'kubo-rpc-client'} is missing (npm ci)"
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{problem} (CI=true: interop tests must run, see scripts/interop-setup)")
    pytest.skip(f"{problem}; run scripts/interop-setup")


async def run_client(request: dict[str, Any]) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        "node", str(SCRIPT), cwd=JS_DIR, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(json.dumps(request).encode()), TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, f"kubo_rpc_client.mjs exited {process.returncode}: {err.decode()[-3000:]}"
    answer = json.loads(out)
    assert isinstance(answer, dict)
    return answer


async def test_kubo_rpc_client_imports_puts_pins_and_reads_back(served: Served, tmp_path: Path) -> None:
    _require_client()
    first_root, first_car, _ = dag_car([b"first leaf", b"second leaf"])
    second_root, second_car, second_leaves = dag_car([b"another leaf"])
    (tmp_path / "a.car").write_bytes(first_car)
    (tmp_path / "b.car").write_bytes(second_car)
    block = b"block put by kubo-rpc-client\n"
    dag_pb = dagpb.encode(dagpb.PBNode(data=b"\x08\x01"))
    absent = cids.cid_of(b"never stored", cids.RAW)

    answer = await run_client({
        "url": served.url, "token": served.token, "cars": [str(tmp_path / "a.car"), str(tmp_path / "b.car")],
        "block_hex": block.hex(), "dag_pb_hex": dag_pb.hex(), "absent": str(absent)})

    assert answer["client"] == "kubo-rpc-client@7.1.0"
    assert answer["imported"] == [{"cid": str(first_root), "pinErrorMsg": ""},
                                  {"cid": str(second_root), "pinErrorMsg": ""}]
    assert {pin.cid for pin in served.node.pins()} == {str(first_root), str(second_root)}

    put = str(cids.cid_of(block, cids.RAW))  # Kubo's default: CIDv1 raw sha2-256
    assert answer["put"] == put
    assert answer["put_dag_pb"] == str(cids.cid_of(dag_pb, cids.DAG_PB))
    assert bytes.fromhex(answer["got_hex"]) == block
    assert answer["stat"] == {"cid": put, "size": len(block)}

    assert answer["pinned"] == put
    listed = {(entry["cid"], entry["type"]) for entry in answer["listed"]}
    assert {(put, "recursive"), (str(first_root), "recursive"), (str(second_root), "recursive"),
            (str(second_leaves[0]), "indirect")} <= listed
    assert answer["listed_one"] == [{"type": "recursive", "cid": put, "name": None}]
    assert answer["removed"] == put
    assert {entry["cid"] for entry in answer["listed_after"]} == {str(first_root), str(second_root)}
    assert served.node.get_pin(cids.parse(put)) is None

    public = served.node.public_key()
    assert answer["id"]["id"] == signing.peer_id(public)
    assert answer["id"]["agentVersion"].startswith("artkeep/")
    assert answer["id"]["addresses"] == []
    assert answer["version"]["version"]
    assert f"could not find {absent}" in answer["absent_error"]
