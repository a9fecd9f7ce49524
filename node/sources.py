"""What a bulk rescue reads: files in folders and entries of zip archives, with their sidecars.

I/O edge. Zip archives are read in place, entry by entry (never extracted to
disk), within limits that stop zip bombs: a cap on entries, on each entry's
size and compression ratio, and on an archive's total. Entry names with `..`,
absolute paths, symlinks and encrypted entries are refused, each with its
own error; the rest of the archive goes on. Nested archives are kept as
plain files, not opened.
"""

from __future__ import annotations

import stat
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from node import importer
from node.errors import InputError, PathError

MAX_ZIP_ENTRIES = 1_000_000
MAX_ENTRY_BYTES = 64 * 1024**3  # one file inside an archive
MAX_ARCHIVE_BYTES = 4 * 1024**4  # everything inside one archive, uncompressed
MAX_RATIO = 200  # uncompressed / compressed, for entries over RATIO_FLOOR; real images compress < 5:1
RATIO_FLOOR = 1024 * 1024
SIDECAR_SUFFIXES = (".txt", ".json", ".yaml", ".yml", ".caption")
MAX_SIDECAR_BYTES = 16 * 1024 * 1024


@dataclass
class SourceFile:
    """One file to rescue: where it is, its name inside its source, and how to read it."""

    display: str  # for messages and the report: a path, or "archive.zip:inner/name.png"
    name: str  # its path inside the source, kept as provenance
    source: str  # the folder or archive it came from
    size: int
    open: Callable[[], IO[bytes]]
    path: Path | None = None  # set for a file on disk (not inside an archive)
    sidecars: dict[str, SourceFile] = field(default_factory=dict)  # suffix → the sidecar file

    def read(self, limit: int) -> bytes:
        if self.size > limit:
            raise InputError(f"{self.display}: {self.size} bytes is over the {limit}-byte limit")
        with self.open() as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise InputError(f"{self.display}: more than {limit} bytes")
        return data


@dataclass(frozen=True, slots=True)
class SourceProblem:
    display: str
    error: str


Item = SourceFile | SourceProblem


def walk(paths: list[Path], *, archives: bool = True) -> Iterator[Item]:
    """Every file under paths, sidecars attached; with archives, .zip files are read entry by entry."""
    for path in paths:
        if archives and path.suffix.lower() == ".zip" and path.is_file():
            yield from _zip_items(path)
        else:
            yield from _folder_items(path)


def _folder_items(root: Path) -> Iterator[Item]:
    problems: list[SourceProblem] = []
    files = list(importer.iter_files([root], lambda path, message: problems.append(
        SourceProblem(str(path), message))))
    yield from problems
    base = root if root.is_dir() else root.parent
    items = []
    folders: dict[Path, str] = {}  # a folder's resolved path: resolve() costs a stat per component
    for path in files:
        try:
            size = path.stat().st_size
        except OSError as exc:
            yield SourceProblem(str(path), f"{path}: {exc.strerror}")
            continue
        name = path.relative_to(base).as_posix() if path.is_relative_to(base) else path.name
        # The source of a file on disk is its folder, so pinning a file or its folder agrees.
        if path.is_symlink():  # its source is where its target lives
            source = str(path.resolve().parent)
        else:
            if path.parent not in folders:
                folders[path.parent] = str(path.parent.resolve())
            source = folders[path.parent]
        items.append(SourceFile(str(path), name, source, size, _opener(path), path))
    yield from _attach_sidecars(items)


def _opener(path: Path) -> Callable[[], IO[bytes]]:
    def open_file() -> IO[bytes]:
        try:
            return path.open("rb")
        except OSError as exc:
            raise PathError(f"{path}: {exc.strerror}") from None
    return open_file


def _zip_items(path: Path) -> Iterator[Item]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        yield SourceProblem(str(path), f"{path}: not a readable zip archive ({exc})")
        return
    infos = archive.infolist()
    if len(infos) > MAX_ZIP_ENTRIES:
        yield SourceProblem(str(path), f"{path}: {len(infos)} entries, over the limit of {MAX_ZIP_ENTRIES}")
        return
    source = str(path.resolve())
    total = 0
    items = []
    for info in infos:
        display = f"{path}:{info.filename}"
        problem = _entry_problem(info)
        if problem == "directory":
            continue
        if problem is None and total + info.file_size > MAX_ARCHIVE_BYTES:
            problem = f"the archive holds more than {MAX_ARCHIVE_BYTES} bytes; the rest is not read"
        if problem is not None:
            yield SourceProblem(display, f"{display}: {problem}")
            continue
        total += info.file_size
        items.append(SourceFile(display, info.filename, source, info.file_size, _zip_opener(archive, info)))
    yield from _attach_sidecars(items)


def _entry_problem(info: zipfile.ZipInfo) -> str | None:
    """Why an entry must not be read, "directory" for folders, or None."""
    if info.is_dir():
        return "directory"
    name = PurePosixPath(info.filename.replace("\\", "/"))
    if name.is_absolute() or info.filename.startswith(("/", "\\")) or ":" in name.parts[0]:
        return "absolute path in the archive; refused"
    if ".." in name.parts:
        return "path with '..' in the archive; refused"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link in the archive; refused"
    if info.flag_bits & 0x1:
        return "encrypted entry; cannot be read"
    if info.file_size > MAX_ENTRY_BYTES:
        return f"{info.file_size} bytes, over the per-file limit of {MAX_ENTRY_BYTES}"
    if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        return (f"compression ratio {info.file_size // max(info.compress_size, 1)}:1 looks like a zip bomb; "
                "refused")
    return None


def _zip_opener(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], IO[bytes]]:
    def open_entry() -> IO[bytes]:
        try:
            return archive.open(info)  # streams; stops at the declared size and checks the CRC at the end
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError) as exc:
            raise InputError(f"{info.filename}: cannot be read from the archive ({exc})") from None
    return open_entry


def _attach_sidecars(items: list[SourceFile]) -> Iterator[SourceFile]:
    """Files next to another file with the same stem and a sidecar suffix go with it, not alone."""
    by_stem: dict[tuple[str, str], SourceFile] = {}
    for item in items:
        name = PurePosixPath(item.name)
        if name.suffix.lower() not in SIDECAR_SUFFIXES:
            by_stem.setdefault((str(name.parent), name.stem), item)
    for item in items:
        name = PurePosixPath(item.name)
        is_sidecar = name.suffix.lower() in SIDECAR_SUFFIXES
        owner = by_stem.get((str(name.parent), name.stem)) if is_sidecar else None
        if owner is not None and item.size <= MAX_SIDECAR_BYTES:
            owner.sidecars[name.suffix.lower()] = item
    for item in items:
        name = PurePosixPath(item.name)
        owner = by_stem.get((str(name.parent), name.stem))
        if owner is not None and owner is not item and owner.sidecars.get(name.suffix.lower()) is item:
            continue  # reported with its image
        yield item
