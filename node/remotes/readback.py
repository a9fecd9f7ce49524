"""Read back: fetch a DAG's blocks from a place and re-hash each one; the only proof a place holds them.

I/O edge over the Remote interface; it never stores what it reads. The caller
names the blocks (from the local store, e.g. `Node.dag_blocks`, or a `sample`
of them), so a place can neither add nor leave out any. The whole DAG is asked
for as one CAR when the place serves one; whatever the CAR did not deliver
(the place has no CAR, or it broke off) is asked for block by block, a few at a
time. The first missing or corrupt block ends the check. A place that cannot be
reached, or does not finish by the deadline, raises RemoteError (Retryable):
that is "unreachable", not a verdict on its copy.
"""

from __future__ import annotations

import asyncio
import io
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Final

from node import car, varint
from node import cid as cids
from node.cid import Cid
from node.errors import CarError, InvalidCid, NodeError
from node.remotes.base import BlockMissing, NotSupported, Remote, RemoteError, Retryable
from node.remotes.http import close_stream

CONCURRENCY: Final = 8
# Sections of blocks nobody asked for that a CAR may carry before it is given up on: a place
# streaming such blocks without end would otherwise hold the check forever.
MIN_STRAYS: Final = 64
# A CAR section is a CID (at most ~140 bytes) and a block; more than that is not a section of ours.
MAX_SECTION: Final = car.MAX_BLOCK_SIZE + 256
log = logging.getLogger("artkeep.remotes")


@dataclass(frozen=True, slots=True)
class ReadBack:
    """What reading a DAG back from a place found: ok, or the first block missing or corrupt there."""

    ok: bool
    missing: Cid | None
    corrupt: Cid | None
    bytes_verified: int
    blocks_verified: int
    seconds: float


def sample(blocks: Sequence[Cid], n: int, rng: random.Random) -> list[Cid]:
    """n distinct blocks chosen at random (all if there are no more than n), in their original order."""
    unique = list(dict.fromkeys(blocks))
    if n >= len(unique):
        return unique
    chosen = sorted(rng.sample(range(len(unique)), max(0, n)))
    return [unique[index] for index in chosen]


@dataclass
class _Check:
    """The blocks still to verify (by CIDv1, so v0 and v1 spellings meet) and what was found so far."""

    pending: dict[Cid, Cid]
    bytes_verified: int = 0
    blocks_verified: int = 0
    missing: Cid | None = None
    corrupt: Cid | None = None
    strays: int = 0  # CAR sections of blocks not asked for

    @property
    def done(self) -> bool:
        return not self.pending or self.missing is not None or self.corrupt is not None

    async def judge(self, cid: Cid, block: bytes) -> None:
        """Re-hash block (off the event loop) against the CID we asked for."""
        wanted = self.pending.get(cid.to_v1())
        if wanted is None:
            self.strays += 1  # a block we did not ask about (a CAR may carry more): neither proof nor fault
            return
        if not await asyncio.to_thread(cids.matches, wanted, block):
            self.corrupt = self.corrupt or wanted
            return
        if self.pending.pop(cid.to_v1(), None) is not None:
            self.bytes_verified += len(block)
            self.blocks_verified += 1


async def read_back(remote: Remote, root: Cid, blocks: Sequence[Cid], *, deadline: float | None = None,
                    via_car: bool = True, concurrency: int = CONCURRENCY) -> ReadBack:
    """Fetch every listed block from the place and verify it; RemoteError if the place cannot be read.

    deadline is a time.monotonic() value; past it, Retryable. via_car=False skips the
    whole-DAG CAR (right for a small sample of a large DAG).
    """
    started = time.monotonic()
    check = _Check({})
    for cid in blocks:
        if cid.hash_code == cids.IDENTITY:  # the bytes are in the CID itself: nothing to fetch
            check.blocks_verified += 1
            check.bytes_verified += len(cid.digest)
        else:
            check.pending.setdefault(cid.to_v1(), cid)
    total = len(check.pending)
    try:
        async with asyncio.timeout_at(_loop_time(deadline)) if deadline is not None else nullcontext():
            if via_car and check.pending:
                await _from_car(remote, root, check)
            if not check.done:
                await _block_by_block(remote, check, concurrency)
    except TimeoutError:
        raise Retryable(f"{remote.kind} place {remote.spec.name!r}: reading {root} back did not finish by "
                        f"its deadline ({total - len(check.pending)} of {total} blocks verified)") from None
    result = ReadBack(ok=check.missing is None and check.corrupt is None and not check.pending,
                      missing=check.missing, corrupt=check.corrupt, bytes_verified=check.bytes_verified,
                      blocks_verified=check.blocks_verified, seconds=time.monotonic() - started)
    verdict = ("ok" if result.ok else f"missing {result.missing}" if result.missing
               else f"corrupt {result.corrupt}")
    log.log(logging.INFO if result.ok else logging.WARNING, "read back %s from %s: %s (%d blocks, %d bytes)",
            root, remote.spec.name, verdict, result.blocks_verified, result.bytes_verified,
            extra={"cid": str(root), "place": remote.spec.name})
    return result


def _loop_time(deadline: float) -> float:
    """A time.monotonic() deadline on the event loop's clock (the same clock, but not promised to be)."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())


async def _from_car(remote: Remote, root: Cid, check: _Check) -> None:
    """Verify what the place's CAR of root carries; leave the rest pending if it has none or breaks off."""
    chunks = remote.get_car(root)
    stream = _Buffered(chunks)
    sections = _sections(stream)
    most_strays = max(MIN_STRAYS, len(check.pending))
    try:
        async for cid, block in sections:
            await check.judge(cid, block)
            if check.done:
                return
            if check.strays > most_strays:
                log.info("CAR of %s from %s carries over %d blocks not asked for; reading block by block",
                         root, remote.spec.name, most_strays)
                return
    except NotSupported:
        return
    except Retryable:
        if not stream.received:
            raise  # not one byte: the place is down or slow, and asking block by block would fare no better
        log.info("CAR of %s from %s broke off; reading the rest block by block", root, remote.spec.name)
    except (RemoteError, NodeError) as exc:  # no such DAG there, or a CAR we cannot parse
        log.info("CAR of %s from %s unusable (%s); reading block by block", root, remote.spec.name,
                 exc.message)
    finally:  # let go of the response now, also when the check ended early
        await sections.aclose()
        await close_stream(chunks)


async def _block_by_block(remote: Remote, check: _Check, concurrency: int) -> None:
    queue = iter(list(check.pending.values()))

    async def worker() -> None:
        for cid in queue:  # shared by the workers; next() never awaits, so no two take the same CID
            if check.done:
                return
            try:
                block = await remote.get_block(cid)
            except BlockMissing:
                check.missing = check.missing or cid
                return
            await check.judge(cid, block)

    tasks = [asyncio.create_task(worker()) for _ in range(max(1, min(concurrency, len(check.pending))))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error


async def _sections(stream: _Buffered) -> AsyncGenerator[tuple[Cid, bytes], None]:
    """The (CID, block) sections of a CARv1 as its bytes arrive; CarError for anything malformed."""
    size = await stream.varint(at_end_ok=False)
    if size is None or not 0 < size <= car.MAX_HEADER_SIZE:
        raise CarError(f"CAR header of {size} bytes")
    header = await stream.exact(size)
    car.read_car(io.BytesIO(varint.encode(size) + header))  # checks it is a CARv1 header with roots
    while (size := await stream.varint(at_end_ok=True)) is not None:
        if not 0 < size <= MAX_SECTION:
            raise CarError(f"CAR section of {size} bytes")
        section = await stream.exact(size)
        try:
            cid, end = cids.from_bytes(section)
        except InvalidCid as exc:
            raise CarError(f"CAR section with an invalid CID: {exc.message}") from None
        yield cid, section[end:]


class _Buffered:
    """Exact reads over an async stream of chunks of any size."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = bytearray()
        self.received = 0

    async def _fill(self) -> bool:
        chunk = await anext(self._chunks, b"")
        self.received += len(chunk)
        self._buffer += chunk
        return bool(chunk)

    async def exact(self, size: int) -> bytes:
        while len(self._buffer) < size:
            if not await self._fill():
                raise CarError("truncated CAR")
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def varint(self, *, at_end_ok: bool) -> int | None:
        """The next varint; None at a clean end of the stream if at_end_ok."""
        while True:
            head = self._buffer[:varint.MAX_VARINT_BYTES]
            end = next((i for i, byte in enumerate(head) if byte < 0x80), None)
            if end is not None:
                break
            if len(self._buffer) >= varint.MAX_VARINT_BYTES:
                raise CarError("CAR varint too long")
            if not await self._fill():
                if not self._buffer and at_end_ok:
                    return None
                raise CarError("truncated CAR")
        try:
            value, _ = varint.decode(bytes(self._buffer[:end + 1]))
        except varint.VarintError as exc:
            raise CarError(f"invalid CAR varint: {exc}") from None
        del self._buffer[:end + 1]
        return value
