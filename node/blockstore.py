"""The local blockstore: one write-once file per block, named by its CID.

Invariant: a block file is visible under its final name only after its bytes
are durable (written to a temp file in the same folder, then fsynced, or made
durable with its whole batch by one syncfs, then renamed), and a block read
back is re-hashed against its CID before anyone sees it.
Never writes a block whose bytes do not match its CID, never rewrites one.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import logging
import os
import shutil
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from node import cid as cids
from node.cid import Cid
from node.errors import BlockMismatch, BlockNotFound, BlockTooLarge, InvalidCid, StoreError

MAX_BLOCK_SIZE = 2 * 1024 * 1024
WRITER_THREADS = 4
# A BlockWriter makes its blocks durable at least this often, which bounds the
# dirty page cache a big pin builds up and lets syncs overlap hashing.
BATCH_BYTES = 64 * 1024 * 1024
BATCH_BLOCKS = 2048
TEMP_PREFIX = ".tmp-"
STAGING_DIR = ".staging"
_SUFFIX = ".data"
log = logging.getLogger("artkeep.store")

Bytes = bytes | bytearray | memoryview


def block_key(cid: Cid) -> str:
    """The file name of a block: its CIDv1 in base32 (a CIDv0 maps to its v1 form)."""
    return str(cid.to_v1())


@functools.lru_cache(maxsize=8192)
def _relative_path(cid: Cid) -> str:
    """path_of(cid) below the store's root, kept for recently read blocks (the base32 costs µs)."""
    key = block_key(cid)
    return f"{key[-3:-1]}/{key}{_SUFFIX}"


@dataclass(frozen=True, slots=True)
class Usage:
    blocks: int
    bytes: int


class Blockstore:
    """Blocks under root/<two chars>/<cidv1>.data, sharded like Kubo's flatfs (next-to-last/2)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._dirty_dirs: set[Path] = set()
        self._lock = threading.Lock()
        self._counter = 0
        root.mkdir(parents=True, exist_ok=True)

    def path_of(self, cid: Cid) -> Path:
        key = block_key(cid)
        return self.root / key[-3:-1] / (key + _SUFFIX)

    def has(self, cid: Cid) -> bool:
        if cid.hash_code == cids.IDENTITY:
            return True
        return self.path_of(cid).is_file()

    def get(self, cid: Cid) -> bytes:
        """The block's bytes, re-hashed: BlockMismatch if the file on disk rotted."""
        if cid.hash_code == cids.IDENTITY:
            return cid.digest
        try:
            fd = os.open(os.path.join(self.root, _relative_path(cid)), os.O_RDONLY)
            try:
                data = _read_whole(fd)
            finally:
                os.close(fd)
        except FileNotFoundError:
            raise BlockNotFound(f"block {cid} is not in the store") from None
        except OSError as exc:
            raise StoreError(f"cannot read block {cid}: {exc.strerror}") from None
        if not cids.matches(cid, data):
            raise BlockMismatch(f"block {cid} on disk does not match its CID (damaged)")
        return data

    def get_if_cached(self, cid: Cid, max_size: int) -> bytes | None:
        """get(), re-hashed the same, for a block of at most max_size bytes already in the page cache.

        None when it is bigger, or reading it would wait for the disk (RWF_NOWAIT), or
        anything else is unusual: the caller then calls get() on a thread. So an event
        loop can serve small cached blocks without a thread hop (only the open() of a
        file whose folder entry is not cached can still wait for the disk).
        """
        if cid.hash_code == cids.IDENTITY:
            return cid.digest
        try:
            fd = os.open(os.path.join(self.root, _relative_path(cid)), os.O_RDONLY)
        except FileNotFoundError:
            raise BlockNotFound(f"block {cid} is not in the store") from None
        except OSError:
            return None
        try:
            size = os.fstat(fd).st_size
            if size > max_size:
                return None
            buffer = bytearray(size)
            if os.preadv(fd, (buffer,), 0, os.RWF_NOWAIT) != size:
                return None
        except OSError:  # BlockingIOError: not cached; EOPNOTSUPP: a file system without RWF_NOWAIT
            return None
        finally:
            os.close(fd)
        data = bytes(buffer)
        if not cids.matches(cid, data):
            raise BlockMismatch(f"block {cid} on disk does not match its CID (damaged)")
        return data

    def size(self, cid: Cid) -> int:
        if cid.hash_code == cids.IDENTITY:
            return len(cid.digest)
        try:
            return self.path_of(cid).stat().st_size
        except FileNotFoundError:
            raise BlockNotFound(f"block {cid} is not in the store") from None

    def put(self, cid: Cid, parts: Sequence[Bytes], *, hashed: bool = False) -> bool:
        """Store a block given as parts to concatenate; True if it was new.

        hashed=True says the caller computed cid from exactly these bytes in
        this process (the UnixFS builder does), so hashing again is skipped.
        Call sync() before recording anything that depends on the block.
        """
        final = self._admit(cid, parts, hashed)
        if final is None:
            return False
        return self._move_in(cid, self._write_temp(cid, final, parts, durable=True), final)

    def _admit(self, cid: Cid, parts: Sequence[Bytes], hashed: bool) -> Path | None:
        """Check a block against its CID and the size limit; its file, or None if nothing is to write."""
        length = sum(len(part) for part in parts)
        if length > MAX_BLOCK_SIZE:
            raise BlockTooLarge(f"block {cid} is {length} bytes; the limit is {MAX_BLOCK_SIZE}")
        if cid.hash_code == cids.IDENTITY:
            if b"".join(parts) != cid.digest:
                raise BlockMismatch(f"block does not match identity CID {cid}")
            return None
        if not hashed:
            if cid.hash_code not in cids.HASH_NAMES:
                raise InvalidCid(f"unsupported hash function in {cid}")
            if not cids.matches(cid, b"".join(parts)):
                raise BlockMismatch(f"block does not match {cid}")
        return None if self.holds_whole(cid) else self.path_of(cid)

    def holds_whole(self, cid: Cid) -> bool:
        """Whether the block is here and still matches its CID. A damaged file is not: a put of the right
        bytes replaces it (the one file the store ever replaces), so a re-push or re-import heals it."""
        if not self.has(cid):
            return False
        try:
            self.get(cid)
        except (BlockNotFound, BlockMismatch):
            return False
        return True

    def _write_temp(self, cid: Cid, final: Path, parts: Sequence[Bytes], *, durable: bool) -> Path:
        """Write the block to a temp file beside final: fsynced if durable, else its write-back started."""
        folder = final.parent
        folder.mkdir(exist_ok=True)
        with self._lock:
            self._counter += 1
            temp = folder / f"{TEMP_PREFIX}{os.getpid()}-{threading.get_ident()}-{self._counter}"
        try:
            _write_file(temp, parts, durable=durable)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise StoreError(f"cannot write block {cid}: {exc.strerror}") from None
        return temp

    def _move_in(self, cid: Cid, temp: Path, final: Path) -> bool:
        """Rename a durable temp file to its block's name; True if new (a twin may have got there first)."""
        try:
            if self.holds_whole(cid):
                temp.unlink()
                return False
            _rename_over_damage(cid, temp, final)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise StoreError(f"cannot write block {cid}: {exc.strerror}") from None
        with self._lock:
            self._dirty_dirs.add(final.parent)
        return True

    def sync(self, fs_fd: int | None = None) -> None:
        """Make every rename since the last sync durable.

        With fs_fd (a descriptor on this file system, where syncfs(2) exists) one
        syncfs does it: cheaper than an fsync of each touched folder once a batch
        touches more than a few. Otherwise each touched folder is fsynced.
        """
        with self._lock:
            dirs, self._dirty_dirs = self._dirty_dirs, set()
        if fs_fd is not None:
            if dirs:
                syncfs(fs_fd)
            return
        for folder in sorted(dirs):
            fsync_dir(folder)

    def delete(self, cid: Cid) -> bool:
        try:
            self.path_of(cid).unlink()
        except FileNotFoundError:
            return False
        with self._lock:
            self._dirty_dirs.add(self.path_of(cid).parent)
        return True

    def __iter__(self) -> Iterator[Cid]:
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or len(folder.name) != 2:
                continue
            for entry in sorted(os.listdir(folder)):
                if entry.startswith(".") or not entry.endswith(_SUFFIX):
                    continue
                try:
                    yield cids.parse(entry[: -len(_SUFFIX)])
                except InvalidCid:
                    continue

    def usage(self) -> Usage:
        count = total = 0
        for folder in self.root.iterdir():
            if not folder.is_dir():
                continue
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.endswith(_SUFFIX) and not entry.name.startswith("."):
                        count += 1
                        total += entry.stat().st_size
        return Usage(count, total)

    @contextmanager
    def writer(self, threads: int = WRITER_THREADS, batch_bytes: int = BATCH_BYTES) -> Iterator[BlockWriter]:
        """A BlockWriter whose blocks are all durable when the with-block exits."""
        writer = BlockWriter(self, threads, batch_bytes)
        try:
            yield writer
            writer.flush()
        finally:
            writer.close()

    def staging(self) -> Staging:
        """A private area for a batch that must land whole or not at all (a CAR import)."""
        return Staging(self)

    def temp_files(self) -> list[Path]:
        """Leftovers of writes whose process died; never visible as blocks."""
        found = [*self.root.glob(f"??/{TEMP_PREFIX}*"), *self.root.glob(f"{STAGING_DIR}/*")]
        return sorted(path for path in found if not _writer_alive(path.name))

    def remove_temp_files(self) -> int:
        removed = 0
        for temp in self.temp_files():
            if temp.is_dir():
                shutil.rmtree(temp, ignore_errors=True)
            else:
                temp.unlink(missing_ok=True)
            removed += 1
        return removed


@dataclass
class _Batch:
    """Blocks put since the last seal: written as temp files, not yet durable, so not yet in place."""

    writes: list[Future[None]] = field(default_factory=list)
    temps: list[tuple[Cid, Path, Path]] = field(default_factory=list)  # (cid, temp, final), from the writers
    keys: set[Cid] = field(default_factory=set)
    size: int = 0


class BlockWriter:
    """Writes blocks on several threads and makes them durable a batch at a time.

    An fsync per block and per folder dominated the cost of a block, so on
    Linux a block goes to a temp file with no fsync (its write-back started at
    once); every batch_bytes, and at flush(), the batch is sealed and a syncer
    thread makes it durable with one syncfs(2), and only then renames its temps
    into place, while the writers go on with the next batch. flush() then makes
    the renames durable with one more syncfs. So no block is visible under its
    name before its bytes are durable, and a crash leaves only temp files
    (remove_temp_files clears them). Without syncfs, each temp is fsynced as it
    is written. At most 2 × threads blocks wait in memory, and the caller waits
    while two sealed batches are still going to the disk.
    """

    def __init__(self, store: Blockstore, threads: int, batch_bytes: int) -> None:
        self._store = store
        self._batch_bytes = batch_bytes
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="block-writer")
        self._syncer = ThreadPoolExecutor(1, thread_name_prefix="block-syncer")
        self._slots = threading.BoundedSemaphore(threads * 2)
        self._lock = threading.Lock()
        self._batch_lock = threading.Lock()  # put is called from several threads (rescue's workers too)
        self._batch = _Batch()
        self._sealed: deque[Future[None]] = deque()
        self._unplaced: set[Cid] = set()  # put but not yet in place: a second put of one is skipped
        self._errors: list[BaseException] = []
        # syncfs reports write-back errors seen since its descriptor was opened: open it before any write.
        self._fs_fd = os.open(store.root, os.O_RDONLY | os.O_DIRECTORY) if _syncfs is not None else None

    def put(self, cid: Cid, parts: Sequence[Bytes], *, hashed: bool = False) -> None:
        if self._errors:
            raise self._errors[0]
        key = cid.to_v1()
        with self._lock:
            if key in self._unplaced:
                return
            self._unplaced.add(key)
        self._slots.acquire()
        with self._batch_lock:
            batch = self._batch
            batch.keys.add(key)
            batch.writes.append(self._pool.submit(self._write, batch, cid, parts, hashed))
            batch.size += sum(len(part) for part in parts)
            if batch.size >= self._batch_bytes or len(batch.writes) >= BATCH_BLOCKS:
                self._seal()

    def _write(self, batch: _Batch, cid: Cid, parts: Sequence[Bytes], hashed: bool) -> None:
        try:
            final = self._store._admit(cid, parts, hashed)
            if final is not None:
                temp = self._store._write_temp(cid, final, parts, durable=self._fs_fd is None)
                with self._lock:
                    batch.temps.append((cid, temp, final))
        except BaseException as exc:
            self._errors.append(exc)
        finally:
            self._slots.release()

    def _seal(self) -> None:
        """Hand the open batch to the syncer (the caller holds _batch_lock)."""
        batch, self._batch = self._batch, _Batch()
        while len(self._sealed) >= 2:  # bounds the bytes not yet durable
            self._sealed.popleft().result()
        self._sealed.append(self._syncer.submit(self._place, batch))

    def _place(self, batch: _Batch) -> None:
        """On the syncer thread: make a sealed batch's temps durable, then rename them into place."""
        wait(batch.writes)
        try:
            if self._fs_fd is not None:
                syncfs(self._fs_fd)
            while batch.temps:
                cid, temp, final = batch.temps.pop()
                self._store._move_in(cid, temp, final)
        except BaseException as exc:
            self._errors.append(exc)
            _drop(batch)
        finally:
            with self._lock:
                self._unplaced -= batch.keys

    def flush(self) -> None:
        """Wait for every block put so far, raise the first failure, make them all durable and in place."""
        with self._batch_lock:
            if self._batch.writes:
                self._seal()
            sealed, self._sealed = self._sealed, deque()
        wait(sealed)
        if self._errors:
            raise self._errors[0]
        self._store.sync(self._fs_fd)

    def close(self) -> None:
        """Stop the threads; blocks of a batch never sealed (flush was not reached) are dropped."""
        self._pool.shutdown(wait=True)
        self._syncer.shutdown(wait=True)
        _drop(self._batch)
        if self._fs_fd is not None:
            os.close(self._fs_fd)
            self._fs_fd = None


class Staging:
    """Blocks written durably but invisible until commit() moves them in by rename.

    A crash before commit leaves only the staging folder, which remove_temp_files
    clears; a crash during commit leaves some blocks moved in, each whole but
    unpinned (gc collects them, a rerun reuses them).
    """

    def __init__(self, store: Blockstore) -> None:
        self.store = store
        with store._lock:
            store._counter += 1
            name = f"{TEMP_PREFIX}{os.getpid()}-{threading.get_ident()}-{store._counter}"
        self.folder = store.root / STAGING_DIR / name
        self.folder.mkdir(parents=True)
        self.cids: list[Cid] = []

    def put(self, cid: Cid, block: Bytes) -> None:
        """Stage a block already checked against its CID by the caller."""
        if len(block) > MAX_BLOCK_SIZE:
            raise BlockTooLarge(f"block {cid} is {len(block)} bytes; the limit is {MAX_BLOCK_SIZE}")
        if cid.hash_code == cids.IDENTITY:
            return
        path = self.folder / block_key(cid)
        if path.exists() or self.store.holds_whole(cid):
            return
        _write_file(path, (block,), durable=True)
        self.cids.append(cid)

    def commit(self) -> int:
        """Move every staged block into the store; return how many were new."""
        fsync_dir(self.folder)
        added = 0
        for cid in self.cids:
            final = self.store.path_of(cid)
            final.parent.mkdir(exist_ok=True)
            if self.store.holds_whole(cid):
                continue
            _rename_over_damage(cid, self.folder / block_key(cid), final)
            with self.store._lock:
                self.store._dirty_dirs.add(final.parent)
            added += 1
        self.store.sync()
        self.abort()
        return added

    def abort(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _write_file(path: Path, parts: Sequence[Bytes], *, durable: bool) -> None:
    direct = len(parts) == 1 and page_aligned(parts[0])
    size = sum(len(part) for part in parts)
    fd, direct = _create(path, direct)
    try:
        for part in parts:
            view = memoryview(part)
            while view:
                try:
                    written = os.write(fd, view)
                except OSError as exc:
                    if not direct or exc.errno != errno.EINVAL:
                        raise
                    # The device wants a coarser alignment: write the rest through the page cache.
                    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
                    direct = False
                    continue
                view = view[written:]
        if durable:
            os.fsync(fd)
        elif not direct and _sync_file_range is not None and size >= WRITE_BACK_EARLY_BYTES:
            # Start write-back now, so the batch's syncfs finds little left to write.
            _sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)
    finally:
        os.close(fd)


def page_aligned(part: Bytes) -> bool:
    """Whether part can be written with O_DIRECT: whole pages, starting on a page boundary.

    Such a write goes from our buffer to the disk, without a copy into the page
    cache (which cost more CPU than hashing on a big pin). Only writable
    buffers qualify: the importer's chunks are aligned on purpose; bytes never are.
    """
    if not len(part) or len(part) % DIRECT_ALIGNMENT or not _direct_io:
        return False
    try:
        address = ctypes.addressof(ctypes.c_char.from_buffer(part))
    except TypeError:  # read-only
        return False
    return address % DIRECT_ALIGNMENT == 0


def _create(path: Path, direct: bool) -> tuple[int, bool]:
    """Create path for writing (it must not exist); with O_DIRECT if asked and the file system allows it."""
    global _direct_io
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    if direct:
        try:
            return os.open(path, flags | os.O_DIRECT, 0o444), True
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            _direct_io = False  # this file system refuses O_DIRECT (the file may exist already, empty)
            path.unlink(missing_ok=True)
    return os.open(path, flags, 0o444), False


def _rename_over_damage(cid: Cid, temp: Path, final: Path) -> None:
    """Move a durable temp file into place; a damaged file there is replaced in the same atomic step."""
    if final.exists():
        log.warning("replacing damaged block %s with verified bytes", cid, extra={"cid": str(cid)})
    os.rename(temp, final)


def _drop(batch: _Batch) -> None:
    """Remove the temp files of a batch that will never be made durable."""
    for _, temp, _ in batch.temps:
        temp.unlink(missing_ok=True)
    batch.temps.clear()


def _linux_call(name: str, *argtypes: type[ctypes._SimpleCData[int]]) -> Callable[..., int] | None:
    """A libc system call wrapper on Linux, or None (syncfs and sync_file_range exist only there)."""
    if sys.platform != "linux":
        return None
    function = getattr(ctypes.CDLL(None, use_errno=True), name, None)
    if function is None:
        return None
    function.argtypes = argtypes
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


SYNC_FILE_RANGE_WRITE = 2
# Smaller blocks are left to the batch's syncfs: one early write-back each cost more than it saved.
WRITE_BACK_EARLY_BYTES = 64 * 1024
DIRECT_ALIGNMENT = 4096  # a page: covers the logical block size of disks (512 or 4096)
_direct_io = hasattr(os, "O_DIRECT")  # turned off at the first file system that refuses it
_syncfs = _linux_call("syncfs", ctypes.c_int)
_sync_file_range = _linux_call("sync_file_range", ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)


def syncfs(fs_fd: int) -> None:
    """Make everything written to the file system of fs_fd durable: data, and names (renames) too."""
    assert _syncfs is not None
    if _syncfs(fs_fd) != 0:
        raise StoreError(f"cannot make blocks durable: {os.strerror(ctypes.get_errno())}")


def _read_whole(fd: int) -> bytes:
    """The file's bytes in one allocation (os.read, without the io layers of Path.read_bytes)."""
    size = os.fstat(fd).st_size
    data = os.read(fd, size)
    while len(data) < size:
        more = os.read(fd, size - len(data))
        if not more:
            break
        data += more
    return data


def _writer_alive(name: str) -> bool:
    """Temp names carry the writer's pid: a live writer's files are not leftovers."""
    try:
        pid = int(name[len(TEMP_PREFIX):].split("-")[0])
    except ValueError:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
