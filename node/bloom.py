"""A Bloom filter: a set in fixed memory that may say "maybe" for a key never added, never "no" for one added.

Pure. A bulk rescue uses one to know, without asking the index, that an image
has not been rescued yet in this run: "no" is certain, "maybe" sends it to
the index. Keys are hashed with SHA-256, so any bytes will do.
"""

from __future__ import annotations

import hashlib

DEFAULT_BITS = 2**23  # 1 MiB: 100,000 keys give about 1 false "maybe" in 200,000; 1,000,000 about 1 in 50
DEFAULT_PROBES = 4


class BloomFilter:
    def __init__(self, bits: int = DEFAULT_BITS, probes: int = DEFAULT_PROBES) -> None:
        if bits < 8 or bits & (bits - 1) or not 1 <= probes <= 8:
            raise ValueError("bits must be a power of two of at least 8, probes between 1 and 8")
        self._bits = bytearray(bits // 8)
        self._mask = bits - 1
        self._probes = probes

    def add(self, key: bytes) -> None:
        for position in self._positions(key):
            self._bits[position >> 3] |= 1 << (position & 7)

    def __contains__(self, key: bytes) -> bool:
        return all(self._bits[position >> 3] >> (position & 7) & 1 for position in self._positions(key))

    def _positions(self, key: bytes) -> list[int]:
        digest = hashlib.sha256(key).digest()  # 32 bytes: up to 8 independent 32-bit probes
        return [int.from_bytes(digest[at:at + 4], "little") & self._mask
                for at in range(0, 4 * self._probes, 4)]
