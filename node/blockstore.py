"""The local blockstore: one write-once file per block, named by its CID.

Invariant: a block file is visible under its final name only after its bytes
were fully written and fsynced (temp file in the same folder, fsync, rename),
and a block read back is re-hashed against its CID before anyone sees it.
Never writes a block whose bytes do not match its CID, never rewrites one.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from node import cid as cids
from node.cid import Cid
from node.errors import BlockMismatch, BlockNotFound, BlockTooLarge, InvalidCid, StoreError

MAX_BLOCK_SIZE = 2 * 1024 * 1024
WRITER_THREADS = 4
TEMP_PREFIX = ".tmp-"
STAGING_DIR = ".staging"
_SUFFIX = ".data"

Bytes = bytes | bytearray | memoryview


def block_key(cid: Cid) -> str:
    """The file name of a block: its CIDv1 in base32 (a CIDv0 maps to its v1 form)."""
    return str(cid.to_v1())


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
            data = self.path_of(cid).read_bytes()
        except FileNotFoundError:
            raise BlockNotFound(f"block {cid} is not in the store") from None
        except OSError as exc:
            raise StoreError(f"cannot read block {cid}: {exc.strerror}") from None
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
        length = sum(len(part) for part in parts)
        if length > MAX_BLOCK_SIZE:
            raise BlockTooLarge(f"block {cid} is {length} bytes; the limit is {MAX_BLOCK_SIZE}")
        if cid.hash_code == cids.IDENTITY:
            if b"".join(parts) != cid.digest:
                raise BlockMismatch(f"block does not match identity CID {cid}")
            return False
        if not hashed:
            if cid.hash_code not in cids.HASH_NAMES:
                raise InvalidCid(f"unsupported hash function in {cid}")
            if not cids.matches(cid, b"".join(parts)):
                raise BlockMismatch(f"block does not match {cid}")
        final = self.path_of(cid)
        if final.exists():
            return False
        folder = final.parent
        folder.mkdir(exist_ok=True)
        with self._lock:
            self._counter += 1
            temp = folder / f"{TEMP_PREFIX}{os.getpid()}-{threading.get_ident()}-{self._counter}"
        try:
            _write_durably(temp, parts)
            os.rename(temp, final)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise StoreError(f"cannot write block {cid}: {exc.strerror}") from None
        with self._lock:
            self._dirty_dirs.add(folder)
        return True

    def sync(self) -> None:
        """Make every rename since the last sync durable (fsync the touched folders)."""
        with self._lock:
            dirs, self._dirty_dirs = self._dirty_dirs, set()
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
    def writer(self, threads: int = WRITER_THREADS) -> Iterator[BlockWriter]:
        """A BlockWriter whose blocks are all durable when the with-block exits."""
        writer = BlockWriter(self, threads)
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


class BlockWriter:
    """Writes blocks on several threads; flush() waits for them and makes them durable.

    fsync dominates the cost of a block (hundreds per second per thread on
    a typical SSD), so several in flight keep the disk busy while the caller
    hashes the next chunk. At most 2 × threads blocks wait in memory.
    """

    def __init__(self, store: Blockstore, threads: int) -> None:
        self._store = store
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="block-writer")
        self._slots = threading.BoundedSemaphore(threads * 2)
        self._pending: set[Future[None]] = set()
        self._errors: list[BaseException] = []

    def put(self, cid: Cid, parts: Sequence[Bytes], *, hashed: bool = False) -> None:
        if self._errors:
            raise self._errors[0]
        self._slots.acquire()
        future = self._pool.submit(self._write, cid, parts, hashed)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    def _write(self, cid: Cid, parts: Sequence[Bytes], hashed: bool) -> None:
        try:
            self._store.put(cid, parts, hashed=hashed)
        except BaseException as exc:
            self._errors.append(exc)
        finally:
            self._slots.release()

    def flush(self) -> None:
        """Wait for every block put so far; raise the first failure; fsync the folders."""
        wait(list(self._pending))
        if self._errors:
            raise self._errors[0]
        self._store.sync()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


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
        if path.exists() or self.store.has(cid):
            return
        _write_durably(path, (block,))
        self.cids.append(cid)

    def commit(self) -> int:
        """Move every staged block into the store; return how many were new."""
        fsync_dir(self.folder)
        added = 0
        for cid in self.cids:
            final = self.store.path_of(cid)
            final.parent.mkdir(exist_ok=True)
            if final.exists():
                continue
            os.rename(self.folder / block_key(cid), final)
            with self.store._lock:
                self.store._dirty_dirs.add(final.parent)
            added += 1
        self.store.sync()
        self.abort()
        return added

    def abort(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _write_durably(path: Path, parts: Sequence[Bytes]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        for part in parts:
            view = memoryview(part)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


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
