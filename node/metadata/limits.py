"""The limits every container reader obeys, and the one state a file's reading accumulates.

Pure: bytes in, entries and problems out. A limit that is reached never raises;
it becomes a problem in words and the reader goes on with the next item.

The limits (all per file):

    MAX_FILE_BYTES       512 MiB  larger input is not walked at all (only its magic bytes are named)
    MAX_ENTRIES          4096     metadata entries kept; later ones are counted in a problem
    MAX_TEXT_BYTES       64 MiB   one entry's value (ComfyUI workflows reach several MB, some embed images)
    MAX_TOTAL_BYTES      256 MiB  all entry values together
    MAX_INFLATED_BYTES   256 MiB  all zlib/gzip output together (zTXt, compressed iTXt, stealth gzip)
    MAX_INFLATE_RATIO    100      output beyond 100× the compressed size is a bomb, once past
    INFLATE_RATIO_FLOOR  1 MiB    ... this floor (real JSON compresses 5–20×; Pillow's test bomb is 1000×)
    MAX_CHUNKS           100000   PNG chunks / RIFF chunks / JPEG segments walked
"""

from __future__ import annotations

import zlib

from node.metadata.raw import Container, RawEntry

MiB = 1 << 20

MAX_FILE_BYTES = 512 * MiB
MAX_ENTRIES = 4096
MAX_TEXT_BYTES = 64 * MiB
MAX_TOTAL_BYTES = 256 * MiB
MAX_INFLATED_BYTES = 256 * MiB
MAX_INFLATE_RATIO = 100
INFLATE_RATIO_FLOOR = 1 * MiB
MAX_CHUNKS = 100_000


class Reading:
    """What one file's reading has found so far: entries in file order, problems in words, budgets left."""

    def __init__(self) -> None:
        self.entries: list[RawEntry] = []
        self.problems: list[str] = []
        self.inflate_left = MAX_INFLATED_BYTES
        self.total_left = MAX_TOTAL_BYTES
        self.dropped = 0

    def add(self, source: str, key: str, value: str | bytes) -> None:
        """Keep one entry, unless a per-file limit says no (then count it for one problem at the end)."""
        size = len(value)
        if size > MAX_TEXT_BYTES:
            self.problem(f"{source} {key!r}: {size} bytes, more than {MAX_TEXT_BYTES} per entry; skipped")
            return
        if len(self.entries) >= MAX_ENTRIES or size > self.total_left:
            self.dropped += 1
            return
        self.total_left -= size
        self.entries.append(RawEntry(source, key, value))

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_ENTRIES:
            self.problems.append(text)

    def overrun(self, what: str, at: int, declared: int, remaining: int) -> None:
        """A length field that points past the end: the walk stops there, having kept what came before."""
        self.problem(f"{what} at offset {at} declares {declared} bytes but only {max(0, remaining)} remain; "
                     "the rest is not read")

    def inflate(self, what: str, compressed: bytes, *, gzip: bool = False) -> bytes | None:
        """zlib (or gzip) data inflated within the entry, ratio and file budgets; else None and a problem."""
        limit = min(MAX_TEXT_BYTES, self.inflate_left,
                    max(INFLATE_RATIO_FLOOR, MAX_INFLATE_RATIO * len(compressed)))
        inflater = zlib.decompressobj(wbits=31 if gzip else 15)
        try:
            out = inflater.decompress(compressed, limit + 1)
        except zlib.error as exc:
            self.problem(f"{what}: compressed data is damaged ({exc}); kept compressed")
            return None
        if len(out) > limit:
            reason = ("the bytes still allowed for this file" if limit == self.inflate_left
                      else "the limit per entry" if limit == MAX_TEXT_BYTES
                      else f"over {MAX_INFLATE_RATIO}× their size (a decompression bomb)")
            self.problem(f"{what}: {len(compressed)} compressed bytes inflate to more than {limit} bytes, "
                         f"{reason}; kept compressed")
            return None
        if not inflater.eof:
            self.problem(f"{what}: compressed data ends early; kept compressed")
            return None
        self.inflate_left -= len(out)
        return out

    def container(self, format: str | None, width: int | None = None, height: int | None = None,
                  frames: int = 1) -> Container:
        problems = list(self.problems)
        if self.dropped:
            problems.append(f"{self.dropped} further entries skipped: more than {MAX_ENTRIES} entries "
                            f"or {MAX_TOTAL_BYTES} bytes in one file")
        return Container(format=format, width=width, height=height, frames=frames,
                         entries=tuple(self.entries), problems=tuple(problems))


def utf8_or_latin1(raw: bytes) -> str:
    """Text stored in a Latin-1 field: real tools write UTF-8 there, so UTF-8 when it decodes."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def utf8_or_bytes(raw: bytes) -> str | bytes:
    """Text the format defines as UTF-8: the text if it decodes, else the exact bytes."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw
