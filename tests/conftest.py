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
