"""The push queue's worker: moves copies from pending to verified, one step at a time, across crashes.

I/O edge (asyncio + the places' HTTP APIs). The queue itself is the `copies`
table: a copy with a `due` time has work left. A worker leases due copies
(so the daemon and `artkeep push` never work on the same copy at once), takes
each one step further, and writes the outcome back before the lease ends:

    pending ──push──▶ pushed ──place says pinned──▶ claimed ──fetched back, re-hashed──▶ verified
       ▲                 │                            │
       └── failing ◀─────┴── retryable error ─────────┤ (backoff with jitter, then again)
           (permanent: stops until `artkeep push --retry`)   └── wrong bytes ──▶ corrupt (never counted)

A crash at any point leaves a copy in its last recorded state with a lease
that expires; pushes are idempotent, so the next worker simply repeats the
step. Nothing is recorded as verified that was not fetched back and re-hashed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Final

import aiohttp

from node import car, dag, replication
from node import cid as cids
from node.config import Config
from node.errors import NodeError
from node.index import CopyRow, FindingRow
from node.node import Node
from node.remotes.base import CarBody, NotSupported, Permanent, PlaceSpec, Remote, RemoteError
from node.remotes.kinds import open_remote
from node.remotes.readback import read_back

log = logging.getLogger("artkeep.push")
BATCH_BYTES: Final = 256 * 1024  # CAR bytes read from disk per worker-thread hop
LEASE_SECONDS: Final = 900.0     # how long a worker may hold a copy before another may take it over
POLL_MIN, POLL_MAX = 1.0, 300.0  # seconds between status checks of a push the place is still pinning
WORKER: Final = f"{socket.gethostname()}/{os.getpid()}"  # whose lease a copy is under


@dataclass(frozen=True, slots=True)
class PushSettings:
    concurrency: int = 4
    per_place: int = 2
    bandwidth: int = 0          # bytes per second for all uploads together; 0: unlimited
    backoff: replication.Backoff = field(default_factory=replication.Backoff)
    timeout: float = 300.0
    verify: bool = True
    origins: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: Config) -> PushSettings:
        return cls(concurrency=max(1, int(config["push.concurrency"])),
                   per_place=max(1, int(config["push.per_place"])),
                   bandwidth=max(0, int(config["push.bandwidth"])),
                   backoff=replication.Backoff(float(config["push.retry_base"]),
                                               float(config["push.retry_max"])),
                   timeout=float(config["push.timeout"]), verify=bool(config["push.verify"]),
                   origins=tuple(part.strip() for part in str(config["push.origins"]).split(",")
                                 if part.strip()))


@dataclass(frozen=True, slots=True)
class Step:
    """What one step did to one copy, for progress and logs."""

    cid: str
    place: str
    state: str
    error: str | None


class Throttle:
    """A token bucket shared by every upload: at most `rate` bytes per second on average (0: no limit)."""

    def __init__(self, rate: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._clock = clock
        self._next_free = 0.0

    async def take(self, size: int) -> None:
        if self._rate <= 0:
            return
        now = self._clock()
        start = max(now, self._next_free)
        self._next_free = start + size / self._rate
        if start > now:
            await asyncio.sleep(start - now)


class Pusher:
    """Works the queue for one process: `run_due` once, `drain` until done, or `serve` for the daemon."""

    def __init__(self, node: Node, settings: PushSettings, *, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.node = node
        self.settings = settings
        self._rng = rng or random.Random()
        self._clock = clock
        self._throttle = Throttle(settings.bandwidth)
        self._session: aiohttp.ClientSession | None = None
        self._running: dict[tuple[str, str], asyncio.Task[Step]] = {}
        self._remotes: dict[str, Remote] = {}
        self.wake = asyncio.Event()   # set to make `serve` plan and look at the queue at once

    async def __aenter__(self) -> Pusher:
        freed = await asyncio.to_thread(self.node.index.release_leases, _worker_gone)
        if freed:
            log.info("took over %d copies from a push that stopped mid-way", freed)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(30.0, self.settings.timeout),
                                        sock_read=self.settings.timeout)
        self._session = aiohttp.ClientSession(timeout=timeout, raise_for_status=False)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for task in self._running.values():
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)
        self._running.clear()
        if self._session is not None:
            await self._session.close()

    # --- driving the queue

    async def run_due(self) -> list[asyncio.Task[Step]]:
        """Lease the copies that are due, as many as there are free slots, and start a step on each."""
        free = self.settings.concurrency - len(self._running)
        if free <= 0:
            return []
        busy: dict[str, int] = {}
        for _cid, place in self._running:
            busy[place] = busy.get(place, 0) + 1
        now = self._clock()
        rows = await asyncio.to_thread(self.node.index.lease_due_copies, now, LEASE_SECONDS, free,
                                       self.settings.per_place, busy, WORKER)
        started = []
        for row in rows:
            task = asyncio.create_task(self._step(row), name=f"push {row.cid} to {row.place}")
            self._running[(row.cid, row.place)] = task
            task.add_done_callback(functools.partial(self._finished, (row.cid, row.place)))
            started.append(task)
        return started

    def _finished(self, key: tuple[str, str], _task: asyncio.Task[Step]) -> None:
        self._running.pop(key, None)
        self.wake.set()

    async def drain(self, *, until: float | None = None,
                    on_step: Callable[[Step], None] | None = None, wait_retries: bool = True) -> None:
        """Work until no copy is due (with `wait_retries`, until none has work left at all, waiting out
        backoffs) or the clock passes `until`. Copies that failed for good have no due time and end it."""
        while True:
            started = await self.run_due()
            if self._running:
                done, _ = await asyncio.wait(list(self._running.values()), timeout=self._pause(until),
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if on_step and not task.cancelled() and task.exception() is None:
                        on_step(task.result())
                continue
            next_due = await asyncio.to_thread(self.node.index.next_due)
            now = self._clock()
            if next_due is None or (until is not None and now >= until):
                return
            if next_due > now and not wait_retries:
                return
            if not started:
                wait = max(0.05, next_due - now)
                await asyncio.sleep(min(wait, self._pause(until)))

    def _pause(self, until: float | None) -> float:
        return 1.0 if until is None else max(0.05, min(1.0, until - self._clock()))

    async def serve(self, stop: asyncio.Event, plan_every: float = 60.0) -> None:
        """The daemon's loop: plan new copies (on wake or every `plan_every` s) and keep the queue moving."""
        planned_at = -plan_every
        while not stop.is_set():
            if self.wake.is_set() or time.monotonic() - planned_at >= plan_every:
                self.wake.clear()
                try:
                    queued = await asyncio.to_thread(self.node.plan_copies)
                    if queued:
                        log.info("queued %d new copies", queued, extra={"queued": queued})
                except NodeError as exc:
                    log.error("planning copies failed: %s", exc.message)
                planned_at = time.monotonic()
            await self.run_due()
            next_due = await asyncio.to_thread(self.node.index.next_due)
            sleep = plan_every if next_due is None else next_due - self._clock()
            sleep = min(max(sleep, 0.2), plan_every)
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.wake.wait())]
            await asyncio.wait(waiters, timeout=sleep, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()

    # --- one step of one copy

    async def _step(self, row: CopyRow) -> Step:
        spec = await asyncio.to_thread(self._spec, row.place)
        if spec is None:  # the place was removed while this copy waited
            return Step(row.cid, row.place, "gone", None)
        root = cids.parse(row.cid)
        try:
            remote = self._remote(spec)
            state = row.state
            handle = row.handle
            if state in ("pending", "failing", "corrupt"):
                pushed = await remote.push(root, self._car(root), name=await self._name(row.cid),
                                           # pushed before and due again: the place lost some of it
                                           meta={"artkeep": "1"}, again=row.pushed is not None)
                now = self._clock()
                state, handle = pushed.state, pushed.handle
                await self._update(row, state=state, handle=handle, pushed=now,
                                   claimed=now if state == "claimed" else None, attempts=0, permanent=0,
                                   last_error=None, due=now)
            if state == "pushed":
                state = await self._follow(row, remote, root, handle)
            if state == "claimed":
                state = await self._verify(row, remote, root)
            return Step(row.cid, row.place, state, None)
        except Permanent as exc:
            return await self._failed(row, exc.message, permanent=True)
        except RemoteError as exc:
            return await self._failed(row, exc.message, retry_after=exc.retry_after)
        except NodeError as exc:  # our side: a damaged or missing local block; fsck repairs, then retry
            return await self._failed(row, f"local: {exc.message}")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return await self._failed(row, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a bug must not leave the copy leased and the daemon's loop blind
            log.exception("push of %s to %s: unexpected error", row.cid, row.place)
            return await self._failed(row, f"unexpected {type(exc).__name__}: {exc}")

    async def _follow(self, row: CopyRow, remote: Remote, root: cids.Cid, handle: str | None) -> str:
        presence = await remote.presence(root, handle)
        now = self._clock()
        if presence == "pinned":
            await self._update(row, state="claimed", claimed=now, last_check=now, due=now)
            return "claimed"
        if presence == "pinning":
            waited = now - (row.pushed or now)
            await self._update(row, state="pushed", last_check=now,
                               due=now + min(POLL_MAX, max(POLL_MIN, waited / 4)))
            return "pushed"
        what = "failed to pin it" if presence == "failed" else "does not have it after taking it"
        raise _Lost(f"{row.place} {what}")

    async def _verify(self, row: CopyRow, remote: Remote, root: cids.Cid) -> str:
        now = self._clock()
        if not self.settings.verify:
            await self._update(row, state="claimed", due=None)
            return "claimed"
        blocks = await asyncio.to_thread(self.node.dag_blocks, root)
        try:
            result = await read_back(remote, root, blocks)
        except NotSupported:  # no way to read from this place: its word is all we have
            await self._update(row, state="claimed", last_check=now, due=None)
            return "claimed"
        finding = FindingRow(row.cid, row.place, "full", "ok", None, result.blocks_verified,
                             result.bytes_verified, result.seconds, "", now)
        if result.ok:
            await asyncio.to_thread(self.node.index.add_findings, [finding])
            await self._update(row, state="verified", verified=now, last_check=now, attempts=0,
                               last_error=None, due=None)
            return "verified"
        if result.corrupt is not None:
            detail = f"served wrong bytes for block {result.corrupt}"
            await asyncio.to_thread(self.node.index.add_findings, [finding._replace(
                result="corrupt", block=str(result.corrupt), detail=detail)])
            await self._update(row, state="corrupt", last_check=now, last_error=detail, due=None)
            await asyncio.to_thread(self.node.plan_copies, [row.cid])  # look for a place that keeps it
            log.warning("%s: %s %s", row.cid, row.place, detail, extra={"cid": row.cid, "place": row.place})
            return "corrupt"
        detail = f"claims it but does not serve block {result.missing}"
        await asyncio.to_thread(self.node.index.add_findings, [finding._replace(
            result="missing", block=str(result.missing) if result.missing else None, detail=detail)])
        raise _Lost(f"{row.place} {detail}")

    async def _failed(self, row: CopyRow, message: str, *, permanent: bool = False,
                      retry_after: float | None = None) -> Step:
        attempts = row.attempts + 1
        now = self._clock()
        due = None if permanent else now + self.settings.backoff.delay(attempts, self._rng, retry_after)
        await self._update(row, state="failing", attempts=attempts, permanent=int(permanent),
                           last_error=message, last_check=now, due=due)
        log.warning("push of %s to %s failed (%s, try %d): %s", row.cid, row.place,
                    "permanent" if permanent else "will retry", attempts, message,
                    extra={"cid": row.cid, "place": row.place, "attempts": attempts, "permanent": permanent})
        return Step(row.cid, row.place, "failing", message)

    async def _update(self, row: CopyRow, **changes: object) -> None:
        await asyncio.to_thread(self.node.index.update_copy, row.cid, row.place, **changes)

    # --- helpers

    def _spec(self, name: str) -> PlaceSpec | None:
        return next((spec for spec in self.node.places() if spec.name == name), None)

    def _remote(self, spec: PlaceSpec) -> Remote:
        remote = self._remotes.get(spec.name)
        if remote is None or remote.spec != spec:
            assert self._session is not None, "use Pusher as an async context manager"
            if self.settings.origins and spec.kind == "pinning" and "origins" not in spec.options:
                spec = PlaceSpec(spec.name, spec.kind, spec.url, spec.token,
                                 {**spec.options, "origins": ",".join(self.settings.origins)},
                                 spec.quota_bytes, spec.holds)
            remote = open_remote(spec, self._session)
            self._remotes[spec.name] = remote
        return remote

    async def _name(self, cid: str) -> str:
        pin = await asyncio.to_thread(self.node.index.get_pin, cid)
        return pin.name if pin else cid

    def _car(self, root: cids.Cid) -> CarBody:
        return lambda: _car_stream(self.node, root, self._throttle.take)


def _worker_gone(owner: str) -> bool:
    """Whether the worker HOST/PID that holds a lease is gone: only provable for this host's processes."""
    host, _, pid = owner.rpartition("/")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


class _Lost(RemoteError):
    """The place took the push and then did not have it: push again after a backoff."""


async def _car_stream(node: Node, root: cids.Cid, throttle: Callable[[int], Awaitable[None]]
                      ) -> AsyncIterator[bytes]:
    """The DAG's CARv1 read from the store on worker threads, BATCH_BYTES at a time."""
    loop = asyncio.get_running_loop()
    pieces = _car_pieces(node, root)

    def next_batch() -> bytes:
        batch = bytearray()
        for piece in pieces:
            batch += piece
            if len(batch) >= BATCH_BYTES:
                break
        return bytes(batch)

    while batch := await loop.run_in_executor(None, next_batch):
        await throttle(len(batch))
        yield batch


def _car_pieces(node: Node, root: cids.Cid) -> Iterator[bytes]:
    yield car.encode_header([root])
    for cid, block in dag.walk(root, node.get_block):
        yield car.section_head(cid, len(block))
        yield block
