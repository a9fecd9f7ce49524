"""Read files and folders from disk into UnixFS DAGs, as `ipfs add` does.

I/O edge: opens files, walks folders, and feeds the pure builders in
node.unixfs. Reading runs a few chunks ahead on a thread, and a file's
chunks are hashed on a pool of threads (hashlib releases the GIL on large
buffers); memory stays bounded by a few chunks whatever the file size. Never
stores anything itself: blocks go to the sink the caller passes.
"""

from __future__ import annotations

import ctypes
import functools
import os
import queue
import stat
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from node import unixfs
from node.cid import Cid
from node.errors import NodeError, PathError
from node.profiles import Profile
from node.unixfs import BlockSink, Bytes, DagLink, DirEntry

PREFETCH_READS = 3
HASH_THREADS = max(2, os.cpu_count() or 2)  # hashlib lets go of the GIL: chunks hash in parallel
READ_BYTES = 1024 * 1024
PAGE = 4096
ProgressCallback = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class EntryResult:
    """One file or folder met during an import: its DAG, or why it failed."""

    path: Path
    kind: str  # "file", "directory" or "symlink"
    link: DagLink | None = None
    error: str | None = None
    size: int = 0  # content bytes: the file's, or the sum of the files under a folder


@dataclass
class TreeReport:
    entries: list[EntryResult] = field(default_factory=list)

    @property
    def failed(self) -> list[EntryResult]:
        return [entry for entry in self.entries if entry.error is not None]


def read_chunks(path: Path, chunk_size: int) -> Iterator[memoryview]:
    """Yield the file's bytes in pieces of exactly chunk_size (the last may be shorter)."""
    try:
        handle = open(path, "rb", buffering=0)  # noqa: SIM115 (closed by the reader thread)
    except OSError as exc:
        raise _path_error(path, exc) from None
    pieces: queue.Queue[memoryview | BaseException | None] = queue.Queue(PREFETCH_READS)
    stop = threading.Event()

    # Small chunks are read several at a time: a queue hand-off per 256 KiB cost more than the read.
    per_read = max(1, READ_BYTES // chunk_size)

    def reader() -> None:
        try:
            with handle:
                while not stop.is_set():
                    piece = read_full(handle, chunk_size * per_read)
                    if piece is None:
                        break
                    _put(piece)
            _put(None)
        except OSError as exc:
            _put(_path_error(path, exc))

    def _put(item: memoryview | BaseException | None) -> None:
        while not stop.is_set():
            try:
                pieces.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    thread = threading.Thread(target=reader, name=f"read {path.name}", daemon=True)
    thread.start()
    try:
        while True:
            item = pieces.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            for start in range(0, len(item), chunk_size):
                yield item[start:start + chunk_size]
    finally:
        stop.set()
        thread.join()


def read_full(handle: object, size: int) -> memoryview | None:
    """Up to size bytes (fewer only at the end), in a page-aligned buffer; None at the end.

    Aligned so the store can write a whole chunk with O_DIRECT (see
    blockstore.page_aligned), sparing a copy through the page cache.
    """
    view = _buffers(size).take()
    filled = 0
    readinto = handle.readinto  # type: ignore[attr-defined]
    while filled < size:
        count = readinto(view[filled:])
        if not count:
            break
        filled += count
    if filled == 0:
        return None
    return view if filled == size else view[:filled]


class BufferPool:
    """Page-aligned buffers of one size, each reused once nothing refers to it any more.

    A chunk outlives its hashing until a writer thread has stored it, so a
    buffer cannot be reused on a schedule. CPython counts references, and a
    memoryview of a buffer holds one: a buffer referred to only by the pool
    is free. Reuse spares zero-filling and faulting in a new buffer per chunk,
    about a tenth of the CPU of a big pin. At most `keep` buffers are kept.
    """

    _FREE_REFS: Final = 3  # the pool's list entry, the loop variable, getrefcount's argument

    def __init__(self, size: int, keep: int = 32) -> None:
        self.size = size
        self._keep = keep
        self._buffers: list[bytearray] = []
        self._lock = threading.Lock()

    def take(self) -> memoryview:
        with self._lock:
            for buf in self._buffers:
                if sys.getrefcount(buf) <= self._FREE_REFS:
                    return self._aligned(buf)
            buf = bytearray(self.size + PAGE)
            if len(self._buffers) < self._keep:
                self._buffers.append(buf)
            return self._aligned(buf)

    def _aligned(self, buf: bytearray) -> memoryview:
        start = -ctypes.addressof(ctypes.c_char.from_buffer(buf)) % PAGE
        return memoryview(buf)[start:start + self.size]


@functools.cache
def _buffers(size: int) -> BufferPool:
    return BufferPool(size)


def import_file(path: Path, profile: Profile, sink: BlockSink | None = None,
                progress: ProgressCallback | None = None) -> DagLink:
    """The file's UnixFS DAG; its chunks are hashed on several cores and added in order.

    A file of one short chunk (most images) is hashed here: handing it to
    another thread would cost more than it saves.
    """
    builder = unixfs.FileBuilder(profile, sink)
    pending: deque[tuple[int, tuple[Bytes, ...], Future[bytes]]] = deque()

    def add(size: int, parts: tuple[Bytes, ...], digest: bytes) -> None:
        builder.add_leaf(size, parts, digest)
        if progress is not None:
            progress(size)

    def add_oldest() -> None:
        size, parts, digest = pending.popleft()
        add(size, parts, digest.result())

    for chunk in read_chunks(path, profile.chunk_size):
        parts = builder.leaf_parts(chunk)
        if not pending and len(chunk) < profile.chunk_size:  # the first chunk is the last
            add(len(chunk), parts, unixfs.sha256_of(parts))
            continue
        pending.append((len(chunk), parts, _hashers().submit(unixfs.sha256_of, parts)))
        if len(pending) > 2 * HASH_THREADS:
            add_oldest()
    while pending:
        add_oldest()
    return builder.finish()


@functools.cache
def _hashers() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="hash")


def import_tree(path: Path, profile: Profile, sink: BlockSink | None = None, *,
                include_hidden: bool = False, progress: ProgressCallback | None = None,
                report: TreeReport | None = None) -> DagLink:
    """`ipfs add -r path`: the folder as one UnixFS directory.

    Hidden names are left out unless include_hidden (Kubo's default), empty
    folders are kept, symlinks become UnixFS symlink nodes. An entry that
    cannot be read is recorded in report and left out; the rest goes on.
    """
    report = report if report is not None else TreeReport()
    link, _ = _import_dir(path, profile, sink, include_hidden, progress, report, depth=0)
    return link


MAX_TREE_DEPTH = 256


def _import_dir(path: Path, profile: Profile, sink: BlockSink | None, include_hidden: bool,
                progress: ProgressCallback | None, report: TreeReport, depth: int) -> tuple[DagLink, int]:
    if depth > MAX_TREE_DEPTH:
        raise PathError(f"{path}: folders nested deeper than {MAX_TREE_DEPTH} levels")
    try:
        names = sorted(os.listdir(path))
    except OSError as exc:
        raise _path_error(path, exc) from None
    entries: list[DirEntry] = []
    total = 0
    for name in names:
        if name.startswith(".") and not include_hidden:
            continue
        child = path / name
        try:
            info = child.lstat()
            if stat.S_ISLNK(info.st_mode):
                link = unixfs.symlink(os.readlink(child), profile, sink)
                report.entries.append(EntryResult(child, "symlink", link))
            elif stat.S_ISDIR(info.st_mode):
                link, size = _import_dir(child, profile, sink, include_hidden, progress, report, depth + 1)
                total += size
            elif stat.S_ISREG(info.st_mode):
                link = import_file(child, profile, sink, progress)
                report.entries.append(EntryResult(child, "file", link, size=link.filesize))
                total += link.filesize
            else:
                raise PathError(f"{child}: not a regular file ({_kind_of(info.st_mode)})")
        except NodeError as exc:
            report.entries.append(EntryResult(child, "file", error=exc.message))
            continue
        except OSError as exc:
            report.entries.append(EntryResult(child, "file", error=_path_error(child, exc).message))
            continue
        entries.append(DirEntry(name, link))
    link = unixfs.directory(entries, profile, sink)
    report.entries.append(EntryResult(path, "directory", link, size=total))
    return link, total


def hash_file(path: Path, profile: Profile, *, wrap: bool = False) -> Cid:
    """The CID `ipfs add` would print for this file (with -w when wrap), storing nothing."""
    link = import_file(path, profile)
    if wrap:
        link = unixfs.wrap(path.name, link, profile)
    return link.cid


def hash_tree(path: Path, profile: Profile) -> Cid:
    """The root CID `ipfs add -r` would print for this folder, storing nothing."""
    report = TreeReport()
    link = import_tree(path, profile, report=report)
    if report.failed:
        raise PathError("; ".join(entry.error or "" for entry in report.failed))
    return link.cid


def iter_files(paths: list[Path], report_error: Callable[[Path, str], None]) -> Iterator[Path]:
    """Every regular file under paths, recursively, in a stable order.

    Symlinks are followed; a folder reached twice (a symlink loop) is an
    error for that path, reported once, and the walk goes on.
    """
    seen_dirs: set[tuple[int, int]] = set()

    def walk(path: Path, depth: int) -> Iterator[Path]:
        try:
            info = path.stat()
        except OSError as exc:
            report_error(path, _path_error(path, exc).message)
            return
        if stat.S_ISREG(info.st_mode):
            yield path
            return
        if not stat.S_ISDIR(info.st_mode):
            report_error(path, f"{path}: not a regular file ({_kind_of(info.st_mode)})")
            return
        key = (info.st_dev, info.st_ino)
        if key in seen_dirs or depth > MAX_TREE_DEPTH:
            report_error(path, f"{path}: symlink loop (folder already visited)")
            return
        seen_dirs.add(key)
        try:
            names = sorted(os.listdir(path))
        except OSError as exc:
            report_error(path, _path_error(path, exc).message)
            return
        for name in names:
            yield from walk(path / name, depth + 1)

    for path in paths:
        yield from walk(path, 0)


def _kind_of(mode: int) -> str:
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "an unsupported file type"


def _path_error(path: Path, exc: OSError) -> PathError:
    reason = exc.strerror or str(exc)
    if exc.errno == 40:  # ELOOP
        reason = "symlink loop"
    return PathError(f"{path}: {reason}")
