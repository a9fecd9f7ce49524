"""CID profiles: the UnixFS import parameters that decide a CID.

Pure. The values mirror IPIP-499 and Kubo (see ../shared/spec/unixfs-cid-profiles.json;
a test keeps them in step). Two imports of the same bytes under the same
profile give the same CID, here and in Kubo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from node.errors import UnknownProfile


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    cid_version: int
    chunk_size: int
    raw_leaves: bool
    file_max_links: int
    hamt_fanout: int
    hamt_threshold: int
    # links-bytes: sum of len(name) + len(CID bytes) per link (Kubo legacy);
    # block-bytes: the exact serialized size of the basic directory block.
    hamt_size_estimation: Literal["links-bytes", "block-bytes"]
    summary: str


UNIXFS_V1_2025: Final = Profile(
    name="unixfs-v1-2025",
    cid_version=1,
    chunk_size=1024 * 1024,
    raw_leaves=True,
    file_max_links=1024,
    hamt_fanout=256,
    hamt_threshold=256 * 1024,
    hamt_size_estimation="block-bytes",
    summary="CIDv1, raw leaves, 1 MiB chunks, 1024 links (IPIP-499; the default)",
)
UNIXFS_V0_2015: Final = Profile(
    name="unixfs-v0-2015",
    cid_version=0,
    chunk_size=256 * 1024,
    raw_leaves=False,
    file_max_links=174,
    hamt_fanout=256,
    hamt_threshold=256 * 1024,
    hamt_size_estimation="links-bytes",
    summary="CIDv0, dag-pb leaves, 256 KiB chunks, 174 links (Kubo's default)",
)
KUBO_CIDV1: Final = Profile(
    name="kubo-cidv1",
    cid_version=1,
    chunk_size=256 * 1024,
    raw_leaves=True,
    file_max_links=174,
    hamt_fanout=256,
    hamt_threshold=256 * 1024,
    hamt_size_estimation="links-bytes",
    summary="CIDv1, raw leaves, 256 KiB chunks, 174 links (`ipfs add --cid-version=1`)",
)

PROFILES: Final = {p.name: p for p in (UNIXFS_V1_2025, UNIXFS_V0_2015, KUBO_CIDV1)}
ALIASES: Final = {"legacy-cid-v0": "unixfs-v0-2015"}
DEFAULT_PROFILE: Final = UNIXFS_V1_2025.name


def get_profile(name: str) -> Profile:
    profile = PROFILES.get(ALIASES.get(name, name))
    if profile is None:
        raise UnknownProfile(f"unknown CID profile {name!r}; choose one of {', '.join(PROFILES)}")
    return profile
