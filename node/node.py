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
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from node import car, dag, dagcbor, hamt, identity, importer, replication, search, signing, sources, unixfs
from node import cid as cids
from node import restore as restore_plan
from node import work as work_records
from node.audit import AuditPolicy, counts_toward_target, detection_text, is_stale
from node.blockstore import Blockstore, BlockWriter, Bytes, Usage
from node.bloom import BloomFilter
from node.cid import Cid
from node.errors import (
    BlockMismatch,
    BlockNotFound,
    NodeError,
    NotFound,
    PathError,
    PinNotFound,
    PlaceNotFound,
    TooLarge,
    UnixFsError,
)
from node.index import Index, Pin, PinRequest, PinRequestQuery, Token
from node.intake import DagIntake
from node.profiles import Profile
from node.remotes.base import PlaceSpec
from node.rescue import MAX_IMAGE_BYTES, Prepared, prepare
from node.thumbnails import Thumbnail, Thumbnails
from node.unixfs import BlockSink, DagLink, NodeType

ProgressCallback = Callable[[int], None]
MAX_PATH_SEGMENTS = 256
PIN_BATCH_FILES = 256
PIN_BATCH_SECONDS = 1.0
RESCUE_WORKERS = max(2, os.cpu_count() or 2)
log = logging.getLogger("artkeep.node")


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem fsck found; it goes on after each."""

    kind: str  # corrupt | missing | unreadable | leftover
    cid: str | None
    message: str


@dataclass(frozen=True, slots=True)
class CarsImport:
    """What Node.import_cars did: the header roots, the blocks read, and why each unpinned root was not."""

    roots: list[Cid]
    blocks: int
    block_bytes: int
    pin_errors: dict[Cid, str]


@dataclass(frozen=True, slots=True)
class CarImport:
    roots: list[Cid]
    blocks: int
    new_blocks: int
    pinned: list[Cid]
    incomplete: dict[Cid, int]  # root -> number of absent blocks found


@dataclass(frozen=True, slots=True)
class Rescued:
    """What became of one file of a rescue."""

    display: str
    outcome: str  # new | duplicate | sidecar | failed
    cid: Cid | None = None  # the file's UnixFS root (the image's, for a work)
    size: int = 0
    work: Cid | None = None
    duplicate_of: Cid | None = None  # the earlier work (or pin) with the same content
    sidecar_of: str | None = None
    error: str | None = None


@dataclass
class _RescueBatch:
    results: list[Rescued] = field(default_factory=list)
    pins: list[tuple[str, str, str | None, int, int, str]] = field(default_factory=list)
    works: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    entries: list[search.GalleryEntry] = field(default_factory=list)
    images: dict[tuple[str, str], Cid] = field(default_factory=dict)  # new in this batch: (image, source)
    pinned: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)
    recorded: int = 0  # batches recorded so far
    rescued: BloomFilter = field(default_factory=BloomFilter)  # _run_key of every image given a work so far

    def reset(self) -> None:
        self.results, self.pins, self.works, self.entries = [], [], [], []
        self.images, self.pinned = {}, set()
        self.started = time.monotonic()
        self.recorded += 1


@dataclass(frozen=True, slots=True)
class WorkCheck:
    cid: Cid
    signer: bytes  # the public key that signed the record
    ours: bool  # signed by this node's key
    blocks: int  # blocks checked, every one re-hashed


def _run_key(image: str, source: str) -> bytes:
    return f"{source}\0{image}".encode()


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Node:
    def __init__(self, home: Path, *, copies: int = 2, audit: AuditPolicy | None = None) -> None:
        self.home = home
        self.copies = copies  # replication.copies: the target number of copies beyond this node
        self.audit_policy = audit or AuditPolicy()  # [audit]: the verified window, what sampling detects
        home.mkdir(parents=True, exist_ok=True)
        self.store = Blockstore(home / "blocks")
        self.index = Index(home / "index.sqlite")
        self._lock_path = home / "gc.lock"
        self._seed: bytes | None = None

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

    def get_block_if_cached(self, cid: Cid, max_size: int) -> bytes | None:
        """get_block without waiting for the disk: None unless the block is small and in the page cache."""
        return self.store.get_if_cached(cid, max_size)

    def has_block(self, cid: Cid) -> bool:
        return self.store.has(cid)

    def dag_blocks(self, root: Cid) -> list[Cid]:
        """Every block CID of the DAG under root, depth-first, each once (raw leaves are not read)."""
        return [cid for cid, _ in dag.walk(root, self._get_for_walk)]

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

    # --- gateway read-ahead: what /ipfs (node.web.gateway) needs beyond the methods above

    def advise_blocks(self, wanted: Iterable[Cid]) -> None:
        """Ask the OS to start reading these blocks from disk now (a hint: absent blocks are skipped).

        A stream reads and hashes blocks one at a time; hinting the next few lets
        the disk fetch them while the current one is hashed and sent.
        """
        for cid in wanted:
            if cid.hash_code == cids.IDENTITY:
                continue
            try:
                fd = os.open(self.store.path_of(cid), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            except OSError:
                pass
            finally:
                os.close(fd)

    # --- Kubo RPC: what /api/v0 (node.web.kubo_rpc) needs beyond the methods above

    def import_cars(self, cars: Iterable[tuple[str, car.BinaryStream]], *,
                    pin_roots: bool = True) -> CarsImport:
        """Import several CARs as one, like `ipfs dag import --offline`: all their blocks or none.

        Every block is checked against its CID and must decode; one bad CAR refuses them
        all. Then each header root (once, in order) is pinned if its whole DAG is here,
        named after the first CAR that lists it; pin_errors says why the others were not.
        """
        staging = self.store.staging()
        roots: dict[Cid, str] = {}
        blocks = block_bytes = 0
        try:
            for name, stream in cars:
                reader = car.read_car(stream)
                for root in reader.roots:
                    roots.setdefault(root, name)
                for cid, block in reader:
                    dag.links_of(cid, block)  # a block we could not walk later is refused now
                    staging.put(cid, block)
                    blocks += 1
                    block_bytes += len(block)
        except BaseException:
            staging.abort()
            raise
        pin_errors: dict[Cid, str] = {}
        with self._lock(exclusive=False):
            staging.commit()
            for root, name in roots.items() if pin_roots else ():
                error = self._pin_if_complete(root, name)
                if error is not None:
                    pin_errors[root] = error
        return CarsImport(list(roots), blocks, block_bytes, pin_errors)

    def _pin_if_complete(self, root: Cid, name: str) -> str | None:
        """Pin root if its whole DAG is here (the caller holds the pin lock); else say why, as Kubo does."""
        try:
            absent = next(dag.missing(root, self.store.get, self.store.has), None)
        except NodeError as exc:  # an older block of ours that rotted on disk
            return exc.message
        if absent is not None:
            return f"block was not found locally (offline): ipld: could not find {absent}"
        size, dag_size = self._sizes(root)
        self.index.add_pin(str(root), name, None, size, dag_size, "car")
        log.info("pinned %s from CAR %s", root, name)
        return None

    def pinned_blocks(self) -> dict[Cid, Cid]:
        """Every present block some pin reaches (Kubo's indirect pins, and the roots), each with
        the first pin root, in pin order, that reaches it."""
        owners: dict[Cid, Cid] = {}
        for pin in self.index.pins():
            root = cids.parse(pin.cid)
            for cid in dag.reachable([root], self.store.get, self.store.has):
                owners.setdefault(cid, root)
        return owners

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

    # --- works: images with their metadata, signed, and bulk rescue

    def key_seed(self) -> bytes:
        """The node's Ed25519 key seed, created on first use."""
        if self._seed is None:
            self._seed = identity.load_or_create(self.home)
        return self._seed

    def public_key(self) -> bytes:
        return signing.public_key(self.key_seed())

    def rescue(self, items: Iterable[sources.Item], profile: Profile, *, source: str | None = None,
               progress: ProgressCallback | None = None,
               workers: int = RESCUE_WORKERS) -> Iterator[Rescued]:
        """Store every item: images as signed works, other files as plain pins; yield each outcome.

        Files are read, hashed and extracted on several threads. An image already
        rescued from the same source (by content, whatever its name) is a
        duplicate: nothing is written again. Outcomes are yielded in input
        order once durable, in batches, so a crash or Ctrl-C loses at most a
        batch, and a rerun finishes the job.
        """
        seed, now = self.key_seed(), _now_iso()
        with (self._lock(exclusive=False), self.store.writer() as writer,
              ThreadPoolExecutor(workers, thread_name_prefix="rescue") as pool):
            def sink(cid: Cid, parts: Sequence[Bytes]) -> None:
                writer.put(cid, parts, hashed=True)

            batch = _RescueBatch()
            fresh_sources: dict[str, bool] = {}  # source → nothing had come from it before this run

            def earlier_work(image: Cid, label: str) -> tuple[int, Cid | None]:
                recorded = batch.recorded  # read first: a batch recorded meanwhile makes the answer stale
                fresh = fresh_sources.get(label)
                if fresh is None:
                    fresh = fresh_sources[label] = not self.index.has_works_from(label)
                if fresh and _run_key(str(image), label) not in batch.rescued:
                    return recorded, None  # certain, and a lookup per image cost 10% of an import
                rows = self.index.works_of_image(str(image), label)
                return recorded, cids.parse(rows[0].cid) if rows else None

            window: deque[Future[Prepared] | sources.SourceProblem] = deque()
            for item in items:
                if isinstance(item, sources.SourceProblem):
                    window.append(item)
                else:
                    window.append(pool.submit(prepare, item, profile, seed, now, source or item.source,
                                              sink, progress, earlier_work))
                while len(window) > 2 * workers:
                    yield from self._settle(window.popleft(), profile, source, batch, writer)
            while window:
                yield from self._settle(window.popleft(), profile, source, batch, writer)
            yield from self._record_rescued(batch, writer)

    def _settle(self, pending: Future[Prepared] | sources.SourceProblem, profile: Profile,
                source: str | None, batch: _RescueBatch, writer: BlockWriter) -> Iterator[Rescued]:
        if isinstance(pending, sources.SourceProblem):
            batch.results.append(Rescued(pending.display, "failed", error=pending.error))
        else:
            self._judge(pending.result(), profile, source, batch, writer)
        if len(batch.results) >= PIN_BATCH_FILES or time.monotonic() - batch.started > PIN_BATCH_SECONDS:
            yield from self._record_rescued(batch, writer)

    def _judge(self, prepared: Prepared, profile: Profile, source: str | None, batch: _RescueBatch,
               writer: BlockWriter) -> None:
        """Decide new or duplicate; queue what is new for writing and recording."""
        item = prepared.item
        if prepared.error is not None or prepared.link is None:
            message = prepared.error.message if prepared.error else "not read"
            batch.results.append(Rescued(item.display, "failed", error=message))
            return
        link, made, label = prepared.link, prepared.made, source or item.source
        if made is None:
            pinned = self.index.get_pin(str(link.cid)) is not None or str(link.cid) in batch.pinned
            if not pinned:
                batch.pins.append((str(link.cid), PurePosixPath(item.name).name, profile.name, link.filesize,
                                   prepared.dag_size, "file"))
                batch.pinned.add(str(link.cid))
            batch.results.append(Rescued(item.display, "duplicate" if pinned else "new", link.cid,
                                         link.filesize, duplicate_of=link.cid if pinned else None))
            for alone in prepared.sidecars_alone:
                self._judge(alone, profile, source, batch, writer)
            return
        if prepared.earlier is not None and prepared.earlier[0] == batch.recorded:
            earlier = prepared.earlier[1]  # asked by the worker, and no batch was recorded since
        else:
            rows = self.index.works_of_image(str(link.cid), label)
            earlier = cids.parse(rows[0].cid) if rows else None
        known = earlier or batch.images.get((str(link.cid), label))
        if known is None:
            for cid, parts in prepared.blocks:
                writer.put(cid, parts, hashed=True)
            name = PurePosixPath(item.name).name
            batch.pins.append((str(made.cid), name, profile.name, link.filesize, prepared.dag_size, "work"))
            batch.works.append((str(made.cid), str(link.cid), item.name, label,
                                made.extraction.generator.family))
            batch.entries.append(search.entry_of(str(made.cid), made.value))  # no need to read it back
            batch.images[(str(link.cid), label)] = made.cid
        work_cid = known or made.cid
        batch.results.append(Rescued(item.display, "duplicate" if known else "new", link.cid, link.filesize,
                                     work=work_cid, duplicate_of=known))
        for suffix, side in item.sidecars.items():
            side_link = made.sidecars[suffix]
            batch.results.append(Rescued(side.display, "sidecar", side_link.cid, side_link.filesize,
                                         work=work_cid, sidecar_of=item.display))

    def _record_rescued(self, batch: _RescueBatch, writer: BlockWriter) -> Iterator[Rescued]:
        writer.flush()  # every block durable before any pin or work that needs it is recorded
        self.index.add_pins(batch.pins)
        self.index.add_works(batch.works)
        self.index.add_gallery_entries(batch.entries)
        for image, label in batch.images:
            batch.rescued.add(_run_key(image, label))
        results = batch.results
        batch.reset()
        yield from results

    def work(self, cid: Cid) -> dict[str, dagcbor.Value]:
        """A work record, decoded (its block verified against the CID)."""
        return work_records.decode(self.store.get(cid))

    def verify_work(self, cid: Cid, progress: ProgressCallback | None = None) -> WorkCheck:
        """Check the record's signature and that every block it links to is present and intact."""
        record = self.work(cid)
        signer = work_records.verify_signature(record)
        blocks = 0
        for _ in dag.walk(cid, self.store.get):  # store.get re-hashes every block
            blocks += 1
            if progress is not None:
                progress(1)
        return WorkCheck(cid, signer, signer == self.public_key(), blocks)

    def restore(self, cid: Cid, folder: Path, *, overwrite: bool = False) -> list[Path]:
        """Write the work's image (byte for byte), params.json, workflow JSON, parameters.txt, sidecars."""
        record = self.work(cid)

        def read_file(file_cid: Cid) -> bytes:
            return b"".join(unixfs.read_file(file_cid, self.store.get))

        planned = list(restore_plan.files(record, read_file))  # everything read and verified first
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PathError(f"cannot create {folder}: {exc.strerror}") from None
        written: list[Path] = []
        for name, data in planned:
            target = folder / name
            if target.exists() and not overwrite:
                raise PathError(f"{target} exists; choose another folder or pass --force")
            temp = folder / f".{name}.artkeep-tmp"
            try:
                temp.write_bytes(data)
                os.replace(temp, target)
            except OSError as exc:
                temp.unlink(missing_ok=True)
                raise PathError(f"cannot write {target}: {exc.strerror}") from None
            written.append(target)
        return written

    # --- pinning service requests (the /psa API): queued → pinning → pinned | failed
    # A request is a row in the index; the pin it completes is a `pins` row of kind 'psa',
    # written in the same transaction as the status, so `artkeep ls` shows it at once.

    def add_pin_request(self, root: Cid, request: PinRequest, replacing: str | None = None) -> PinRequest:
        """Record a request (replacing another, if given); pin at once if the whole DAG is here already."""
        stored = self.index.add_pin_request(request, replacing)
        if stored is None:
            raise PinNotFound(f"no pin request {replacing!r}")
        log.info("pin request %s for %s (%s)", stored.requestid, root, stored.name or "no name")
        intake = self.receive_dag(root)
        try:
            if intake.next_wanted() is None:
                self.finish_pin_request(stored.requestid, intake)
        except NodeError as exc:  # e.g. a local block rotted: the worker meets it again and fails the request
            log.warning("pin request %s for %s: cannot pin from the store yet: %s", stored.requestid, root,
                        exc.message)
        return self.get_pin_request(stored.requestid)

    def get_pin_request(self, requestid: str) -> PinRequest:
        request = self.index.get_pin_request(requestid)
        if request is None:
            raise PinNotFound(f"no pin request {requestid!r}")
        return request

    def find_pin_requests(self, query: PinRequestQuery) -> tuple[int, list[PinRequest]]:
        return self.index.find_pin_requests(query)

    def unsettled_pin_requests(self) -> list[PinRequest]:
        return self.index.unsettled_pin_requests()

    def start_pin_request(self, requestid: str) -> bool:
        """Mark a request as being fetched; False if it was deleted or settled meanwhile."""
        return self.index.mark_pin_request(requestid, "pinning")

    def receive_dag(self, root: Cid) -> DagIntake:
        """An intake for root's blocks: verified and staged, kept only by finish_pin_request."""
        return DagIntake(self.store, root)

    def finish_pin_request(self, requestid: str, intake: DagIntake) -> bool:
        """Keep a complete intake's blocks and mark the request pinned; False (nothing kept) if it is gone.

        Under the shared gc lock, so gc never takes a block between the
        completeness check and the pin.
        """
        request = self.index.get_pin_request(requestid)
        if request is None:
            intake.abort()
            return False
        root = intake.root
        with self._lock(exclusive=False):
            new = intake.commit()
            absent = next(dag.missing(root, self.store.get, self.store.has), None)
            if absent is not None:
                raise BlockNotFound(f"cannot pin {root}: block {absent} is not in the store")
            size, dag_size = self._sizes(root)
            pin = (str(root), request.name or str(root), size, dag_size)
            settled = self.index.settle_pin_request(requestid, pin)
        log.info("pin request %s pinned %s (%d new blocks)", requestid, root, new)
        return settled

    def fail_pin_request(self, requestid: str, details: str) -> bool:
        settled = self.index.settle_pin_request(requestid, None, details)
        if settled:
            log.warning("pin request %s failed: %s", requestid, details)
        return settled

    def remove_pin_request(self, requestid: str) -> PinRequest:
        """Delete a request; its root stays pinned if a CLI pin or another live request holds it."""
        request = self.index.remove_pin_request(requestid)
        if request is None:
            raise PinNotFound(f"no pin request {requestid!r}")
        log.info("pin request %s for %s removed", requestid, request.root)
        return request

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

    # --- places and replication: where copies of each pin live (node.pusher moves the bytes)

    def add_place(self, spec: PlaceSpec) -> PlaceSpec:
        """Record a place (already checked by node.remotes.validate_spec); new copies are planned next."""
        self.index.add_place(spec)
        return spec

    def remove_place(self, name: str) -> None:
        if not self.index.remove_place(name):
            raise PlaceNotFound(f"no place named {name!r} (see `artkeep place ls`)")

    def places(self) -> list[PlaceSpec]:
        return self.index.places()

    def plan_copies(self, roots: Iterable[str] | None = None, now: float | None = None) -> int:
        """Queue pushes so every pin (or only `roots`) has `copies` live copies, and a copy to watch on
        each gateway place that should serve it; returns how many."""
        places = self.index.places()
        if not places:
            return 0
        pins = self.index.pins() if roots is None else [pin for pin in map(self.index.get_pin, roots) if pin]
        states = self.index.copy_states(None if roots is None else [pin.cid for pin in pins])
        used = self.index.place_usage()
        queued: list[tuple[str, str, int]] = []
        for pin in pins:
            for name in replication.places_to_add(self.copies, pin.kind, pin.dag_size, places,
                                                   states.get(pin.cid, {}), used):
                queued.append((pin.cid, name, pin.dag_size))
                used[name] = used.get(name, 0) + pin.dag_size
            have = states.get(pin.cid, {})
            queued.extend((pin.cid, place.name, pin.dag_size) for place in places
                          if replication.watches(place, pin.kind) and place.name not in have)
        return self.index.add_copies(queued, time.time() if now is None else now)

    def retry_copies(self, roots: Iterable[str]) -> int:
        """Give failing and corrupt copies of these roots a fresh start (after the user fixed the cause)."""
        return self.index.retry_copies(roots, time.time())

    def whereis(self, cid: Cid) -> replication.Whereabouts:
        """Every place's copy of a root, and how many were fetched back and re-hashed."""
        root = str(cid)
        kinds = {spec.name: spec.kind for spec in self.index.places()}
        now, policy = time.time(), self.audit_policy
        passed = self.index.passed_checks(root)
        views = tuple(replication.CopyView(row.place, kinds.get(row.place, "?"),
                                           "failing" if row.permanent else
                                           # proof older than the window: back to the place's word
                                           "claimed" if is_stale(row.state, row.verified, now,
                                                                 policy.verified_window) else row.state,
                                           row.last_check, row.verified, row.last_error,
                                           *replication.passed_at(row.place, passed))
                      for row in self.index.copies_of(root))
        verified = sum(1 for view in views if view.state == "verified" and replication.counts(view.kind))
        try:
            blocks: int | None = len(self.dag_blocks(cid))
        except NodeError:  # damaged here: the local audit heals it; the odds are still worth showing
            blocks = None
        detection = detection_text(policy.samples, policy.sampled_per_day, blocks)
        return replication.Whereabouts(root, self.copies, verified, views, detection)

    def replication_health(self) -> replication.Health:
        return replication.Health(
            works_below_target=(self.index.below_target(self.copies, time.time()
                                                        - self.audit_policy.verified_window)
                                if self.copies > 0 else 0),
            queue_depth=self.index.queue_depth(),
            failing_places=tuple(self.index.failing_places(self.audit_policy.failing_alert_after)),
            places=len(self.index.places()),
        )

    def recent_findings(self, limit: int) -> list[replication.FindingView]:
        return [replication.FindingView(row.cid, row.place, row.level, row.result, row.block, row.at)
                for row in self.index.recent_findings(limit)]

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

    # --- gallery: a search row per work (node.search) and thumbnails, for node.web.gallery and node.site

    def gallery_backfill(self, batch: int = 256) -> int:
        """List in the gallery up to `batch` works it does not list yet; return how many (0: none left).

        For works recorded before the gallery existed, or by a run that died
        between recording works and listing them. Call until it returns 0;
        each batch is one transaction, so it is safe to stop and rerun.
        """
        missing = self.index.works_without_gallery(batch)
        if missing:
            self.index.add_gallery_entries([self._gallery_entry(cid) for cid in missing])
            log.info("gallery: listed %d works recorded before it", len(missing))
        return len(missing)

    def _gallery_entry(self, work: str) -> search.GalleryEntry:
        try:
            return search.entry_of(work, self.work(cids.parse(work)))
        except NodeError as exc:  # record gone or rotten: list what the index knows, so the gap shows
            log.warning("gallery: work %s cannot be read: %s", work, exc.message)
            row = self.index.work_row(work)
            assert row is not None
            return search.GalleryEntry(work, row.image_cid, row.name, row.family, tool=None, model=None,
                                       seed=None, width=None, height=None, prompt="", negative_prompt="",
                                       loras=())

    def gallery_page(self, query: search.GalleryQuery) -> search.Page:
        return search.page_of(self.index.gallery_page(query), query.limit)

    def gallery_families(self) -> list[tuple[str, int]]:
        return self.index.gallery_families()

    def gallery_count(self) -> int:
        return self.index.gallery_count()

    def gallery_has_image(self, image: Cid) -> bool:
        return self.index.gallery_has_image(str(image))

    def count_works(self) -> int:
        return self.index.count_works()

    @cached_property
    def _thumbnails(self) -> Thumbnails:
        return Thumbnails(self.home / "cache" / "thumbnails")

    def thumbnail(self, image: Cid) -> Thumbnail:
        """The image's gallery thumbnail (made once, then read from the cache), or a placeholder."""
        def read_image() -> bytes:
            data = bytearray()
            for piece in self.cat(str(image)):
                data += piece
                if len(data) > MAX_IMAGE_BYTES:
                    raise TooLarge(f"image {image} is over {MAX_IMAGE_BYTES} bytes")
            return bytes(data)

        return self._thumbnails.get(image, read_image)

    # --- audit: what node.auditor needs beyond the methods above (the rules live in node.audit)

    def plan_repairs(self, now: float | None = None) -> int:
        """Queue copies on other places for every pin whose copies that count (verified within the
        window, or on their way) are fewer than the target; returns how many were queued."""
        places = self.index.places()
        if not places or self.copies <= 0:
            return 0
        now = time.time() if now is None else now
        window = self.audit_policy.verified_window
        used = self.index.place_usage()
        queued: list[tuple[str, str, int]] = []
        after = ""
        while page := self.index.pins_below(self.copies, now - window, after):
            for root, kind, dag_size, copies in page:
                counted = {row.place: not row.permanent and counts_toward_target(row.state, row.verified,
                                                                                  row.due, now, window)
                           for row in copies}
                for name in replication.places_to_repair(self.copies, kind, dag_size, places, counted, used):
                    queued.append((root, name, dag_size))
                    used[name] = used.get(name, 0) + dag_size
            after = page[-1][0]
        return self.index.add_copies(queued, now) if queued else 0

    def place_checks(self) -> list[tuple[str, int, int, float | None]]:
        """Per place: (name, copies there, copies verified within the window, its last check of any)."""
        return self.index.place_audit_summary(time.time() - self.audit_policy.verified_window)

    def local_damage(self, root: Cid) -> tuple[list[tuple[Cid, str]], int, int]:
        """Re-hash every block of a pin in the store: its blocks that are "missing" or "corrupt" here, and
        the blocks and bytes that passed. What lies under a bad inner block is unseen until it is healed."""
        bad: list[tuple[Cid, str]] = []

        def read(cid: Cid) -> bytes | None:
            try:
                return self.store.get(cid)
            except BlockNotFound:
                bad.append((cid, "missing"))
            except BlockMismatch:
                bad.append((cid, "corrupt"))
            return None

        whole = [len(block) for _, block in dag.walk_readable(root, read) if block is not None]
        return bad, len(whole), sum(whole)

    def heal_block(self, cid: Cid, data: bytes) -> bool:
        """Put back a block that is missing or damaged here, from bytes fetched elsewhere; False if it was
        whole after all. The bytes go through put_block's checks, so only the right bytes are ever kept."""
        if not cids.matches(cid, data):
            raise BlockMismatch(f"the bytes offered to heal {cid} do not match it")
        if not self.put_block(cid, data):  # a damaged file is replaced by the right bytes
            return False
        log.warning("healed block %s in the local store", cid, extra={"cid": str(cid)})
        return True
