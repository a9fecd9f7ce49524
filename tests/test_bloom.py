"""The Bloom filter a rescue uses to skip index look-ups: never a false "no", few false "maybe"."""

from __future__ import annotations

import random

import pytest

from node.bloom import BloomFilter


def test_every_key_added_is_found() -> None:
    rng = random.Random(1)
    keys = [rng.randbytes(rng.randint(0, 64)) for _ in range(20_000)]
    bloom = BloomFilter(bits=2**16)  # small, so the bits are crowded
    for key in keys:
        bloom.add(key)
    assert all(key in bloom for key in keys)


def test_keys_never_added_are_mostly_not_found() -> None:
    rng = random.Random(2)
    bloom = BloomFilter(bits=2**16, probes=4)
    for _ in range(2_000):
        bloom.add(rng.randbytes(32))
    others = [rng.randbytes(33) for _ in range(20_000)]  # 33 bytes: none was added
    false_maybes = sum(key in bloom for key in others)
    # Expected (1 - e^(-4 * 2000 / 65536))^4 ≈ 1.7e-4, so about 3.5 of 20,000.
    assert false_maybes < 30
    assert b"never added" not in BloomFilter()


@pytest.mark.parametrize(("bits", "probes"), [(0, 4), (1000, 4), (2**10, 0), (2**10, 9)])
def test_sizes_it_cannot_use_are_refused(bits: int, probes: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        BloomFilter(bits, probes)
