"""UnixFS import: the same CIDs and bytes as Kubo for every published vector and fixture."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path

import pytest
from conftest import IPFS_FIXTURES, chacha_stream

from node import car, cid, unixfs
from node.cid import Cid
from node.profiles import PROFILES, UNIXFS_V0_2015, UNIXFS_V1_2025, get_profile
from node.unixfs import DirEntry, NodeType

VECTORS = json.loads((IPFS_FIXTURES / "unixfs-profile-vectors.json").read_text())["vectors"]
FILE_VECTORS = [v for v in VECTORS if v["input"]["kind"] in ("literal", "bytes")]


def vector_bytes(vector: dict) -> bytes:  # type: ignore[type-arg]
    given = vector["input"]
    if given["kind"] == "literal":
        return str(given["text"]).encode()
    return chacha_stream(given["seed"], given["size"])


class MemoryStore:
    """Blocks kept in a dict, to read back what the builder produced."""

    def __init__(self) -> None:
        self.blocks: dict[Cid, bytes] = {}

    def put(self, block_cid: Cid, parts: object) -> None:
        data = b"".join(parts)  # type: ignore[call-overload]
        cid.verify(block_cid, data)
        self.blocks[block_cid] = data

    def get(self, block_cid: Cid) -> bytes:
        return self.blocks[block_cid]


def load_car(name: str) -> dict[Cid, bytes]:
    with open(IPFS_FIXTURES / "car" / name, "rb") as handle:
        return dict(car.read_car(handle))


@pytest.mark.parametrize("vector", FILE_VECTORS, ids=lambda v: v["id"])
def test_file_vectors_give_kubos_cid_and_root_block(vector: dict) -> None:  # type: ignore[type-arg]
    store = MemoryStore()
    data = vector_bytes(vector)
    link = unixfs.build_bytes(data, get_profile(vector["profile"]), store.put)
    assert str(link.cid) == vector["expected_cid"]
    if "expected_root_block_hex" in vector:
        assert store.blocks[link.cid].hex() == vector["expected_root_block_hex"]
    assert link.filesize == len(data)
    assert link.tsize == sum(len(block) for block in store.blocks.values()) or len(data) > 2**20


@pytest.mark.parametrize("vector", [v for v in VECTORS if v["input"]["kind"] == "directory"
                                    and v["input"]["count"] == 0], ids=lambda v: v["id"])
def test_empty_directory_vectors(vector: dict) -> None:  # type: ignore[type-arg]
    assert str(unixfs.directory([], get_profile(vector["profile"])).cid) == vector["expected_cid"]


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=lambda p: p.name)
@pytest.mark.parametrize("size", [0, 1, 1000, 256 * 1024 - 1, 256 * 1024, 256 * 1024 + 1,
                                  3 * 1024 * 1024 + 7])
def test_files_read_back_byte_for_byte(profile, size: int) -> None:  # type: ignore[no-untyped-def]
    store = MemoryStore()
    data = chacha_stream(f"read-back-{size}", size)
    link = unixfs.build_bytes(data, profile, store.put)
    assert b"".join(unixfs.read_file(link.cid, store.get)) == data
    node = unixfs.decode_node(link.cid, store.get(link.cid))
    assert unixfs.file_size(node) == size


def test_a_tree_deeper_than_one_level_is_balanced() -> None:
    tiny = dataclasses.replace(UNIXFS_V0_2015, chunk_size=4, file_max_links=3)
    store = MemoryStore()
    data = bytes(range(4 * 10))  # 10 leaves with 3 links per node: depth 3
    link = unixfs.build_bytes(data, tiny, store.put)
    assert b"".join(unixfs.read_file(link.cid, store.get)) == data

    def depths(node_cid: Cid, depth: int) -> set[int]:
        node = unixfs.decode_node(node_cid, store.get(node_cid))
        if not node.links:
            return {depth}
        return set().union(*(depths(child.hash, depth + 1) for child in node.links))

    assert depths(link.cid, 0) == {3}


def test_gateway_fixture_directory_with_256_byte_chunks_is_rebuilt_exactly() -> None:
    blocks = load_car("dir-with-files.car")
    # The fixture was made by Kubo with 256-byte chunks and raw leaves, CIDv1.
    profile = dataclasses.replace(UNIXFS_V1_2025, chunk_size=256, file_max_links=174)
    entries = []
    store = MemoryStore()
    root = cid.parse("bafybeihchr7vmgjaasntayyatmp5sv6xza57iy2h4xj7g46bpjij6yhrmy")
    for link in unixfs.decode_node(root, blocks[root]).links:
        content = b"".join(unixfs.read_file(link.hash, blocks.__getitem__))
        entries.append(DirEntry(str(link.name), unixfs.build_bytes(content, profile, store.put)))
    rebuilt = unixfs.directory(entries, profile, store.put)
    assert rebuilt.cid == root
    assert store.blocks == blocks


def test_symlink_fixture_is_rebuilt_exactly() -> None:
    blocks = load_car("symlink.car")
    foo = unixfs.build_bytes(b"content\n", UNIXFS_V0_2015)
    bar = unixfs.symlink("foo", UNIXFS_V0_2015)
    root = unixfs.directory([DirEntry("foo", foo), DirEntry("bar", bar)], UNIXFS_V0_2015)
    assert str(root.cid) == "QmWvY6FaqFMS89YAQ9NAPjVP4WZKA1qbHbicc9HeSKQTgt"
    assert set(blocks) == {root.cid, foo.cid, bar.cid}
    node = unixfs.decode_node(bar.cid, blocks[bar.cid])
    assert node.unixfs.type == NodeType.SYMLINK and node.unixfs.data == b"foo"


def test_wrap_with_directory_matches_kubo_add_w() -> None:
    kubo_cidv1 = get_profile("kubo-cidv1")
    ascii_txt = unixfs.build_bytes(b"hello application/vnd.ipld.raw\n", kubo_cidv1)
    inner = unixfs.directory([DirEntry("ascii.txt", ascii_txt)], kubo_cidv1)
    outer = unixfs.wrap("dir", inner, kubo_cidv1)
    assert str(outer.cid) == "bafybeie72edlprgtlwwctzljf6gkn2wnlrddqjbkxo3jomh4n7omwblxly"
    hello = b"hello world\n"
    assert str(unixfs.wrap("hello.txt", unixfs.build_bytes(hello, UNIXFS_V1_2025), UNIXFS_V1_2025).cid) == (
        "bafybeidhkumeonuwkebh2i4fc7o7lguehauradvlk57gzake6ggjsy372a")
    assert str(unixfs.wrap("hello.txt", unixfs.build_bytes(hello, UNIXFS_V0_2015), UNIXFS_V0_2015).cid) == (
        "QmfLiVjH2vujCVP2e75zyzBYmpcjktmDeU1YBz6Ct8BBsc")


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "nul\0"])
def test_directory_entry_names_that_unixfs_forbids_are_refused(name: str) -> None:
    from node.errors import UnixFsError

    with pytest.raises(UnixFsError):
        unixfs.directory([DirEntry(name, unixfs.build_bytes(b"x", UNIXFS_V1_2025))], UNIXFS_V1_2025)


def test_profiles_agree_with_the_shared_profile_table() -> None:
    table = json.loads((IPFS_FIXTURES.parents[1] / "spec" / "unixfs-cid-profiles.json").read_text())
    names = {"unixfs-v1-2025": "unixfs-v1-2025", "unixfs-v0-2015": "unixfs-v0-2015",
             "kubo-cidv1": "kubo-add-cid-version-1-without-profile"}
    for ours, theirs in names.items():
        spec = table["profiles"][theirs]
        profile = get_profile(ours)
        assert profile.cid_version == spec["cid_version"]
        assert profile.chunk_size == spec["chunk_size_bytes"]
        assert profile.raw_leaves == spec["raw_leaves"]
        assert profile.file_max_links == spec["file_max_links"]
        assert profile.hamt_fanout == spec["hamt_fanout"]
        assert profile.hamt_threshold == spec["hamt_threshold_bytes"]
        assert spec["hamt_size_estimation"].startswith(profile.hamt_size_estimation.split("-")[0])


def test_garbage_unixfs_data_raises_only_unixfs_errors() -> None:
    from hypothesis import given
    from hypothesis import strategies as st

    from node.errors import UnixFsError

    @given(st.binary(max_size=64))
    def check(data: bytes) -> None:
        with contextlib.suppress(UnixFsError):
            unixfs.decode_data(data)

    check()


def test_file_reader_refuses_a_directory(tmp_path: Path) -> None:
    from node.errors import UnixFsError

    store = MemoryStore()
    root = unixfs.directory([], UNIXFS_V1_2025, store.put)
    with pytest.raises(UnixFsError):
        list(unixfs.read_file(root.cid, store.get))
