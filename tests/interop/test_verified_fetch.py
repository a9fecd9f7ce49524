"""Our gateway as the only source of npm @helia/verified-fetch (1.5.0), held to loopback.

js/verified_fetch.mjs gives createVerifiedFetch our gateway and no delegated routers, so Helia
runs over HTTP only (no libp2p), fetches every block from the in-process daemon with
`?format=raw` and checks it against its CID. It reads a file by CID, a file by a path through
folders, and one block as `application/vnd.ipld.raw`; the bytes must be what we stored. Its
fetch() goes through a guard that refuses any other origin and lists what it asked for, and
the test runs only inside a loopback-only network namespace (scripts/test), so nothing it
starts can reach beyond 127.0.0.1. Elsewhere it skips, except under CI=true, where it fails.

1.5.0 is the newest release that runs here: 2.x and 3.x need node-datachannel built from
source (its install downloads prebuilt binaries from outside the npm registry), and 4.x and
later load undici 8, which needs Node 22 (zstd in zlib); this machine has Node 20.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import pytest

from node import cid as cids
from node.profiles import UNIXFS_V0_2015, UNIXFS_V1_2025, Profile
from tests import netns
from tests.conftest import Served
from tests.interop.oracles import _unavailable
from tests.test_gateway import random_bytes

pytestmark = pytest.mark.interop

JS_DIR: Final = Path(__file__).resolve().parent / "js"
SCRIPT: Final = JS_DIR / "verified_fetch.mjs"
TIMEOUT: Final = 120.0
RAW_BLOCK: Final = "application/vnd.ipld.raw"
# Small chunks and few links per node: a file of a few KB is a tree three levels deep.
PROFILES: Final = {
    "v1-small-chunks": replace(UNIXFS_V1_2025, name="vf-v1", chunk_size=1000, file_max_links=4),
    "v0-small-chunks": replace(UNIXFS_V0_2015, name="vf-v0", chunk_size=1000, file_max_links=4),
}


def require_verified_fetch() -> None:
    """Skip without Node, the npm package or a loopback-only namespace; fail instead under CI=true."""
    if shutil.which("node") is None:
        _unavailable("Node.js (`node`) is not installed")
    if not (JS_DIR / "node_modules" / "@helia" / "verified-fetch").is_dir():
        _unavailable(f"{JS_DIR / 'node_modules' / '@helia' / 'verified-fetch'} is missing (npm ci)")
    problem = netns.why_not_loopback_only()
    if problem is not None:
        _unavailable(problem)


async def verified_fetch(gateway: str, fetches: list[dict[str, Any]]) -> dict[str, Any]:
    """Run js/verified_fetch.mjs, awaited without blocking the loop that serves its requests."""
    process = await asyncio.create_subprocess_exec(
        "node", str(SCRIPT), cwd=JS_DIR, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    request = json.dumps({"gateway": gateway, "fetches": fetches}).encode()
    try:
        out, err = await asyncio.wait_for(process.communicate(request), TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, f"verified_fetch.mjs exited {process.returncode}: {err.decode()[-3000:]}"
    answer: dict[str, Any] = json.loads(out.decode().splitlines()[-1])
    return answer


@pytest.mark.parametrize("profile_key", list(PROFILES))
async def test_verified_fetch_reads_files_folders_and_blocks_from_our_gateway_alone(
        served: Served, tmp_path: Path, profile_key: str) -> None:
    require_verified_fetch()
    profile: Profile = PROFILES[profile_key]
    art = random_bytes(7 * profile.chunk_size + 321, seed=profile.name)
    notes = b"made with a small model, kept forever\n"
    gallery = tmp_path / "gallery"
    (gallery / "sub").mkdir(parents=True)
    (gallery / "sub" / "art.bin").write_bytes(art)
    (gallery / "notes.txt").write_bytes(notes)
    root = served.node.add_tree(gallery, profile).cid
    art_cid = served.node.resolve(f"{root}/sub/art.bin")
    out = tmp_path / "out"
    out.mkdir()

    answer = await verified_fetch(served.url, [
        {"resource": f"ipfs://{art_cid}", "accept": None, "out": str(out / "by-cid")},
        {"resource": f"ipfs://{root}/sub/art.bin", "accept": None, "out": str(out / "by-path")},
        {"resource": f"ipfs://{root}/notes.txt", "accept": None, "out": str(out / "notes")},
        {"resource": f"ipfs://{art_cid}", "accept": RAW_BLOCK, "out": str(out / "block")},
    ])

    assert answer["client"] == "@helia/verified-fetch@1.5.0"
    assert [response["status"] for response in answer["responses"]] == [200, 200, 200, 200]
    assert (out / "by-cid").read_bytes() == art
    assert (out / "by-path").read_bytes() == art
    assert (out / "notes").read_bytes() == notes
    block = (out / "block").read_bytes()
    assert answer["responses"][3]["content_type"] == RAW_BLOCK
    assert block == served.node.get_block(art_cid)
    assert cids.cid_of(block, art_cid.codec, art_cid.version) == art_cid
    # Every request went to our gateway, one trustless block fetch each.
    requested = answer["requested"]
    assert requested, "verified-fetch fetched nothing over HTTP"
    assert all(url.startswith(f"{served.url}/ipfs/") and url.endswith("?format=raw") for url in requested), \
        requested
    fetched = {cids.parse(url.removeprefix(f"{served.url}/ipfs/").removesuffix("?format=raw"))
               for url in requested}
    assert art_cid in fetched and root in fetched
