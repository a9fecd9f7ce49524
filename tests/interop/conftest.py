"""Fixtures for the interop tests: a js-ipfs node of their own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.interop.jsipfs import JsIpfs, start_jsipfs


@pytest.fixture
async def jsipfs(tmp_path: Path) -> AsyncIterator[JsIpfs]:
    """A fresh, offline js-ipfs 0.66 daemon on loopback, stopped after the test (skips when unavailable)."""
    async with start_jsipfs(tmp_path / "jsipfs") as node:
        yield node
