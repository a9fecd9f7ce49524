"""CAR files: published CARs read exactly, broken ones refused cleanly, our writer byte-exact."""

from __future__ import annotations

import contextlib
import io
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from conftest import IPFS_FIXTURES
from hypothesis import given
from hypothesis import strategies as st

from node import cid, dagcbor, varint
from node.car import (
    MAX_BLOCK_SIZE,
    CarWriter,
    encode_header,
    encode_section,
    read_car,
)
from node.cid import DAG_CBOR, DAG_PB, RAW, Cid
from node.errors import BlockMismatch, BlockTooLarge, CarError

MANIFEST = json.loads((IPFS_FIXTURES / "manifest.json").read_text())
VALID_CARS = [entry for entry in MANIFEST["files"] if "car_facts" in entry]
CARV1_FILES = [entry["file"] for entry in VALID_CARS if entry["car_facts"]["car_version"] == 1]
INVALID_CARS = sorted((IPFS_FIXTURES / "car" / "invalid").glob("*.car"))
SMALL_CAR = "car/gateway-raw-block.car"
CARV2 = next(entry for entry in VALID_CARS if entry["car_facts"]["car_version"] == 2)

car_errors = (CarError, BlockTooLarge, BlockMismatch)


def fixture_bytes(name: str) -> bytes:
    return (IPFS_FIXTURES / name).read_bytes()


def read_all(data: bytes, **options: Any) -> tuple[list[Cid], list[tuple[Cid, bytes]]]:
    reader = read_car(io.BytesIO(data), **options)
    return reader.roots, list(reader)


def write_car(roots: list[Cid], blocks: list[tuple[Cid, bytes]]) -> bytes:
    out = io.BytesIO()
    writer = CarWriter(out.write, roots)
    for block_cid, block in blocks:
        writer.add(block_cid, block)
    return out.getvalue()


def header_with(fields: dict[str, dagcbor.Value]) -> bytes:
    header = dagcbor.encode(fields)
    return varint.encode(len(header)) + header


def test_fixture_files_are_present() -> None:
    assert len(VALID_CARS) >= 9
    assert len(INVALID_CARS) >= 2


@pytest.mark.parametrize("entry", VALID_CARS, ids=lambda entry: entry["file"])
def test_published_cars_read_with_their_roots_and_blocks_in_file_order(entry: dict[str, Any]) -> None:
    reader = read_car(io.BytesIO(fixture_bytes(entry["file"])))
    assert reader.version == entry["car_facts"]["car_version"]
    assert [str(root) for root in reader.roots] == entry["expected_root_cids"]
    assert [str(block_cid) for block_cid, _ in reader] == entry["car_facts"]["block_cids_in_file_order"]


@pytest.mark.parametrize("path", INVALID_CARS, ids=lambda path: path.name)
def test_published_invalid_cars_are_refused(path: Path) -> None:
    with pytest.raises(CarError):
        read_all(path.read_bytes())


def test_a_flipped_byte_in_a_block_is_refused_naming_the_block() -> None:
    data = bytearray(fixture_bytes(SMALL_CAR))
    data[-1] ^= 0x01  # the last byte belongs to the last block, the raw file
    last_cid = "bafkreihhpc5y2pqvl5rbe5uuyhqjouybfs3rvlmisccgzue2kkt5zq6upq"
    with pytest.raises(BlockMismatch, match=last_cid):
        read_all(bytes(data))
    _, blocks = read_all(bytes(data), verify=False)
    assert str(blocks[-1][0]) == last_cid


def section_ends(data: bytes) -> list[int]:
    """Byte offsets where the header and each section of a valid CARv1 end."""
    roots, blocks = read_all(data)
    ends = [len(encode_header(roots))]
    for block_cid, block in blocks:
        ends.append(ends[-1] + len(encode_section(block_cid, block)))
    assert ends[-1] == len(data)
    return ends


def test_a_car_cut_anywhere_is_refused_unless_cut_between_sections() -> None:
    data = fixture_bytes(SMALL_CAR)
    _, blocks = read_all(data)
    ends = section_ends(data)
    for cut in range(len(data)):
        if cut in ends:
            # CARv1 has no block count: a cut between sections is a shorter valid CAR,
            # which a reader can only notice by walking the DAG.
            assert read_all(data[:cut])[1] == blocks[:ends.index(cut)]
        else:
            with pytest.raises(CarError, match="truncated"):
                read_all(data[:cut])


def test_a_carv2_cut_anywhere_in_its_payload_is_refused() -> None:
    data = fixture_bytes(CARV2["file"])
    facts = CARV2["car_facts"]["carv2_header"]
    payload_end = facts["data_offset"] + facts["data_size"]
    for cut in range(payload_end):
        with pytest.raises(CarError):
            read_all(data[:cut])
    # The index after the payload is never read.
    assert len(read_all(data[:payload_end])[1]) == CARV2["car_facts"]["block_count"]


@pytest.mark.parametrize("tail", [
    varint.encode(2**63 - 1),  # the header claims 8 EiB
    # a valid header, then a section claiming 8 EiB, then a CID and a few bytes
    header_with({"roots": [], "version": 1}) + varint.encode(2**63 - 1) + fixture_bytes(SMALL_CAR)[60:100],
], ids=["header length", "section length"])
def test_a_huge_length_varint_is_refused_without_allocating_it(tail: bytes) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(CarError):
            read_all(tail)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


def test_blocks_over_the_size_limit_are_refused() -> None:
    big = bytes(MAX_BLOCK_SIZE + 1)
    big_cid = cid.cid_of(big, RAW)
    with pytest.raises(BlockTooLarge, match=str(big_cid)):
        read_all(write_car([big_cid], [(big_cid, big)]))
    small = b"x" * 100
    small_cid = cid.cid_of(small, RAW)
    small_car = write_car([small_cid], [(small_cid, small)])
    with pytest.raises(BlockTooLarge):
        read_all(small_car, max_block_size=99)
    assert read_all(small_car, max_block_size=100)[1] == [(small_cid, small)]


@pytest.mark.parametrize(("data", "why"), [
    (b"", "truncated"),
    (header_with({"roots": [], "version": 42}), "version 42"),
    (header_with({"roots": [], "version": True}), "version True"),
    (header_with({"version": 42}), "version 42"),
    (header_with({"version": 1}), "exactly roots"),
    (header_with({"roots": [], "version": 1, "extra": 0}), "exactly roots"),
    (header_with({"roots": {}, "version": 1}), "exactly roots"),
    (header_with({"roots": ["bafy"], "version": 1}), "must all be CIDs"),
    (b"\x01\x80", "not a map"),
    (b"\x00", "claims 0 bytes"),
    (b"\x02\xa0\x00", "not valid DAG-CBOR"),
    (varint.encode(2_000_000) + bytes(10), "limit"),
    (header_with({"roots": [], "version": 1}) + b"\x00", "empty"),
    (header_with({"roots": [], "version": 1}) + b"\x05\x02\x00\x00\x00\x00", "CID version 2"),
    (header_with({"roots": [], "version": 1}) + b"\x04\x01\x55\x12\x20", "truncated"),
    (header_with({"roots": [], "version": 1}) + b"\x05\x01\x55\x99\x01\x00", "unsupported hash"),
    (header_with({"roots": [], "version": 1}) + b"\x05\x01\x55\x00\xff\x01", "digest"),
    (header_with({"roots": [], "version": 1}) + b"\x02\x01\x55\x00\x00", "shorter than its CID"),
    (header_with({"roots": [], "version": 1}) + b"\x80\x00", "varint"),
])
def test_malformed_cars_are_refused_saying_why(data: bytes, why: str) -> None:
    with pytest.raises(CarError, match=why):
        read_all(data)


def test_a_header_without_roots_is_accepted_on_read() -> None:
    assert read_all(header_with({"roots": [], "version": 1})) == ([], [])


def carv2(payload: bytes, data_offset: int = 51, data_size: int | None = None) -> bytes:
    size = len(payload) if data_size is None else data_size
    header = bytes(16) + data_offset.to_bytes(8, "little") + size.to_bytes(8, "little") + bytes(8)
    return bytes.fromhex("0aa16776657273696f6e02") + header + bytes(max(0, data_offset - 51)) + payload


def test_carv2_payload_is_found_at_its_data_offset() -> None:
    payload = fixture_bytes(SMALL_CAR)
    roots, blocks = read_all(payload)
    assert read_all(carv2(payload, data_offset=200) + b"index bytes") == (roots, blocks)


@pytest.mark.parametrize(("data", "why"), [
    (carv2(b"", data_offset=40), "inside the CARv2 header"),
    (carv2(fixture_bytes(SMALL_CAR), data_size=100), "past the end of the CARv2 payload"),
    (carv2(carv2(fixture_bytes(SMALL_CAR))), "not a CARv1"),
    (carv2(fixture_bytes(SMALL_CAR))[:40], "truncated"),
])
def test_malformed_carv2_is_refused(data: bytes, why: str) -> None:
    with pytest.raises(CarError, match=why):
        read_all(data)


@pytest.mark.parametrize("name", CARV1_FILES)
def test_our_writer_reproduces_published_cars_byte_for_byte(name: str) -> None:
    data = fixture_bytes(name)
    roots, blocks = read_all(data)
    assert write_car(roots, blocks) == data


def test_our_writer_reproduces_the_carv2_payload_byte_for_byte() -> None:
    data = fixture_bytes(CARV2["file"])
    facts = CARV2["car_facts"]["carv2_header"]
    roots, blocks = read_all(data)
    assert write_car(roots, blocks) == data[facts["data_offset"]:facts["data_offset"] + facts["data_size"]]


def test_one_root_header_has_the_layout_from_the_spec() -> None:
    v1 = cid.parse("bafybeie72edlprgtlwwctzljf6gkn2wnlrddqjbkxo3jomh4n7omwblxly")
    header = encode_header([v1])
    assert header[:11] == bytes.fromhex("3aa265726f6f747381d82a")
    assert header[11:14] == bytes.fromhex("582500") and header[14:50] == bytes(v1)
    assert header[50:] == bytes.fromhex("6776657273696f6e01")
    v0 = cid.parse("QmWvY6FaqFMS89YAQ9NAPjVP4WZKA1qbHbicc9HeSKQTgt")
    assert encode_header([v0])[:1] == b"\x38"


def test_the_writer_needs_a_root() -> None:
    with pytest.raises(CarError, match="root"):
        CarWriter(io.BytesIO().write, [])


def test_the_writer_writes_each_block_once() -> None:
    block = b"once"
    block_cid = cid.cid_of(block, RAW)
    out = io.BytesIO()
    writer = CarWriter(out.write, [block_cid])
    assert writer.add(block_cid, block) is True
    assert writer.add(block_cid, block) is False
    assert read_all(out.getvalue())[1] == [(block_cid, block)]


def test_the_writer_passes_blocks_through_without_copying() -> None:
    block = b"a block that should reach the sink as the same object" * 10
    block_cid = cid.cid_of(block, RAW)
    chunks: list[bytes] = []
    CarWriter(chunks.append, [block_cid]).add(block_cid, block)
    assert chunks[-1] is block


class TrickleStream:
    """A stream that, like a socket, returns at most a few bytes per read."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int, /) -> bytes:
        return self._data.read(min(size, 3))


def test_short_reads_from_sockets_and_pipes_are_handled() -> None:
    data = fixture_bytes("car/dir-with-files.car")
    reader = read_car(TrickleStream(data))
    assert [(c, b) for c, b in reader] == read_all(data)[1]


block_lists = st.lists(
    st.tuples(st.binary(max_size=300), st.sampled_from([RAW, DAG_PB, DAG_CBOR]), st.booleans()),
    min_size=1, max_size=8)


@given(block_lists)
def test_what_the_writer_writes_the_reader_reads_back(specs: list[tuple[bytes, int, bool]]) -> None:
    blocks = [(cid.cid_of(data, DAG_PB, 0) if v0 else cid.cid_of(data, codec), data)
              for data, codec, v0 in specs]
    blocks += blocks[:2]  # repeats are written once, where first seen
    roots = [blocks[0][0]]
    assert read_all(write_car(roots, blocks)) == (roots, list(dict(blocks).items()))


@given(st.binary(max_size=400))
def test_garbage_is_refused_with_a_car_error(data: bytes) -> None:
    with contextlib.suppress(*car_errors):
        read_all(data)


@given(st.binary(max_size=400))
def test_garbage_after_a_valid_header_is_refused_with_a_car_error(data: bytes) -> None:
    with contextlib.suppress(*car_errors):
        read_all(fixture_bytes(SMALL_CAR)[:59] + data)


@given(st.data())
def test_a_corrupted_car_is_refused_cleanly_or_still_verifies(data: st.DataObject) -> None:
    car = bytearray(fixture_bytes("car/carv1-basic.car"))
    index = data.draw(st.integers(0, len(car) - 1))
    car[index] = data.draw(st.integers(0, 255))
    with contextlib.suppress(*car_errors):
        for block_cid, block in read_car(io.BytesIO(bytes(car))):
            assert cid.matches(block_cid, block)
