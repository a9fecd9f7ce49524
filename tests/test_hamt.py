"""HAMT-sharded directories: Kubo's exact bytes when writing, strict checks when reading.

Vectors: ../shared/fixtures/ipfs/unixfs-profile-vectors.json (IPIP-499, from
kubo test/cli/cid_profiles_test.go) and the gateway-conformance CAR
single-layer-hamt-with-multi-block-files.car.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from hypothesis import given, settings
from hypothesis import strategies as st

from node import dagpb, hamt, unixfs
from node.car import read_car
from node.cid import DAG_PB, RAW, Cid, cid_of, parse
from node.dagpb import PBLink, PBNode
from node.errors import BlockNotFound, UnixFsError
from node.profiles import UNIXFS_V0_2015, UNIXFS_V1_2025, Profile, get_profile
from node.unixfs import Bytes, DagLink, DirEntry, NodeType, UnixFsData

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "ipfs"
HAMT_CAR = FIXTURES / "car" / "single-layer-hamt-with-multi-block-files.car"
HAMT_CAR_ROOT = "bafybeidbclfqleg2uojchspzd4bob56dqetqjsj27gy2cq3klkkgxtpn4i"
HAMT_CAR_FILE = "bafybeigcisqd7m5nf3qmuvjdbakl5bdnh4ocrmacaqkpuh77qjvggmt2sa"
NAME_ALPHABET = "abcdefghijklmnopqrstuvwxyz01234567890-_"

Blocks = dict[Cid, bytes]


def _vector(vector_id: str) -> dict[str, object]:
    vectors = json.loads((FIXTURES / "unixfs-profile-vectors.json").read_text())["vectors"]
    found: dict[str, object] = next(v for v in vectors if v["id"] == vector_id)
    return found


def _keystream(seed: str, size: int) -> bytes:
    # ChaCha20 (IETF), key = sha256(seed), zero nonce, counter 0: the recipe in the vectors file.
    key = hashlib.sha256(seed.encode()).digest()
    return Cipher(algorithms.ChaCha20(key, bytes(16)), None).encryptor().update(bytes(size))


def _names(seed: str, count: int, name_len: int, last_name_len: int) -> list[str]:
    stream = _keystream(seed, 1024 * 1024)
    names, pos = [], 0
    for i in range(count):
        length = last_name_len if i == count - 1 else name_len
        names.append("".join(NAME_ALPHABET[b % len(NAME_ALPHABET)] for b in stream[pos:pos + length]))
        pos += length
    return names


def _collect(blocks: Blocks) -> Callable[[Cid, Sequence[Bytes]], None]:
    def sink(cid: Cid, parts: Sequence[Bytes]) -> None:
        blocks[cid] = b"".join(bytes(part) for part in parts)
    return sink


# The directory vectors. Upstream (kubo cid_profiles_test.go), each directory holds
# `count` files containing b"x"; names per the recipe. Only the two v0 vectors are in
# unixfs-profile-vectors.json; the v1 ones are the same test's unixfsV12025 constants
# (also in ../shared/notes/ipfs-interop.md §1.10).
DIRECTORY_VECTORS = [
    # (id, profile, seed, count, name_len, last_name_len, expected CID, sharded)
    ("v0-dir-at-hamt-threshold", "unixfs-v0-2015", "hamt-unixfs-v0-2015", 4096, 30, 30,
     "QmX5GtRk3TSSEHtdrykgqm4eqMEn3n2XhfkFAis5fjyZmN", False),
    # independently_rederived: false upstream -- passing this is its first independent derivation.
    ("v0-dir-over-hamt-threshold", "unixfs-v0-2015", "hamt-unixfs-v0-2015", 4033, 31, 31,
     "QmeMiJzmhpJAUgynAcxTQYek5PPKgdv3qEvFsdV3XpVnvP", True),
    # Not in the vectors file, so never re-derived before either.
    ("v1-dir-at-hamt-threshold", "unixfs-v1-2025", "hamt-unixfs-v1-2025", 4766, 11, 21,
     "bafybeic3h7rwruealwxkacabdy45jivq2crwz6bufb5ljwupn36gicplx4", False),
    # Not in the vectors file; like the v0 HAMT vector, never re-derived before.
    ("v1-dir-over-hamt-threshold", "unixfs-v1-2025", "hamt-unixfs-v1-2025", 4766, 11, 22,
     "bafybeiegvuterwurhdtkikfhbxcldohmxp566vpjdofhzmnhv6o4freidu", True),
]


def test_v0_directory_vectors_match_the_vectors_file() -> None:
    for vector_id, _, seed, count, name_len, last_len, expected, _ in DIRECTORY_VECTORS[:2]:
        vector = _vector(vector_id)
        assert vector["expected_cid"] == expected
        assert vector["input"] == {"kind": "directory", "seed": seed, "count": count,
                                   "name_len": name_len, "last_name_len": last_len}
    assert _vector("v0-dir-over-hamt-threshold")["independently_rederived"] is False


@pytest.mark.parametrize(("vector_id", "profile_name", "seed", "count", "name_len", "last_name_len",
                          "expected", "sharded"), DIRECTORY_VECTORS, ids=[v[0] for v in DIRECTORY_VECTORS])
def test_directory_vector_gives_kubos_cid(vector_id: str, profile_name: str, seed: str, count: int,
                                          name_len: int, last_name_len: int, expected: str,
                                          sharded: bool) -> None:
    profile = get_profile(profile_name)
    blocks: Blocks = {}
    file_x = unixfs.build_bytes(b"x", profile, _collect(blocks))
    names = _names(seed, count, name_len, last_name_len)
    assert len(set(names)) == count
    root = unixfs.directory([DirEntry(name, file_x) for name in names], profile, _collect(blocks))

    assert str(root.cid) == expected
    node = unixfs.decode_node(root.cid, blocks[root.cid])
    assert node.unixfs.type == (NodeType.HAMT_SHARD if sharded else NodeType.DIRECTORY)
    if not sharded:
        # The threshold edge the vector sits on (links-bytes vs block-bytes).
        assert len(blocks[root.cid]) == (294916 if profile is UNIXFS_V0_2015 else 262144)
        return
    listed = dict(hamt.entries(root.cid, blocks.__getitem__))
    assert sorted(listed) == sorted(names)
    assert {link.hash for link in listed.values()} == {file_x.cid}
    assert hamt.lookup(root.cid, names[-1], blocks.__getitem__) == PBLink(file_x.cid, names[-1], file_x.tsize)
    assert hamt.lookup(root.cid, names[-1] + "_", blocks.__getitem__) is None


def _shard_stats(root: Cid, blocks: Blocks) -> tuple[int, int]:
    """(deepest shard level, number of shards whose bitfield dropped leading zero bytes)."""
    node = unixfs.decode_node(root, blocks[root])
    deepest, trimmed = 0, int(len(node.unixfs.data or b"") < 32)
    for link in node.links:
        if len(link.name or "") == 2:
            depth, count = _shard_stats(link.hash, blocks)
            deepest, trimmed = max(deepest, depth + 1), trimmed + count
    return deepest, trimmed


def test_hamt_vector_exercises_nested_collisions_and_trimmed_bitfields() -> None:
    # Shows the v0 HAMT vector really checks two boxo rules: a bucket holding two
    # entries becomes a child shard, recursively, and Bitfield.Bytes() drops
    # leading zero bytes. A CID match is only possible if both are right.
    blocks: Blocks = {}
    file_x = unixfs.build_bytes(b"x", UNIXFS_V0_2015)
    names = _names("hamt-unixfs-v0-2015", 4033, 31, 31)
    root = hamt.build([DirEntry(n, file_x) for n in names], UNIXFS_V0_2015, _collect(blocks))
    deepest, trimmed = _shard_stats(root.cid, blocks)
    assert deepest >= 2
    assert trimmed > 0


def test_shard_tree_does_not_depend_on_entry_order() -> None:
    file_x = unixfs.build_bytes(b"x", UNIXFS_V1_2025)
    entries = [DirEntry(f"{i}.png", file_x) for i in range(600)]
    first = hamt.build(entries, UNIXFS_V1_2025, None)
    random.Random(7).shuffle(entries)
    assert hamt.build(entries, UNIXFS_V1_2025, None) == first


def test_root_tsize_is_block_plus_link_tsizes() -> None:
    blocks: Blocks = {}
    file_x = unixfs.build_bytes(b"x", UNIXFS_V1_2025)
    root = hamt.build([DirEntry(f"{i}", file_x) for i in range(300)], UNIXFS_V1_2025, _collect(blocks))
    links = dagpb.decode(blocks[root.cid]).links
    assert root.tsize == len(blocks[root.cid]) + sum(link.tsize or 0 for link in links)
    assert root.filesize == 0


# --- the gateway-conformance HAMT fixture ----------------------------------

@pytest.fixture(scope="module")
def hamt_car() -> tuple[Cid, Blocks]:
    with HAMT_CAR.open("rb") as stream:
        car = read_car(stream)
        blocks = dict(car)
    assert [str(root) for root in car.roots] == [HAMT_CAR_ROOT]
    return car.roots[0], blocks


def test_fixture_hamt_lists_all_1000_entries(hamt_car: tuple[Cid, Blocks]) -> None:
    root, blocks = hamt_car
    listed = list(hamt.entries(root, blocks.__getitem__))
    assert sorted(name for name, _ in listed) == sorted(f"{i}.txt" for i in range(1, 1001))
    assert {(str(link.hash), link.tsize) for _, link in listed} == {(HAMT_CAR_FILE, 1271)}
    assert all(name == link.name for name, link in listed)


def test_fixture_hamt_lookups_hit_and_miss(hamt_car: tuple[Cid, Blocks]) -> None:
    root, blocks = hamt_car
    for name in ("1.txt", "470.txt", "742.txt", "1000.txt"):
        assert hamt.lookup(root, name, blocks.__getitem__) == PBLink(parse(HAMT_CAR_FILE), name, 1271)
    for name in ("0.txt", "1001.txt", "470.TXT", "470.tx", "6E470.txt"):
        assert hamt.lookup(root, name, blocks.__getitem__) is None


def test_rebuilding_the_fixture_entries_gives_its_root_cid(hamt_car: tuple[Cid, Blocks]) -> None:
    # The fixture is a forced shard (1000 short names are far below 256 KiB), so
    # hamt.build is called directly. With CIDv1 shards (unixfs-v1-2025, or plain
    # `--cid-version=1`) it reproduces the fixture's root and every shard block.
    root, blocks = hamt_car
    file_link = DagLink(parse(HAMT_CAR_FILE), 1271, 1026)
    entries = [DirEntry(f"{i}.txt", file_link) for i in range(1, 1001)]
    built: Blocks = {}
    rebuilt = hamt.build(entries, UNIXFS_V1_2025, _collect(built))
    assert rebuilt.cid == root
    assert len(built) == 237  # 243 blocks in the CAR = 237 shards + the file's root and 5 leaves
    assert all(blocks[cid] == block for cid, block in built.items())
    # Under CIDv0 shards the same tree gets other CIDs: the profile is part of the address.
    assert hamt.build(entries, UNIXFS_V0_2015, None).cid.version == 0


# --- refusing bad shards ---------------------------------------------------

def _shard(links: Sequence[PBLink], fanout: int = 256, bitfield: bytes | None = None,
           hash_type: int = 0x22) -> bytes:
    if bitfield is None:
        occupied = 0
        width = len(f"{fanout - 1:X}")
        for link in links:
            occupied |= 1 << int((link.name or "")[:width], 16)
        bitfield = occupied.to_bytes(fanout // 8, "big").lstrip(b"\0")
    data = UnixFsData(NodeType.HAMT_SHARD, data=bitfield, hash_type=hash_type, fanout=fanout)
    return dagpb.encode(PBNode(tuple(links), data.encode()))


def _store(*blocks: bytes) -> tuple[Cid, Blocks]:
    """Store dag-pb blocks; the first is the root."""
    store = {cid_of(block, DAG_PB): block for block in blocks}
    return cid_of(blocks[0], DAG_PB), store


FILE = cid_of(b"x", RAW)


def _value(name: str, fanout: int = 256, depth: int = 0) -> PBLink:
    bits = fanout.bit_length() - 1
    bucket = hamt.key_hash(name) >> (64 - (depth + 1) * bits) & (fanout - 1)
    return PBLink(FILE, f"{bucket:0{len(f'{fanout - 1:X}')}X}{name}", 1)


def _refused(root: Cid, store: Blocks, name: str = "a") -> None:
    with pytest.raises(UnixFsError):
        list(hamt.entries(root, store.__getitem__))
    with pytest.raises(UnixFsError):
        hamt.lookup(root, name, store.__getitem__)


def test_well_formed_handmade_shard_is_read() -> None:
    root, store = _store(_shard([_value("a")]))
    assert list(hamt.entries(root, store.__getitem__)) == [("a", PBLink(FILE, "a", 1))]


@pytest.mark.parametrize("fanout", [0, 4, 12, 100, 1000, 2048, 1 << 20])
def test_shard_with_invalid_fanout_is_refused(fanout: int) -> None:
    link = PBLink(FILE, "00a", 1)
    root, store = _store(_shard([link], fanout=fanout, bitfield=b"\x01"))
    _refused(root, store)


def test_shard_without_fanout_or_with_unknown_hash_is_refused() -> None:
    data = UnixFsData(NodeType.HAMT_SHARD, data=b"\x01", hash_type=0x22).encode()
    root, store = _store(dagpb.encode(PBNode((_value("a"),), data)))
    _refused(root, store)
    root, store = _store(_shard([_value("a")], hash_type=0x23))
    _refused(root, store)


@pytest.mark.parametrize("bitfield", [bytes(33), b"", b"\xff" * 32, b"\x01\x00"])
def test_shard_whose_bitfield_disagrees_with_its_links_is_refused(bitfield: bytes) -> None:
    root, store = _store(_shard([_value("a")], bitfield=bitfield))
    _refused(root, store)


def _name_in_bucket_with_letter() -> str:
    # A name whose bucket prints with a hex letter, so a lower-case prefix differs.
    return next(n for n in (f"n{i}" for i in range(1000)) if not (_value(n).name or "")[:2].isdigit())


def test_link_named_for_another_bucket_than_its_bitfield_slot_is_refused() -> None:
    name = _name_in_bucket_with_letter()
    right = _value(name).name or ""
    bucket = int(right[:2], 16)
    bitfield = (1 << bucket).to_bytes(32, "big").lstrip(b"\0")
    for label in (f"{(bucket + 1) % 256:02X}{name}", right[:2].lower() + name, name, "", None):
        root, store = _store(_shard([PBLink(FILE, label, 1)], bitfield=bitfield))
        _refused(root, store, name)


def test_entry_whose_name_hashes_to_another_bucket_is_refused() -> None:
    bucket = int((_value("a").name or "")[:2], 16)
    away = (bucket + 1) % 256  # bitfield and prefix agree, the name's hash does not
    root, store = _store(_shard([PBLink(FILE, f"{away:02X}a", 1)]))
    with pytest.raises(UnixFsError):
        list(hamt.entries(root, store.__getitem__))


def test_entry_in_a_child_shard_under_the_wrong_path_is_refused() -> None:
    # Right level-1 bucket for "a", but its child shard hangs under a level-0 bucket "a" does not hash to.
    child = _shard([_value("a", depth=1)])
    away = (int((_value("a").name or "")[:2], 16) + 1) % 256
    root, store = _store(_shard([PBLink(cid_of(child, DAG_PB), f"{away:02X}", 10)]), child)
    with pytest.raises(UnixFsError):
        list(hamt.entries(root, store.__getitem__))


def test_shard_chain_deeper_than_the_hash_is_refused() -> None:
    # Eight levels of 8 bits use up the 64-bit hash; a shard at a ninth level cannot exist.
    name = "deep"
    hash_bytes = hamt.key_hash(name).to_bytes(8, "big")
    blocks = [_shard([PBLink(FILE, f"00{name}", 1)])]  # the impossible level-8 shard
    for depth in reversed(range(8)):  # each level links on the name's own hash byte, as lookup walks
        child = cid_of(blocks[-1], DAG_PB)
        blocks.append(_shard([PBLink(child, f"{hash_bytes[depth]:02X}", 1)]))
    root, store = _store(*reversed(blocks))
    _refused(root, store, name)


def test_child_shard_that_is_empty_or_of_another_fanout_is_refused() -> None:
    empty = _shard([])
    root, store = _store(_shard([PBLink(cid_of(empty, DAG_PB), "00", 1)]), empty)
    with pytest.raises(UnixFsError):
        list(hamt.entries(root, store.__getitem__))
    narrow = _shard([_value("a", fanout=8, depth=1)], fanout=8)
    home = int((_value("a").name or "")[:2], 16)
    root, store = _store(_shard([PBLink(cid_of(narrow, DAG_PB), f"{home:02X}", 1)]), narrow)
    _refused(root, store)


@pytest.mark.parametrize("name", ["..", ".", "a/b", "nul\0"])
def test_entry_with_an_unsafe_name_is_refused(name: str) -> None:
    root, store = _store(_shard([_value(name)]))
    with pytest.raises(UnixFsError):
        list(hamt.entries(root, store.__getitem__))


def test_root_that_is_not_a_shard_is_refused() -> None:
    basic = dagpb.encode(PBNode((PBLink(FILE, "a", 1),), UnixFsData(NodeType.DIRECTORY).encode()))
    for root, store in (_store(basic), _store(b"\xff\xff"), _store(b"")):
        _refused(root, store)
    raw_store = {FILE: b"x"}
    _refused(FILE, raw_store)


def test_build_refuses_bad_fanout_and_duplicate_names() -> None:
    file_x = unixfs.build_bytes(b"x", UNIXFS_V1_2025)
    bad: Profile = dataclasses.replace(UNIXFS_V1_2025, hamt_fanout=100)
    with pytest.raises(UnixFsError):
        hamt.build([DirEntry("a", file_x)], bad, None)
    with pytest.raises(UnixFsError):
        hamt.build([DirEntry("a", file_x), DirEntry("a", file_x)], UNIXFS_V1_2025, None)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_corrupted_fixture_shards_raise_only_unixfs_error(data: st.DataObject) -> None:
    with HAMT_CAR.open("rb") as stream:
        blocks = dict(read_car(stream))
    root = parse(HAMT_CAR_ROOT)
    shard_00 = parse("bafybeiaebmuestgbpqhkkbrwl2qtjtvs3whkmp2trkbkimuod4yv7oygni")
    target = data.draw(st.sampled_from([root, shard_00]))
    block = bytearray(blocks[target])
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(block) - 1))
        block[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        del block[data.draw(st.integers(0, len(block) - 1)):]
    blocks[target] = bytes(block)  # the getter hands back the damaged bytes under the old CID

    def get_block(cid: Cid) -> bytes:
        if cid not in blocks:  # a damaged Hash can name a block the CAR does not hold
            raise BlockNotFound(str(cid))
        return blocks[cid]

    with contextlib.suppress(UnixFsError, BlockNotFound):
        list(hamt.entries(root, get_block))
    with contextlib.suppress(UnixFsError, BlockNotFound):
        hamt.lookup(root, "470.txt", get_block)
