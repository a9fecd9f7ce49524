"""The node: one home folder (blockstore + index) and every operation on it.

I/O facade that sequences the pure parts; the CLI (and later the daemon)
call this and never reach into the store or the index themselves. Ordering
rule for crash safety: blocks are written and made durable before the index
records a pin, so a pin in the index is always complete.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from node import car, dag, hamt, importer, unixfs
from node import cid as cids
from node.blockstore import Blockstore, BlockWriter, Bytes, Usage
from node.cid import Cid
from node.errors import BlockMismatch, BlockNotFound, NodeError, NotFound, PinNotFound, UnixFsError
from node.index import Index, Pin, Token
from node.profiles import Profile
from node.unixfs import BlockSink, DagLink, NodeType

ProgressCallback = Callable[[int], None]
MAX_PATH_SEGMENTS = 256
PIN_BATCH_FILES = 256
PIN_BATCH_SECONDS = 1.0
log = logging.getLogger("artkeep.node")


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem fsck found; it goes on after each."""

    kind: str  # corrupt | missing | unreadable | leftover
    cid: str | None
    message: str


@dataclass(frozen=True, slots=True)
class CarImport:
    roots: list[Cid]
    blocks: int
    new_blocks: int
    pinned: list[Cid]
    incomplete: dict[Cid, int]  # root -> number of absent blocks found


class Node:
    def __init__(self, home: Path) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.store = Blockstore(home / "blocks")
        self.index = Index(home / "index.sqlite")
        self._lock_path = home / "gc.lock"

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- locking: pins share, gc is exclusive, so gc never takes a block a pin is about to record

    @contextmanager
    def _lock(self, exclusive: bool) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    @contextmanager
    def _block_sink(self) -> Iterator[BlockSink]:
        """A sink for blocks the UnixFS builder just hashed; durable when the block exits."""
        with self.store.writer() as writer:
            yield lambda cid, parts: writer.put(cid, parts, hashed=True)

    # --- adding

    def add_files(self, paths: Iterable[Path], profile: Profile, *, wrap: bool = False,
                  progress: ProgressCallback | None = None) -> Iterator[tuple[Path, DagLink | NodeError]]:
        """Pin many files, each on its own; yield each file's DAG, or its error, once it is durable.

        Files share one writer pool and are made durable and recorded in batches
        (one folder sync and one index transaction per batch), which is what
        makes thousands of small files fast. A crash loses at most the batch
        in flight: its blocks are whole, its pins not yet recorded.
        """
        with self._lock(exclusive=False), self.store.writer() as writer:
            def sink(cid: Cid, parts: Sequence[Bytes]) -> None:
                writer.put(cid, parts, hashed=True)

            batch: list[tuple[Path, DagLink]] = []
            started = time.monotonic()
            for path in paths:
                try:
                    link = importer.import_file(path, profile, sink, progress)
                    if wrap:
                        link = unixfs.wrap(path.name, link, profile, sink)
                except NodeError as exc:
                    yield path, exc
                    continue
                batch.append((path, link))
                if len(batch) >= PIN_BATCH_FILES or time.monotonic() - started > PIN_BATCH_SECONDS:
                    yield from self._record(batch, profile, wrap, writer)
                    batch, started = [], time.monotonic()
            yield from self._record(batch, profile, wrap, writer)

    def _record(self, batch: list[tuple[Path, DagLink]], profile: Profile, wrap: bool,
                writer: BlockWriter) -> Iterator[tuple[Path, DagLink]]:
        writer.flush()  # every block of the batch durable before any of its pins is recorded
        kind = "directory" if wrap else "file"
        self.index.add_pins([(str(link.cid), path.name, profile.name, link.filesize, link.tsize, kind)
                             for path, link in batch])
        for path, link in batch:
            log.info("pinned %s %s (%d bytes, %s)", link.cid, path, link.filesize, profile.name)
            yield path, link

    def add_tree(self, path: Path, profile: Profile, *, include_hidden: bool = False,
                 progress: ProgressCallback | None = None,
                 report: importer.TreeReport | None = None) -> DagLink:
        report = report if report is not None else importer.TreeReport()
        with self._lock(exclusive=False):
            with self._block_sink() as sink:
                link = importer.import_tree(path, profile, sink, include_hidden=include_hidden,
                                            progress=progress, report=report)
            size = report.entries[-1].size  # the root folder comes last
            self.index.add_pin(str(link.cid), path.resolve().name, profile.name, size, link.tsize,
                               "directory")
        log.info("pinned %s %s as a directory (%d bytes, %s)", link.cid, path, size, profile.name)
        return link

    def import_car(self, stream: BinaryIO, name: str) -> CarImport:
        """Store a CAR's blocks only if every one matches its CID; pin each complete root."""
        staging = self.store.staging()
        count = 0
        try:
            reader = car.read_car(stream)
            for cid, block in reader:
                try:
                    dag.links_of(cid, block)  # a block we could not walk later is refused now
                except NodeError as exc:
                    raise type(exc)(f"block {cid}: {exc.message}") from None
                staging.put(cid, block)
                count += 1
        except BaseException:
            staging.abort()
            raise
        pinned: list[Cid] = []
        incomplete: dict[Cid, int] = {}
        with self._lock(exclusive=False):
            new = staging.commit()
            for root in reader.roots:
                try:
                    absent = sum(1 for _ in dag.missing(root, self.store.get, self.store.has))
                except NodeError as exc:  # an older block of ours that rotted on disk
                    log.warning("cannot walk %s from %s: %s", root, name, exc.message)
                    absent = 1
                if absent:
                    incomplete[root] = absent
                    continue
                size, dag_size = self._sizes(root)
                self.index.add_pin(str(root), name, None, size, dag_size, "car")
                pinned.append(root)
                log.info("pinned %s from CAR %s (%d blocks)", root, name, count)
        return CarImport(list(reader.roots), count, new, pinned, incomplete)

    def put_block(self, cid: Cid, data: bytes) -> bool:
        """Store one block after checking it hashes to cid (and decodes, if it has links); True if new."""
        if not cids.matches(cid, data):
            raise BlockMismatch(f"block does not match {cid}")
        dag.links_of(cid, data)  # refuse what could not be walked later
        with self._lock(exclusive=False):
            new = self.store.put(cid, [data], hashed=True)
            self.store.sync()
        return new

    def pin_root(self, root: Cid, name: str, kind: str = "dag") -> Pin:
        """Pin a DAG already in the store; BlockNotFound unless every block is present.

        Pinning something pinned already keeps the first record and returns it.
        """
        with self._lock(exclusive=False):
            absent = next(dag.missing(root, self.store.get, self.store.has), None)
            if absent is not None:
                raise BlockNotFound(f"cannot pin {root}: block {absent} is not in the store")
            size, dag_size = self._sizes(root)
            self.index.add_pin(str(root), name, None, size, dag_size, kind)
            pin = self.index.get_pin(str(root))
        assert pin is not None
        log.info("pinned %s (%s)", root, name)
        return pin

    def _sizes(self, root: Cid) -> tuple[int, int]:
        """(content bytes, DAG bytes) of a complete DAG already in the store."""
        dag_size = sum(self.store.size(cid) for cid, _ in dag.walk(root, self._get_for_walk))
        try:
            node = unixfs.decode_node(root, self.store.get(root))
            size = unixfs.file_size(node) if node.unixfs.type in (NodeType.FILE, NodeType.RAW) else dag_size
        except NodeError:
            size = dag_size
        return size, dag_size

    def _get_for_walk(self, cid: Cid) -> bytes:
        # Raw leaves need no reading to walk a DAG; only their presence matters.
        return b"" if cid.codec == cids.RAW and self.store.has(cid) else self.store.get(cid)

    # --- reading

    def get_block(self, cid: Cid) -> bytes:
        """A block's bytes, re-hashed against its CID (BlockNotFound, BlockMismatch)."""
        return self.store.get(cid)

    def has_block(self, cid: Cid) -> bool:
        return self.store.has(cid)

    def block_size(self, cid: Cid) -> int:
        return self.store.size(cid)

    def get_pin(self, cid: Cid) -> Pin | None:
        return self.index.get_pin(str(cid))

    def pins(self) -> list[Pin]:
        return self.index.pins()

    def count_pins(self) -> int:
        return self.index.count_pins()

    def usage(self) -> Usage:
        """Blocks and bytes in the store (walks every folder: seconds for millions of blocks)."""
        return self.store.usage()

    def resolve(self, path: str) -> Cid:
        """CID[/name/...] → the CID at that path, through basic and HAMT directories."""
        root, _, rest = path.strip().removeprefix("/ipfs/").partition("/")
        current = cids.parse(root)
        segments = [segment for segment in rest.split("/") if segment]
        if len(segments) > MAX_PATH_SEGMENTS:
            raise UnixFsError("path has too many segments")
        for segment in segments:
            node = unixfs.decode_node(current, self.store.get(current))
            if node.unixfs.type == NodeType.DIRECTORY:
                found = next((link.hash for link in node.links if link.name == segment), None)
            elif node.unixfs.type == NodeType.HAMT_SHARD:
                hit = hamt.lookup(current, segment, self.store.get)
                found = hit.hash if hit else None
            else:
                raise UnixFsError(f"{current} is not a directory")
            if found is None:
                raise NotFound(f"no {segment!r} in {current}")
            current = found
        return current

    def cat(self, path: str) -> Iterator[bytes]:
        """The bytes of the file at path, every block verified as it is read."""
        return unixfs.read_file(self.resolve(path), self.store.get)

    def export_car(self, root: Cid, write: Callable[[bytes], object]) -> int:
        """Write the whole DAG as a CARv1 (one root, depth-first, no duplicates); return block count."""
        absent = next(dag.missing(root, self.store.get, self.store.has), None)
        if absent is not None:
            raise BlockNotFound(f"cannot export {root}: block {absent} is not in the store")
        writer = car.CarWriter(write, [root])
        count = 0
        for cid, block in dag.walk(root, self.store.get):
            writer.add(cid, block)
            count += 1
        return count

    # --- removing

    def unpin(self, cid: Cid) -> Pin:
        pin = self.index.get_pin(str(cid))
        if pin is None or not self.index.remove_pin(str(cid)):
            raise PinNotFound(f"{cid} is not pinned")
        return pin

    def gc_candidates(self) -> list[Cid]:
        """Blocks no pin reaches."""
        with self._lock(exclusive=True):
            return self._unreachable()

    def _unreachable(self) -> list[Cid]:
        roots = [cids.parse(pin.cid) for pin in self.index.pins()]
        keep = {c.to_v1() for c in dag.reachable(roots, self.store.get, self.store.has)}
        return [c for c in self.store if c.to_v1() not in keep]

    def gc(self, expected: Sequence[Cid] | None = None) -> list[Cid]:
        """Remove unreachable blocks (only those in expected, if given); return what was removed."""
        with self._lock(exclusive=True):
            doomed = self._unreachable()
            if expected is not None:
                allowed = {c.to_v1() for c in expected}
                doomed = [c for c in doomed if c.to_v1() in allowed]
            for cid in doomed:
                self.store.delete(cid)
                log.info("gc removed %s", cid)
            self.store.sync()
            self.store.remove_temp_files()
        return doomed

    # --- API tokens

    def create_token(self, name: str) -> tuple[Token, str]:
        """A new API token and its secret, which is shown only now."""
        token, secret = self.index.add_token(name)
        log.info("created API token %s (%s)", token.id, name)
        return token, secret

    def tokens(self) -> list[Token]:
        return self.index.tokens()

    def revoke_token(self, token_id: str) -> None:
        if not self.index.remove_token(token_id):
            raise NotFound(f"no API token {token_id!r}")
        log.info("revoked API token %s", token_id)

    def token_for(self, secret: str) -> Token | None:
        return self.index.token_for(secret)

    # --- checking

    def fsck(self, progress: ProgressCallback | None = None) -> list[Finding]:
        findings: list[Finding] = []
        for cid in self.store:
            try:
                self.store.get(cid)
            except BlockMismatch:
                findings.append(Finding("corrupt", str(cid), f"block {cid} does not match its CID"))
            except NodeError as exc:
                findings.append(Finding("unreadable", str(cid), exc.message))
            if progress is not None:
                progress(1)
        for pin in self.index.pins():
            root = cids.parse(pin.cid)
            try:
                absent = list(dag.missing(root, self.store.get, self.store.has))
            except NodeError as exc:
                findings.append(Finding("missing", pin.cid, f"pin {pin.cid} ({pin.name}) cannot be walked: "
                                                            f"{exc.message}"))
                continue
            for cid in absent:
                findings.append(Finding("missing", pin.cid,
                                        f"pin {pin.cid} ({pin.name}) lacks block {cid}"))
        for leftover in self.store.temp_files():
            findings.append(Finding("leftover", None,
                                    f"interrupted write left {leftover.relative_to(self.home)} (harmless; "
                                    "`artkeep gc` removes it)"))
        return findings
