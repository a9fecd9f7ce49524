"""The pure core stays pure: encoding modules import no I/O, and lower layers never import higher ones."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

NODE = Path(__file__).resolve().parents[1] / "node"
PURE = ["varint", "protobuf", "cid", "dagpb", "dagcbor", "car", "unixfs", "hamt", "profiles", "dag",
        "errors", "config"]
IO_MODULES = {"sqlite3", "socket", "asyncio", "aiohttp", "apscheduler", "subprocess", "shutil", "time",
              "threading", "fcntl", "tempfile"}
HIGHER = {"node.blockstore", "node.index", "node.importer", "node.node", "node.cli"}


def imports_of(module: str) -> set[str]:
    tree = ast.parse((NODE / f"{module}.py").read_text())
    found: set[str] = set()
    for item in ast.walk(tree):
        if isinstance(item, ast.Import):
            found.update(alias.name for alias in item.names)
        elif isinstance(item, ast.ImportFrom) and item.module:
            found.add(item.module)
            found.update(f"{item.module}.{alias.name}" for alias in item.names)
    return found


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_do_no_io(module: str) -> None:
    imported = imports_of(module)
    assert not {name.split(".")[0] for name in imported} & IO_MODULES, module
    assert not imported & HIGHER, module
    source = (NODE / f"{module}.py").read_text()
    assert "open(" not in source, module
