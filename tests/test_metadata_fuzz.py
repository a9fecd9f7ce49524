"""Mutated image bytes never crash the container readers: a Container (or a NodeError) comes out, always."""

from __future__ import annotations

from pathlib import Path

from conftest import SHARED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.errors import NodeError
from node.metadata.container import read_container
from node.metadata.raw import Container

CORPUS = Path(__file__).resolve().parent / "corpus" / "metadata"
SMALL_FIXTURES = ["a1111_cropped.png", "a1111_cropped.jpg", "a1111_stealth_pngcomp.png",
                  "invokeai_dream_legacy.png", "novelai_legacy_cropped.png",
                  "fooocus_scheme_fooocus_cropped.png", "png_decompression_dos.png"]
SEEDS = [path.read_bytes() for path in sorted(CORPUS.iterdir()) if path.suffix != ".md"] + [
    (SHARED / "fixtures" / "images" / name).read_bytes() for name in SMALL_FIXTURES]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A seed file with a few flipped bytes, a cut, an insertion or a repeated slice."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "repeat", "lengthen"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "repeat":
            data[at:at] = data[at:at + draw(st.integers(1, 64))]
        elif kind == "lengthen" and len(data) >= at + 4:
            data[at:at + 4] = b"\x7f\xff\xff\xf0"  # a length field (wherever it lands) claiming ~2 GB
    return bytes(data)


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated(), stealth=st.booleans())
def test_mutated_files_give_a_container_or_a_node_error(data: bytes, stealth: bool) -> None:
    try:
        container = read_container(data, stealth=stealth)
    except NodeError:
        return
    assert isinstance(container, Container)
    assert all(isinstance(entry.value, str | bytes) for entry in container.entries)
    assert all(isinstance(problem, str) and problem for problem in container.problems)


def test_seed_corpus_is_small_and_readable() -> None:
    corpus = [path for path in CORPUS.iterdir() if path.suffix != ".md"]
    assert sum(path.stat().st_size for path in corpus) < 50_000
    for path in corpus:
        container = read_container(path.read_bytes(), stealth=True)
        assert container.entries and container.problems in ((), ("PNG iTXt 'broken' is not valid UTF-8; "
                                                                  "kept as bytes",),
                                                             ("C2PA manifest store not readable: "
                                                              "ManifestNotFound: no JUMBF data found",)), path
