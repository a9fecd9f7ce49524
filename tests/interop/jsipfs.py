"""js-ipfs 0.66 as a real, independent IPFS node for interop tests: one offline daemon per use.

`start_jsipfs(folder)` makes a fresh, empty repo in `folder` and starts js-ipfs's own daemon
(npm `ipfs` 0.66.1 / `ipfs-daemon` 0.16.1, through tests/interop/jsipfs/daemon.mjs) with its
RPC API and gateway on free 127.0.0.1 ports; it waits until `/api/v0/id` answers, and on the
way out stops it with SIGTERM (its clean shutdown), killing its whole process group if that
does not end it in time, or at once when the test failed. It starts only when this process is
held to loopback (tests/netns.py), as under scripts/test; otherwise the test skips, except
under CI=true, where it fails: interop must never vanish silently.

The node is offline: daemon.mjs never starts libp2p or bitswap (`jsipfs daemon --offline` would
start them: in 0.66 the flag only reaches IPNS), so it cannot dial anything, and a block it
lacks is an error at once (`block/get` on the CLI's daemon would wait for peers forever). Its
config also leaves nothing to dial if it ever did start: no bootstrap peers, no swarm
listeners, no delegates, MDNS, WebRTC-star and NAT port mapping off, Routing "none".
Its quirks, which the helpers below absorb:
- Its dependencies call `Promise.withResolvers`, absent from Node 20: with-resolvers.cjs is
  loaded through NODE_OPTIONS=--require.
- Its RPC prints CIDv1 in base58btc (`z…`). `cid-base=base32` would fix that, but makes any
  answer holding a CIDv0 fail (HTTP 500 "Cannot string encode V0 in base32 encoding"), so the
  helpers ask for nothing and print every CID they return as Kubo and artkeep do (node.cid).
- `block/put` takes `format=raw`, not `cid-codec=raw`.
- Its gateway ignores `?format=raw|car`: read blocks back through `/api/v0/block/get`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn

import aiohttp
import pytest

from node import cid as cids
from tests import netns

JSIPFS_DIR: Final = Path(__file__).resolve().parent / "jsipfs"
DAEMON: Final = JSIPFS_DIR / "daemon.mjs"
WITH_RESOLVERS: Final = JSIPFS_DIR / "with-resolvers.cjs"
JSIPFS_VERSION: Final = "0.66.1"

START_TIMEOUT: Final = 90.0
STOP_TIMEOUT: Final = 15.0
CALL_TIMEOUT: Final = 60.0
POLL_INTERVAL: Final = 0.1

# Merged over js-ipfs's defaults when the repo is made; lists replace the defaults.
CONFIG: Final[Mapping[str, Any]] = {
    "Addresses": {
        "Swarm": [],
        "Announce": [],
        "NoAnnounce": [],
        "API": "/ip4/127.0.0.1/tcp/0",
        "Gateway": "/ip4/127.0.0.1/tcp/0",
        "RPC": "",  # no gRPC server
        "Delegates": [],
    },
    "Bootstrap": [],
    "Discovery": {"MDNS": {"Enabled": False}, "webRTCStar": {"Enabled": False}},
    "Routing": {"Type": "none"},
    "Pubsub": {"Enabled": False},
    "Swarm": {"DisableNatPortMap": True},
}


class JsIpfsError(AssertionError):
    """js-ipfs did not start, stop or answer as it should; the message says what it did instead."""


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"js-ipfs unavailable: {reason} (CI=true: interop tests must run)")
    pytest.skip(f"js-ipfs unavailable: {reason}")


def why_unavailable() -> str | None:
    """Why js-ipfs cannot be started here, or None if it can."""
    if shutil.which("node") is None:
        return "Node.js (`node`) is not installed"
    if not (JSIPFS_DIR / "node_modules" / "ipfs-daemon").is_dir():
        return f"{JSIPFS_DIR / 'node_modules'} is missing: run scripts/interop-setup"
    return netns.why_not_loopback_only()


def kubo_form(text: str) -> str:
    """A CID as Kubo prints it: CIDv0 in base58btc, CIDv1 in base32."""
    return str(cids.parse(text))


class JsIpfs:
    """A running js-ipfs daemon: its URLs, and the RPC calls the tests need (CIDs printed as Kubo does)."""

    def __init__(self, api_url: str, gateway_url: str, repo: Path, session: aiohttp.ClientSession,
                 start_seconds: float) -> None:
        self.api_url = api_url
        self.gateway_url = gateway_url
        self.repo = repo
        self.start_seconds = start_seconds
        self._session = session

    async def rpc(self, command: str, params: Sequence[tuple[str, str]] = (),
                  files: Sequence[tuple[str, bytes]] = ()) -> bytes:
        """POST /api/v0/COMMAND; each of `files` is one multipart file part. Any non-200 is an error."""
        data: aiohttp.FormData | None = None
        if files:
            data = aiohttp.FormData()
            for name, content in files:
                # A stream, not bytes: aiohttp warns (an error under pytest) on a raw body over 1 MiB.
                data.add_field("file", io.BytesIO(content), filename=name,
                               content_type="application/octet-stream")
        async with self._session.post(f"{self.api_url}/api/v0/{command}", params=list(params), data=data,
                                      timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT)) as response:
            body = await response.read()
            if response.status != 200:
                raise JsIpfsError(f"js-ipfs {command} {params}: HTTP {response.status}: {body[:2000]!r}")
            return body

    async def rpc_lines(self, command: str, params: Sequence[tuple[str, str]] = (),
                        files: Sequence[tuple[str, bytes]] = ()) -> list[dict[str, Any]]:
        """A command's answer as JSON objects, one per line (one line for non-streaming commands)."""
        body = await self.rpc(command, params, files)
        return [json.loads(line) for line in body.decode().splitlines() if line.strip()]

    async def block_get(self, cid: str) -> bytes:
        """The block's bytes as js-ipfs stores them; JsIpfsError (HTTP 500) when it has none."""
        return await self.rpc("block/get", [("arg", cid)])

    async def pin_ls(self, pin_type: str = "recursive") -> set[str]:
        """CIDs pinned with `pin_type` (recursive, direct, indirect or all)."""
        (answer,) = await self.rpc_lines("pin/ls", [("type", pin_type)])
        return {kubo_form(key) for key in answer["Keys"]}

    async def dag_import(self, car: bytes, name: str = "import.car") -> dict[str, str]:
        """Import one CAR, pinning its roots (js-ipfs's default): each root's pin error, "" if pinned."""
        lines = await self.rpc_lines("dag/import", files=[(name, car)])
        return {kubo_form(line["Root"]["Cid"]["/"]): line["Root"]["PinErrorMsg"] for line in lines}

    async def add(self, content: bytes, name: str, options: Sequence[tuple[str, str]] = ()) -> str:
        """`ipfs add` one file with these options; the root CID."""
        lines = await self.rpc_lines("add", options, files=[(name, content)])
        return kubo_form(lines[-1]["Hash"])


def _environment() -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("IPFS_", "NODE_", "DEBUG"))}
    environment["NODE_OPTIONS"] = f"--require={WITH_RESOLVERS}"
    return environment


def _kill_group(process: asyncio.subprocess.Process) -> None:
    # The daemon leads its own session (start_new_session), so this reaches anything it started.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


async def _wait_until_listening(process: asyncio.subprocess.Process, log: Path,
                                deadline: float) -> dict[str, str]:
    """The line daemon.mjs prints once both servers listen: {"api", "gateway", "version"}."""
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), max(deadline - time.monotonic(), 0))
    except TimeoutError:
        raise JsIpfsError(f"js-ipfs not listening after {START_TIMEOUT:.0f} s: "
                          f"{log.read_text(errors='replace')[-3000:]}") from None
    if not line:
        code = await process.wait()
        raise JsIpfsError(f"js-ipfs exited {code} before listening: "
                          f"{log.read_text(errors='replace')[-3000:]}")
    listening: dict[str, str] = json.loads(line)
    if listening["version"] != JSIPFS_VERSION:
        raise JsIpfsError(f"tests/interop/jsipfs holds js-ipfs {listening['version']}, not {JSIPFS_VERSION}")
    return listening


async def _wait_until_answering(session: aiohttp.ClientSession, api_url: str, deadline: float) -> None:
    while True:
        try:
            async with session.post(f"{api_url}/api/v0/id") as response:
                if response.status == 200:
                    return
                problem = f"HTTP {response.status}"
        except aiohttp.ClientError as error:
            problem = str(error)
        if time.monotonic() > deadline:
            raise JsIpfsError(f"{api_url}/api/v0/id does not answer: {problem}")
        await asyncio.sleep(POLL_INTERVAL)


async def _stop(process: asyncio.subprocess.Process, log: Path) -> None:
    """SIGTERM (the daemon's clean shutdown), then SIGKILL to the whole group if it hangs."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
    except TimeoutError:
        _kill_group(process)
        await process.wait()
        raise JsIpfsError(f"js-ipfs ignored SIGTERM for {STOP_TIMEOUT:.0f} s and was killed: "
                          f"{log.read_text(errors='replace')[-3000:]}") from None
    _kill_group(process)  # whatever it may have left behind in its group
    if code != 0:
        raise JsIpfsError(f"js-ipfs exited {code} on SIGTERM: {log.read_text(errors='replace')[-3000:]}")


@contextlib.asynccontextmanager
async def start_jsipfs(folder: Path) -> AsyncIterator[JsIpfs]:
    """A fresh js-ipfs daemon with its repo and log in `folder`, stopped on exit (see module docstring)."""
    problem = why_unavailable()
    if problem is not None:
        _unavailable(problem)
    began = time.monotonic()
    deadline = began + START_TIMEOUT
    folder.mkdir(parents=True, exist_ok=True)
    repo = folder / "repo"
    config = folder / "config.json"
    config.write_text(json.dumps(CONFIG))
    log = folder / "jsipfs.log"
    with log.open("wb") as errors:
        process = await asyncio.create_subprocess_exec(
            "node", str(DAEMON), str(repo), str(config), cwd=JSIPFS_DIR, env=_environment(),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=errors,
            start_new_session=True)
    try:
        async with aiohttp.ClientSession() as session:
            listening = await _wait_until_listening(process, log, deadline)
            await _wait_until_answering(session, listening["api"], deadline)
            yield JsIpfs(listening["api"], listening["gateway"], repo, session,
                         start_seconds=time.monotonic() - began)
    except BaseException:
        _kill_group(process)
        await process.wait()
        raise
    await _stop(process, log)
