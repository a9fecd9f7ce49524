"""Shared test helpers: where the published IPFS vectors live."""

from __future__ import annotations

from pathlib import Path

import pytest

# /work/shared seen from the project root as ../shared.
IPFS_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "ipfs"


@pytest.fixture
def ipfs_fixtures() -> Path:
    return IPFS_FIXTURES


SHARED = Path(__file__).resolve().parents[2] / "shared"


def chacha_stream(seed: str, size: int) -> bytes:
    """The deterministic input bytes of the IPIP-499 vectors (ChaCha20 keystream)."""
    import hashlib

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    key = hashlib.sha256(seed.encode()).digest()
    return Cipher(algorithms.ChaCha20(key, bytes(16)), None).encryptor().update(bytes(size))


class CliRun:
    """What one `artkeep` subprocess did: its arguments, exit code and both outputs."""

    def __init__(self, args: list[str], returncode: int, stdout: bytes, stderr: bytes) -> None:
        self.args = args
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    def records(self) -> list[dict[str, object]]:
        """stdout as JSON lines: every non-empty line must be one JSON object."""
        import json

        records = []
        for line in self.out.splitlines():
            if line.strip():
                record = json.loads(line)
                assert isinstance(record, dict), f"not a JSON object: {line!r}"
                records.append(record)
        return records

    def __repr__(self) -> str:
        return (f"CliRun({' '.join(self.args[1:])!r} -> {self.returncode}, "
                f"stdout={self.out[:2000]!r}, stderr={self.err[:2000]!r})")


class ArtkeepCli:
    """The real `artkeep` command, run as a subprocess against one home folder."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def argv(self, *args: object) -> list[str]:
        """The installed `artkeep` script next to this Python (as a user runs it), else `-m node.cli`."""
        import sys

        script = Path(sys.executable).with_name("artkeep")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "node.cli"]
        return [*command, "--home", str(self.home), *(str(arg) for arg in args)]

    @staticmethod
    def env() -> dict[str, str]:
        """The test's environment without ARTKEEP_* settings, so only the arguments decide."""
        import os

        return {key: value for key, value in os.environ.items() if not key.startswith("ARTKEEP_")}

    def __call__(self, *args: object, stdin: bytes | None = None, timeout: float = 120) -> CliRun:
        import subprocess

        argv = self.argv(*args)
        if stdin is None:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                                  env=self.env(), check=False)
        else:
            done = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout,
                                  env=self.env(), check=False)
        return CliRun(argv, done.returncode, done.stdout, done.stderr)

    def at(self, home: Path) -> ArtkeepCli:
        """The same command against another home folder."""
        return ArtkeepCli(home)


@pytest.fixture
def artkeep(tmp_path: Path) -> ArtkeepCli:
    """Runs `artkeep --home tmp_path/home ...` as a real subprocess."""
    return ArtkeepCli(tmp_path / "home")


# --- the daemon, in process: a real aiohttp server on 127.0.0.1 ----------------------------------

class Served:
    """A running artkeep app on a loopback port, with its Node, one API token and a client session."""

    def __init__(self, url: str, node: object, token: str, session: object, app: object) -> None:
        from aiohttp import ClientSession, web

        from node.node import Node

        assert isinstance(node, Node) and isinstance(session, ClientSession)
        assert isinstance(app, web.Application)
        self.url = url
        self.node = node
        self.token = token
        self.session = session
        self.app = app

    @property
    def auth(self) -> dict[str, str]:
        """Headers that authorize a write."""
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
async def serve_app(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A factory: `served = await serve_app(routes, **settings)` starts the app with config overrides.

    Settings are config keys with '_' for '.', e.g. serve_private_reads=True. Fetches are
    limited to loopback (fetch.allow_networks = 127.0.0.0/8) unless a test says otherwise.
    """
    from aiohttp import ClientSession, web

    from node import config
    from node.node import Node
    from node.web.app import build_app
    from node.web.context import ServeOptions

    started: list[tuple[web.AppRunner, ClientSession, Node]] = []

    async def start(routes: tuple[web.RouteDef, ...] = (), **overrides: object) -> Served:
        values = dict(config.build({}, {}).values)
        values["fetch.allow_networks"] = "127.0.0.0/8"
        for name, value in overrides.items():
            section, _, key = name.partition("_")
            values[f"{section}.{key}"] = value  # type: ignore[assignment]
        node = Node(tmp_path / f"home{len(started)}", copies=int(values["replication.copies"]))
        app = build_app(node, ServeOptions.from_config(config.Config(values)))
        app.router.add_routes(routes)  # test-only routes, e.g. one that holds a request open
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        session = ClientSession()
        started.append((runner, session, node))
        _, secret = node.create_token("tests")
        return Served(f"http://127.0.0.1:{port}", node, secret, session, app)

    yield start
    for runner, session, node in reversed(started):
        await session.close()
        await runner.cleanup()
        node.close()


@pytest.fixture
async def served(serve_app):  # type: ignore[no-untyped-def]
    """The app with default settings (fetches limited to loopback)."""
    return await serve_app()
