"""Turn one source file into blocks, ready to be made durable: a work for an image, a plain file otherwise.

I/O edge (it reads the file). Runs on worker threads, several at once: image
blocks are kept in memory until the node decides the image is new (an image
already rescued from the same source is a duplicate and nothing of it is
written again); blocks of other files, which may be large, stream straight
into the shared writer.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from node import importer, unixfs, works
from node.blockstore import Bytes
from node.cid import Cid
from node.errors import InputError, NodeError, PathError
from node.profiles import Profile
from node.sources import SourceFile
from node.unixfs import BlockSink, DagLink

MAX_IMAGE_BYTES = 256 * 1024 * 1024  # read whole to extract metadata; a larger file is kept as a plain file
HEAD_BYTES = 16
WHOLE_READ_BYTES = 8 * 1024 * 1024  # a file on disk up to this size is read whole before its kind is known


# An earlier work of this image from this source, asked on the worker's thread so the node's
# own loop need not: (how many batches the node had recorded when asked, the work or None).
EarlierWork = Callable[[Cid, str], tuple[int, Cid | None]]


@dataclass
class Prepared:
    item: SourceFile
    link: DagLink | None = None  # the file's (image's) UnixFS root
    made: works.MadeWork | None = None  # set for images
    blocks: list[tuple[Cid, Sequence[Bytes]]] = field(default_factory=list)  # held back (images)
    dag_size: int = 0
    sidecars_alone: list[Prepared] = field(default_factory=list)  # sidecars of a file that is no image
    earlier: tuple[int, Cid | None] | None = None  # images: what earlier_work said
    error: NodeError | None = None


def prepare(item: SourceFile, profile: Profile, seed: bytes, now_iso: str, source: str,
            writer_sink: BlockSink, progress: Callable[[int], None] | None = None,
            earlier_work: EarlierWork | None = None) -> Prepared:
    prepared = Prepared(item)
    try:
        if item.path is not None and item.size <= WHOLE_READ_BYTES:
            data = _read_small_file(item.path, item.size)
            image = works.is_image(data[:HEAD_BYTES])
        else:
            with item.open() as handle:  # opened once: an image is read whole from here
                head = handle.read(HEAD_BYTES)
                image = works.is_image(head) and item.size <= MAX_IMAGE_BYTES
                data = _read_image(handle, head, item.size) if image else b""
        if image:
            if len(data) > MAX_IMAGE_BYTES:
                raise InputError(f"{item.display}: more than {MAX_IMAGE_BYTES} bytes")
            _prepare_work(prepared, data, profile, seed, now_iso, source)
            if earlier_work is not None and prepared.link is not None:
                prepared.earlier = earlier_work(prepared.link.cid, source)
        else:
            prepared.link = (_stream_plain(item, profile, writer_sink) if not data
                             else unixfs.build_bytes(data, profile, writer_sink))
            prepared.dag_size = prepared.link.tsize
            prepared.sidecars_alone = [prepare(side, profile, seed, now_iso, source, writer_sink)
                                       for side in item.sidecars.values()]
    except NodeError as exc:
        prepared.error = exc
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:  # damage inside an archive entry
        prepared.error = InputError(f"{item.display}: cannot be read ({exc})")
    if progress is not None:
        progress(item.size + sum(side.size for side in item.sidecars.values()))
    return prepared


def _read_small_file(path: Path, size: int) -> bytes:
    """A small file on disk, read whole: one read for what was listed, one to see the end.

    Fewer calls than a buffered file (which also seeks and asks whether it is
    a terminal), and each call hands the interpreter lock to another thread
    and waits to get it back. A file that grew since it was listed is read
    whole, up to one byte over MAX_IMAGE_BYTES.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise PathError(f"{path}: {exc.strerror}") from None
    try:
        pieces = [os.read(fd, size + 1)]
        have = len(pieces[0])
        while pieces[-1] and have <= MAX_IMAGE_BYTES:
            pieces.append(os.read(fd, min(importer.READ_BYTES, MAX_IMAGE_BYTES + 1 - have)))
            have += len(pieces[-1])
    finally:
        os.close(fd)
    return pieces[0] if len(pieces) <= 2 else b"".join(pieces)


def _read_image(handle: IO[bytes], head: bytes, size: int) -> bytes:
    """The whole image, at most MAX_IMAGE_BYTES + 1 bytes (one more than the limit, so a file over it shows).

    Asking for the size the listing gave, plus one byte, spares an allocation
    of the whole limit per file; a file that grew since is still read whole.
    """
    budget = MAX_IMAGE_BYTES + 1 - len(head)
    expected = max(size - len(head), 0)
    rest = handle.read(min(expected + 1, budget))
    if expected < len(rest) < budget:
        rest += handle.read(budget - len(rest))
    return head + rest


def _prepare_work(prepared: Prepared, data: bytes, profile: Profile, seed: bytes, now_iso: str,
                  source: str) -> None:
    item = prepared.item
    sidecars = {suffix: side.read(side.size) for suffix, side in item.sidecars.items()}
    seen: set[Cid] = set()

    def hold(cid: Cid, parts: Sequence[Bytes]) -> None:
        if cid not in seen:
            seen.add(cid)
            prepared.blocks.append((cid, parts))
            prepared.dag_size += sum(len(part) for part in parts)

    prepared.made = works.make(data, item.name, source, profile, seed, now_iso, hold, sidecars)
    prepared.link = prepared.made.image


def _stream_plain(item: SourceFile, profile: Profile, sink: BlockSink) -> DagLink:
    if item.path is not None:
        return importer.import_file(item.path, profile, sink)  # reads ahead on its own thread
    builder = unixfs.FileBuilder(profile, sink)
    with item.open() as handle:
        while True:
            chunk = importer.read_full(handle, profile.chunk_size)
            if chunk is None:
                break
            builder.add_chunk(chunk)
    return builder.finish()
