"""Make a work from an image's bytes: UnixFS blocks, extracted metadata and a signed record.

Pure: bytes, a key seed and a time string in; blocks go out through a sink
callback (which the caller makes durable) and a MadeWork comes back. The
same image bytes always give the same image CID, whatever the file name or
source; the record differs per import because it says where and when.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from node import unixfs, work
from node.cid import Cid
from node.dagcbor import Value
from node.metadata import Extraction, extract
from node.metadata.container import sniff
from node.profiles import Profile
from node.unixfs import BlockSink, DagLink

MEDIA_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


@dataclass(frozen=True, slots=True)
class MadeWork:
    image: DagLink
    cid: Cid  # the signed record's CID: the work's identity
    sidecars: dict[str, DagLink]  # suffix → the sidecar file stored with the work
    record: bytes  # the record block (already given to the sink)
    extraction: Extraction
    value: Mapping[str, Value]  # the same record as data: what decoding the block gives back


def is_image(head: bytes) -> bool:
    """Whether the first bytes of a file name a format we read metadata from (never the extension)."""
    return sniff(head) is not None


def make(data: bytes, file_name: str, source: str | None, profile: Profile, seed: bytes, now_iso: str,
         sink: BlockSink, sidecars: Mapping[str, bytes] | None = None) -> MadeWork:
    """Store the image and its sidecars as UnixFS files, extract, sign; the record block goes to sink too."""
    image = unixfs.build_bytes(data, profile, sink)
    extraction = extract(data, sidecars=sidecars)
    container = extraction.container

    def store_blob(blob: bytes) -> Cid:
        return unixfs.build_bytes(blob, profile, sink).cid

    side_links = {suffix: unixfs.build_bytes(blob, profile, sink)
                  for suffix, blob in sorted((sidecars or {}).items())}
    stem = PurePosixPath(file_name).stem
    side = [work.Sidecar(stem + suffix, link.cid, link.filesize) for suffix, link in side_links.items()]
    record = work.build(
        work.ImageInfo(image.cid, len(data), container.format, container.width, container.height,
                       MEDIA_TYPES.get(container.format or "")),
        extraction.generator.to_json(), extraction.params.to_json(),
        [entry for entry in container.entries if entry.source != "sidecar"],
        work.Provenance(file_name, source, now_iso), store_blob, sidecars=side, c2pa=extraction.c2pa,
    )
    signed, cid, block = work.sign_and_encode(record, seed)
    sink(cid, [block])
    return MadeWork(image, cid, side_links, block, extraction, signed)
