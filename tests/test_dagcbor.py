"""DAG-CBOR: published vectors byte for byte, strict refusals, and round-trip properties."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import cbor2
import pytest
from conftest import IPFS_FIXTURES
from hypothesis import given
from hypothesis import strategies as st

from node import cid
from node.cid import DAG_CBOR, DAG_PB, RAW, Cid
from node.dagcbor import MAX_BLOCK_SIZE, MAX_DEPTH, Value, cid_of, decode, encode, encode_map, links
from node.errors import BlockTooLarge, DagCborError

CODEC_FIXTURES = sorted((IPFS_FIXTURES / "codec-fixtures").glob("*/*.dag-cbor"))
NEGATIVE_CASES = json.loads(
    (IPFS_FIXTURES / "codec-fixtures-negative" / "dag-cbor-decode-duplicate-keys.json").read_text())

cids = st.builds(
    lambda block, codec, v0: cid.cid_of(block, DAG_PB, 0) if v0 else cid.cid_of(block, codec),
    st.binary(max_size=8), st.sampled_from([RAW, DAG_PB, DAG_CBOR]), st.booleans())
scalars = (st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text() | st.binary() | cids)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=25)


def test_fixture_files_are_present() -> None:
    assert len(CODEC_FIXTURES) >= 11
    assert NEGATIVE_CASES


@pytest.mark.parametrize("path", CODEC_FIXTURES, ids=lambda path: f"{path.parent.name}")
def test_published_blocks_decode_and_reencode_byte_for_byte(path: Path) -> None:
    block = path.read_bytes()
    value = decode(block)
    assert encode(value) == block
    record_cid, record_block = cid_of(value)
    assert record_block == block
    assert str(record_cid) == path.stem


@pytest.mark.parametrize("case", NEGATIVE_CASES, ids=lambda case: case["name"])
def test_published_invalid_blocks_are_refused(case: dict[str, str]) -> None:
    with pytest.raises(DagCborError, match="duplicate map key"):
        decode(bytes.fromhex(case["hex"]))


@pytest.mark.parametrize(("hex_block", "why"), [
    ("1801", "shortest form"),  # 1 written in two bytes
    ("190001", "shortest form"),
    ("3800", "shortest form"),
    ("5801ff", "shortest form"),
    ("9f01ff", "indefinite"),
    ("5f4101ff", "indefinite"),
    ("ff", "indefinite"),  # a lone break byte
    ("1c", "reserved"),
    ("c100", "tag 1"),
    ("d9002a4700015500000000", "shortest form"),  # tag 42 in the 3-byte form
    ("d82a01", "byte string"),
    ("d82a4101", "0x00"),
    ("d82a4100", "CID"),
    ("f93c00", "64-bit"),  # half float 1.0
    ("fa3f800000", "64-bit"),
    ("f97e00", "64-bit"),  # half-float NaN
    ("fb7ff8000000000000", "NaN"),
    ("fb7ff0000000000000", "Infinity"),
    ("fbfff0000000000000", "Infinity"),
    ("f7", "undefined"),
    ("f0", "simple"),
    ("f820", "simple"),
    ("0000", "trailing"),
    ("", "end of input"),
    ("a2616201616102", "order"),  # "b" before "a"
    ("a2626161016162", "order"),  # "aa" before "b": shorter keys come first
    ("a10101", "text"),
    ("a1410101", "text"),
    ("62c328", "UTF-8"),
    ("a162c32801", "UTF-8"),
    ("5bffffffffffffffff", "runs past"),
    ("7a7fffffff", "runs past"),
    ("9bffffffffffffffff", "more than the input"),
    ("bbffffffffffffffff", "more than the input"),
    ("820118", "end of input"),
])
def test_blocks_our_encoder_would_not_write_are_refused(hex_block: str, why: str) -> None:
    with pytest.raises(DagCborError, match=why):
        decode(bytes.fromhex(hex_block))


def test_cbor2_default_output_with_unsorted_keys_is_refused() -> None:
    with pytest.raises(DagCborError, match="order"):
        decode(cbor2.dumps({"version": 1, "roots": []}))


@pytest.mark.parametrize("value", [
    math.nan, math.inf, -math.inf, (1, 2), {1, 2}, {1: "a"}, {b"k": 1}, 2**64, -(2**64) - 1, "\ud800",
    bytearray(b"x"), object(),
], ids=repr)
def test_values_without_one_dag_cbor_form_are_refused(value: object) -> None:
    with pytest.raises(DagCborError):
        encode(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "hex_block"), [
    (0.5, "fb3fe0000000000000"),  # floats are always 8 bytes, even when 2 would do
    (1.0, "fb3ff0000000000000"),
    (-0.0, "fb8000000000000000"),
    (True, "f5"),
    (None, "f6"),
    (-1, "20"),
    (23, "17"),
    (24, "1818"),
    (2**64 - 1, "1bffffffffffffffff"),
    (-(2**64), "3bffffffffffffffff"),
    ({"b": 1, "aa": 2, "a": 3}, "a3616103616201626161 02"),
    ({"": 1}, "a16001"),
])
def test_values_encode_to_their_one_dag_cbor_form(value: Value, hex_block: str) -> None:
    assert encode(value) == bytes.fromhex(hex_block)
    assert encode(decode(bytes.fromhex(hex_block))) == bytes.fromhex(hex_block)


def test_empty_map_has_the_well_known_cid() -> None:
    assert str(cid_of({})[0]) == "bafyreigbtj4x7ip5legnfznufuopl4sg4knzc2cof6duas4b3q2fy6swua"


def test_links_are_listed_in_encoded_order() -> None:
    first, second, third = (cid.cid_of(bytes([n]), RAW) for n in range(3))
    value = decode(encode({"b": [first, {"x": second, "n": 1}], "a": third, "c": "text"}))
    assert list(links(value)) == [third, first, second]


def test_links_walk_deep_values_without_recursion() -> None:
    target = cid.cid_of(b"deep", RAW)
    value: Value = target
    for _ in range(100_000):
        value = [value]
    assert list(links(value)) == [target]


@pytest.mark.parametrize("opener", [b"\x81", b"\xa1\x61a"], ids=["arrays", "maps"])
def test_deeply_nested_input_is_refused_without_recursion_error(opener: bytes) -> None:
    with pytest.raises(DagCborError, match="nested deeper"):
        decode(opener * 100_000 + b"\x00")


def test_nesting_up_to_the_limit_is_accepted() -> None:
    assert decode(b"\x81" * MAX_DEPTH + b"\x00") is not None
    with pytest.raises(DagCborError, match="nested deeper"):
        decode(b"\x81" * (MAX_DEPTH + 1) + b"\x00")


def test_deep_and_cyclic_values_are_refused_by_the_encoder() -> None:
    deep: Value = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(DagCborError, match="nested too deeply"):
        encode(deep)
    cyclic: list[Value] = []
    cyclic.append(cyclic)
    with pytest.raises(DagCborError, match="nested too deeply"):
        encode(cyclic)


def test_blocks_over_two_mebibytes_are_refused() -> None:
    with pytest.raises(BlockTooLarge):
        decode(bytes(MAX_BLOCK_SIZE + 1))
    with pytest.raises(BlockTooLarge):
        encode(bytes(MAX_BLOCK_SIZE))


@given(values)
def test_decoding_an_encoded_value_gives_it_back(value: Value) -> None:
    block = encode(value)
    assert decode(block) == value
    assert encode(decode(block)) == block  # == alone would let 1, 1.0 and True pass for each other


def _for_cbor2(value: Value) -> object:
    if isinstance(value, Cid):
        return cbor2.CBORTag(42, b"\x00" + bytes(value))
    if isinstance(value, list):
        return [_for_cbor2(item) for item in value]
    if isinstance(value, dict):
        order = sorted(value, key=lambda key: (len(key.encode()), key.encode()))
        return {key: _for_cbor2(value[key]) for key in order}
    return value


def test_key_order_holds_across_the_sizes_of_a_key_head() -> None:
    # Keys of 0-23 bytes have a one-byte head, 24-255 two bytes, 256 and more three.
    keys = ["k" * n for n in (0, 1, 23, 24, 25, 255, 256, 300)] + ["é" * 12, "z" * 23 + "é", "ü" * 200]
    random.Random(7).shuffle(keys)
    value: Value = {key: index for index, key in enumerate(keys)}
    block = encode(value)
    assert block == cbor2.dumps(_for_cbor2(value))
    assert encode(value) == block  # the second time the keys come from the encoder's cache
    assert list(decode(block)) == sorted(keys, key=lambda key: (len(key.encode()), key.encode()))  # type: ignore[arg-type]


def test_subclasses_of_plain_types_encode_as_their_base() -> None:
    class Name(str):
        pass

    class Count(int):
        pass

    assert encode({Name("a"): [Name("b"), Count(3)]}) == encode({"a": ["b", 3]})


@given(values)
def test_encoding_matches_cbor2_with_dag_cbor_key_order(value: Value) -> None:
    assert encode(value) == cbor2.dumps(_for_cbor2(value))


@given(st.binary(max_size=300))
def test_garbage_is_refused_cleanly_or_is_canonical(block: bytes) -> None:
    try:
        value = decode(block)
    except (DagCborError, BlockTooLarge):
        return
    assert encode(value) == block


@given(values, st.data())
def test_corrupted_blocks_are_refused_cleanly_or_are_canonical(value: Value, data: st.DataObject) -> None:
    block = bytearray(encode(value))
    index = data.draw(st.integers(0, len(block) - 1))
    block[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(block)))
    for candidate in (bytes(block), bytes(block[:cut])):
        try:
            decoded = decode(candidate)
        except (DagCborError, BlockTooLarge):
            continue
        assert encode(decoded) == candidate


def test_a_map_of_values_already_encoded_is_the_same_block_as_the_map_encoded_whole() -> None:
    value: dict[str, Value] = {"signature": {"alg": "ed25519"}, "a": [1, -2, None], "bb": b"\x00",
                                       "é": 1.5, "ab": "text"}
    fields = {key: encode(item, max_depth=MAX_DEPTH - 1) for key, item in value.items()}
    assert encode_map(fields) == encode(value)
    with pytest.raises(DagCborError):
        encode_map(fields, max_depth=0)
