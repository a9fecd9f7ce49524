"""dag-pb: byte-exact with the IPLD codec fixtures, strict on what the spec forbids."""

from __future__ import annotations

import contextlib
import json

import pytest
from conftest import IPFS_FIXTURES
from hypothesis import given
from hypothesis import strategies as st

from node import cid, dagpb
from node.dagpb import PBLink, PBNode
from node.errors import DagPbError

FIXTURES = sorted((IPFS_FIXTURES / "codec-fixtures").glob("*/*.dag-pb"))
NEGATIVE = json.loads((IPFS_FIXTURES / "codec-fixtures-negative" / "dag-pb-decode-edges.json").read_text())


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.parent.name)
def test_fixture_blocks_round_trip_byte_for_byte(path) -> None:  # type: ignore[no-untyped-def]
    block = path.read_bytes()
    assert str(cid.cid_of(block, cid.DAG_PB)) == path.stem
    assert dagpb.encode(dagpb.decode(block)) == block


@pytest.mark.parametrize("case", NEGATIVE, ids=lambda c: c["name"])
def test_negative_fixtures_are_refused(case: dict[str, str]) -> None:
    with pytest.raises(DagPbError):
        dagpb.decode(bytes.fromhex(case["hex"]))


def test_links_are_written_before_data_and_chunk_links_keep_an_empty_name() -> None:
    child = cid.cid_of(b"x", cid.RAW)
    block = dagpb.encode(PBNode((PBLink(child, "", 1),), b"\x08\x02"))
    assert block.startswith(b"\x12") and block.endswith(b"\x0a\x02\x08\x02")
    assert b"\x12\x00\x18\x01" in block  # Name present and empty, then Tsize


def test_data_before_links_is_read_as_old_encoders_wrote_it() -> None:
    child = cid.cid_of(b"x", cid.RAW)
    canonical = dagpb.encode(PBNode((PBLink(child, "a", 1),), b"\x08\x01"))
    link_bytes, data_bytes = canonical[:-4], canonical[-4:]
    assert dagpb.decode(data_bytes + link_bytes) == dagpb.decode(canonical)


@pytest.mark.parametrize("hex_block", [
    "0a0108" + "0a0108",                      # two Data fields
    "2200",                                   # unknown field 4
    "0801",                                   # Data as a varint
    "12220a2001551220" + "00" * 28,           # Hash truncated
    "122a1200" + "0a24015512" + "20" + "00" * 32,  # Name before Hash
    "ffffffffffffffffffff01",                 # over-long varint
])
def test_malformed_blocks_are_refused(hex_block: str) -> None:
    with pytest.raises(DagPbError):
        dagpb.decode(bytes.fromhex(hex_block))


links = st.builds(
    PBLink,
    st.builds(lambda d: cid.sha256_cid(d, cid.RAW), st.binary(min_size=32, max_size=32)),
    st.one_of(st.none(), st.text(max_size=20)),
    st.one_of(st.none(), st.integers(0, 2**64 - 1)),
)


@given(st.lists(links, max_size=8).map(tuple), st.one_of(st.none(), st.binary(max_size=64)))
def test_any_node_round_trips(node_links: tuple[PBLink, ...], data: bytes | None) -> None:
    node = PBNode(node_links, data)
    assert dagpb.decode(dagpb.encode(node)) == node


@given(st.binary(max_size=300))
def test_garbage_raises_only_dag_pb_errors(block: bytes) -> None:
    with contextlib.suppress(DagPbError):
        dagpb.decode(block)
