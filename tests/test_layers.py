"""The pure core stays pure: encoding modules import no I/O, and lower layers never import higher ones."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

NODE = Path(__file__).resolve().parents[1] / "node"
PURE = ["varint", "protobuf", "cid", "dagpb", "dagcbor", "car", "unixfs", "hamt", "profiles", "dag",
        "trustless", "errors", "config", "signing", "work", "works", "restore", "search", "audit",
        "metadata/raw", "metadata/limits", "metadata/exif", "metadata/png", "metadata/jpeg", "metadata/webp",
        "metadata/stealth", "metadata/c2pa", "metadata/container",
        "metadata/__init__", "metadata/params", "metadata/a1111", "metadata/comfyui", "metadata/invokeai",
        "metadata/novelai", "metadata/fooocus", "metadata/swarmui", "metadata/others", "metadata/sidecar",
        "metadata/extract"]
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
    assert not file_calls(module), module


def file_calls(module: str) -> list[str]:
    """Calls that open or read files: builtin open(), and .open()/.read_*()/.write_*() on anything but
    Pillow's Image (which the metadata readers hand in-memory bytes)."""
    found = []
    for item in ast.walk(ast.parse((NODE / f"{module}.py").read_text())):
        if not isinstance(item, ast.Call):
            continue
        if isinstance(item.func, ast.Name) and item.func.id == "open":
            found.append(f"open() at line {item.lineno}")
        elif (isinstance(item.func, ast.Attribute)
              and item.func.attr in {"open", "read_bytes", "read_text", "write_bytes", "write_text"}
              and not (isinstance(item.func.value, ast.Name) and item.func.value.id == "Image")):
            found.append(f".{item.func.attr}() at line {item.lineno}")
    return found
