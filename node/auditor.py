"""Audit rounds: ask places, fetch and re-hash blocks, record every finding, heal the local store, repair.

I/O edge (asyncio, the places' HTTP APIs through node.remotes, the index and
the store through Node). What is due, which blocks to ask for and what an
answer means are node.audit's rules; this module only carries them out. It
never stores what a place serves, with one exception: a block missing or
damaged in the local store is fetched from a place whose copy is verified,
re-hashed against its CID, written with the store's verified put, and the pin
is re-verified.

A round never stops at the first problem. It checks copies a page at a time
(memory stays flat), at most `concurrency_per_place` at once per place, and
skips a place for the rest of the round after SKIP_AFTER_UNREACHABLE checks
could not reach it; a place skipped that way is left alone for a growing while.
After each round: pins below their target of verified copies get new copies
queued elsewhere, and a place that starts failing is reported (log line,
metric, optional webhook).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import aiohttp

from node import audit, replication
from node import cid as cids
from node.audit import AuditPolicy, CopyAudit, Outcome
from node.cid import Cid
from node.errors import InputError, NodeError
from node.index import FindingRow
from node.node import Node
from node.remotes.base import NotSupported, PlaceSpec, Remote, RemoteError
from node.remotes.kinds import open_remote
from node.remotes.readback import ReadBack, read_back
from node.web.metrics import Registry

log = logging.getLogger("artkeep.audit")
PAGE: Final = 256                 # copies (or pins) read from the index at a time
ROOTS_PER_QUERY: Final = 500      # CIDs named in one SQL IN (...)
SKIP_AFTER_UNREACHABLE: Final = 3  # unreachable checks before a place is skipped for the rest of the round
DOWN_BACKOFF_CAP: Final = 6 * 3600.0
WEBHOOK_TIMEOUT: Final = 10.0
HEAL_PASSES: Final = 8            # healing an inner block can reveal damage below it; look again this often

OnFinding = Callable[[FindingRow], None]


@dataclass
class RoundReport:
    """What one round did: checks per result, places it skipped, copies it queued elsewhere."""

    level: str
    results: Counter[str] = field(default_factory=Counter)
    skipped_places: set[str] = field(default_factory=set)
    unsupported: int = 0          # copies on places that cannot be read back (their word is all there is)
    unfinished: bool = False      # the time box ended the round before every due check was done
    repairs: int = 0              # copies queued on other places
    healed: int = 0               # local blocks put back from a verified copy
    seconds: float = 0.0

    @property
    def checks(self) -> int:
        return sum(self.results.values())


@dataclass
class _PlaceRound:
    """What a round at one place level shares between its checks."""

    level: str
    places: dict[str, PlaceSpec]
    end: float | None                     # time.monotonic() when the time box ends
    skipped: set[str]                     # places left alone for the rest of the round
    answered: set[str] = field(default_factory=set)
    unreachable: Counter[str] = field(default_factory=Counter)
    blocks: dict[str, list[Cid]] = field(default_factory=dict)  # the current page's roots → their blocks


@dataclass(frozen=True, slots=True)
class _Done:
    """One place check's outcome, ready to record."""

    copy: CopyAudit
    finding: FindingRow | None
    verdict: audit.Verdict


class Auditor:
    """Runs rounds for one process: the daemon's scheduler, or `artkeep audit` once."""

    def __init__(self, node: Node, policy: AuditPolicy, *, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.time, metrics: Registry | None = None,
                 on_repair: Callable[[int], None] | None = None) -> None:
        self.node = node
        self.policy = policy
        self._rng = rng or random.SystemRandom()  # a place must not be able to guess which blocks we ask for
        self._clock = clock
        self._on_repair = on_repair
        self._session: aiohttp.ClientSession | None = None
        self._remotes: dict[str, Remote] = {}
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._down: dict[str, tuple[int, float]] = {}   # place → (rounds in a row skipped, left alone until)
        self._failing: set[str] = set()
        self._backoff = replication.Backoff(base=policy.tick, cap=DOWN_BACKOFF_CAP)
        self._findings_metric = None if metrics is None else metrics.counter(
            "artkeep_audit_findings_total", "Audit checks recorded, by level and result.")
        self._failing_metric = None if metrics is None else metrics.gauge(
            "artkeep_places_failing", "Places whose copies are failing (audits or pushes).")

    async def __aenter__(self) -> Auditor:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(30.0, self.policy.check_timeout),
                                        sock_read=self.policy.check_timeout)
        self._session = aiohttp.ClientSession(timeout=timeout, raise_for_status=False)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    # --- rounds

    async def run(self, level: str, *, roots: Sequence[str] | None = None, force: bool = False,
                  budget: float | None = None, on_finding: OnFinding | None = None) -> RoundReport:
        """One round at `level`: the checks that are due (all of them with `force`), of every pin or only
        `roots`, stopping after `budget` seconds if given; then repair and alerts."""
        if level not in audit.LEVELS:
            raise InputError(f"audit level must be one of {', '.join(audit.LEVELS)}, not {level!r}")
        started = time.monotonic()
        report = RoundReport(level)
        end = started + budget if budget is not None else None
        if level == "local":
            await self._local_round(report, roots, force, end, on_finding)
        else:
            await self._place_round(level, report, roots, force, end, on_finding)
        report.repairs += await self._after_round()
        report.seconds = time.monotonic() - started
        log.info("audit round %s: %d checks %s, %d skipped places, %d repairs queued (%.1f s)", level,
                 report.checks, dict(report.results), len(report.skipped_places), report.repairs,
                 report.seconds, extra={"level": level, "checks": report.checks})
        return report

    async def _place_round(self, level: str, report: RoundReport, roots: Sequence[str] | None, force: bool,
                           end: float | None, on_finding: OnFinding | None) -> None:
        now = self._clock()
        places = {spec.name: spec for spec in await asyncio.to_thread(self.node.places)}
        resting = {name for name, (_, until) in self._down.items() if until > now and not force}
        state = _PlaceRound(level, places, end, set(resting))
        async for page in self._copy_pages(roots):
            now = self._clock()
            due = [copy for copy in page if copy.place in state.places
                   and (force or audit.copy_due(copy, level, self.policy, now))]
            if level == "full" and not force:
                due = audit.overdue_first(due, level)
            if level != "presence":
                state.blocks = await asyncio.to_thread(self._block_lists, {copy.cid for copy in due})
            outcomes = [done for done in await asyncio.gather(*(self._take(state, copy) for copy in due))
                        if done is not None]
            await self._record(outcomes, report, on_finding)
            if end is not None and time.monotonic() >= end:
                report.unfinished = True
                break
        report.skipped_places = state.skipped - state.answered
        self._note_down_places(report.skipped_places - resting, state.answered)

    async def _take(self, state: _PlaceRound, copy: CopyAudit) -> _Done | None:
        """Check one copy when its place has a free slot, unless the place or the time box ran out."""
        async with self._semaphore(copy.place):
            if copy.place in state.skipped or (state.end is not None and time.monotonic() >= state.end):
                return None
            done = await self._check(state.places[copy.place], copy, state.level, state.blocks, state.end)
        if done is None or done.finding is None:
            return done
        if done.finding.result != "unreachable":
            state.answered.add(copy.place)
            return done
        state.unreachable[copy.place] += 1
        if state.unreachable[copy.place] >= SKIP_AFTER_UNREACHABLE and copy.place not in state.skipped:
            state.skipped.add(copy.place)
            log.warning("audit: %s unreachable %d times; skipped for the rest of this round", copy.place,
                        state.unreachable[copy.place], extra={"place": copy.place})
        return done

    async def _copy_pages(self, roots: Sequence[str] | None) -> AsyncIterator[list[CopyAudit]]:
        chunks = [None] if roots is None else [list(roots[start:start + ROOTS_PER_QUERY])
                                               for start in range(0, len(roots), ROOTS_PER_QUERY)]
        for chunk in chunks:
            after = ("", "")
            while page := await asyncio.to_thread(self.node.index.audit_copies, after, PAGE, chunk):
                yield page
                after = (page[-1].cid, page[-1].place)

    def _block_lists(self, roots: set[str]) -> dict[str, list[Cid]]:
        """Every block CID of each root, from our own copy (so a place can neither add nor hide any)."""
        lists: dict[str, list[Cid]] = {}
        for root in roots:
            try:
                lists[root] = self.node.dag_blocks(cids.parse(root))
            except NodeError as exc:  # damaged here: the local round heals it first
                log.warning("audit: cannot list the blocks of %s here (%s); its copies wait",
                            root, exc.message, extra={"cid": root})
        return lists

    async def _check(self, spec: PlaceSpec, copy: CopyAudit, level: str, blocks: dict[str, list[Cid]],
                     end: float | None) -> _Done | None:
        now = self._clock()
        started = time.monotonic()
        root = cids.parse(copy.cid)
        try:
            remote = self._remote(spec)
            if level == "presence":
                async with asyncio.timeout(self.policy.check_timeout):
                    said = await remote.presence(root, copy.handle)
                outcome = audit.presence_outcome(said, time.monotonic() - started)
            else:
                if copy.cid not in blocks:
                    return None
                if level == "full":
                    result = await read_back(remote, root, blocks[copy.cid], deadline=end, via_car=True)
                else:
                    chosen = audit.choose_samples(blocks[copy.cid], self.policy.samples, self._rng)
                    deadline = started + self.policy.check_timeout
                    result = await read_back(remote, root, chosen, via_car=False,
                                             deadline=deadline if end is None else min(deadline, end))
                outcome = _outcome_of(result)
        except NotSupported as exc:
            log.info("audit: %s cannot be read back (%s); only its word counts there", spec.name,
                     exc.message, extra={"place": spec.name, "cid": copy.cid})
            return _Done(copy, None, audit.Verdict({f"{level}_checked": now}))
        except (RemoteError, TimeoutError, aiohttp.ClientError, OSError, InputError) as exc:
            if end is not None and time.monotonic() >= end:
                return None  # the round's time box cut it short: no verdict on the place
            message = (exc.message if isinstance(exc, (RemoteError, NodeError))
                       else f"{type(exc).__name__}: {exc}")
            outcome = Outcome("unreachable", None, 0, 0, time.monotonic() - started, message)
        finding = FindingRow(copy.cid, copy.place, level, outcome.result, outcome.block, outcome.blocks,
                             outcome.bytes, round(outcome.seconds, 4), outcome.detail, now)
        return _Done(copy, finding, audit.judge(copy, level, outcome, self.policy, now))

    async def _record(self, outcomes: list[_Done], report: RoundReport, on_finding: OnFinding | None) -> None:
        findings = [done.finding for done in outcomes if done.finding is not None]
        changes = [(done.copy.cid, done.copy.place, done.verdict.changes) for done in outcomes]
        await asyncio.to_thread(self.node.index.record_audit, findings, changes)
        for done in outcomes:
            if done.finding is None:
                report.unsupported += 1
                continue
            self._count(done.finding, report, on_finding)
            if done.finding.result in ("missing", "corrupt"):
                log.warning("audit (%s): %s at %s: %s %s", done.finding.level, done.copy.cid, done.copy.place,
                            done.finding.result, done.finding.detail,
                            extra={"cid": done.copy.cid, "place": done.copy.place,
                                   "block": done.finding.block})
        replan = sorted({done.copy.cid for done in outcomes if done.verdict.replan})
        if replan:  # a copy that serves wrong bytes is worth nothing: put one elsewhere now
            report.repairs += await asyncio.to_thread(self.node.plan_copies, replan)

    def _count(self, finding: FindingRow, report: RoundReport, on_finding: OnFinding | None) -> None:
        report.results[finding.result] += 1
        if self._findings_metric is not None:
            self._findings_metric.inc(level=finding.level, result=finding.result)
        if on_finding is not None:
            on_finding(finding)

    def _note_down_places(self, skipped: set[str], answered: set[str]) -> None:
        now = self._clock()
        for place in answered:
            self._down.pop(place, None)
        for place in skipped:
            streak = self._down.get(place, (0, 0.0))[0] + 1
            self._down[place] = (streak, now + self._backoff.delay(streak, self._rng))

    # --- the local store: a rolling fsck that heals from verified copies

    async def _local_round(self, report: RoundReport, roots: Sequence[str] | None, force: bool,
                           end: float | None, on_finding: OnFinding | None) -> None:
        wanted = set(roots) if roots is not None else None
        after = ""
        while page := await asyncio.to_thread(self.node.index.local_checks, after, PAGE):
            after = page[-1][0]
            now = self._clock()
            due = [cid for cid, created, last in page if (wanted is None or cid in wanted)
                   and (force or audit.pin_due(cid, last, created, self.policy, now))]
            for root in due:
                findings = await self._check_local(root, report)
                await asyncio.to_thread(self.node.index.record_local, findings, [root], self._clock())
                for finding in findings:
                    self._count(finding, report, on_finding)
                if end is not None and time.monotonic() >= end:
                    report.unfinished = True
                    return

    async def _check_local(self, root_text: str, report: RoundReport) -> list[FindingRow]:
        """Re-hash one pin here; heal what is bad from verified copies; re-verify. Findings, in order."""
        root = cids.parse(root_text)
        findings: list[FindingRow] = []
        started = time.monotonic()
        bad, blocks, size = await asyncio.to_thread(self.node.local_damage, root)
        passes = 0
        while bad and passes < HEAL_PASSES:
            passes += 1
            healed_from = {cid: await self._heal(root_text, cid) for cid, _ in bad}
            report.healed += sum(1 for place in healed_from.values() if place)
            first = bad[0][0]
            worst = "corrupt" if any(kind == "corrupt" for _, kind in bad) else "missing"
            words = [f"{cid} {kind} here, " + (f"healed from {healed_from[cid]}" if healed_from[cid]
                                               else "no verified copy gave it back") for cid, kind in bad]
            findings.append(FindingRow(root_text, "", "local", worst, str(first), blocks, size,
                                       round(time.monotonic() - started, 4), "; ".join(words), self._clock()))
            if not all(healed_from.values()):
                return findings
            started = time.monotonic()
            bad, blocks, size = await asyncio.to_thread(self.node.local_damage, root)  # re-verify
        if bad:
            return findings
        detail = "re-verified after healing" if findings else ""
        findings.append(FindingRow(root_text, "", "local", "ok", None, blocks, size,
                                   round(time.monotonic() - started, 4), detail, self._clock()))
        return findings

    async def _heal(self, root: str, cid: Cid) -> str | None:
        """Fetch one block from a place whose copy of root is verified; keep it only if it re-hashes right.
        Returns the place that gave it back, or None."""
        now = self._clock()
        copies = await asyncio.to_thread(self.node.index.copies_of, root)
        sources = [row.place for row in copies if row.state == "verified" and not audit.is_stale(
            row.state, row.verified, now, self.policy.verified_window)]
        specs = {spec.name: spec for spec in await asyncio.to_thread(self.node.places)}
        for place in sources:
            if place not in specs:
                continue
            try:
                async with asyncio.timeout(self.policy.check_timeout):
                    data = await self._remote(specs[place]).get_block(cid)
                await asyncio.to_thread(self.node.heal_block, cid, data)
                return place
            except (RemoteError, TimeoutError, aiohttp.ClientError, OSError, NodeError) as exc:
                message = exc.message if isinstance(exc, (RemoteError, NodeError)) else type(exc).__name__
                log.warning("audit: could not heal %s from %s: %s", cid, place, message,
                            extra={"cid": str(cid), "place": place})
        return None

    # --- after a round: repair, alerts, old findings

    async def _after_round(self) -> int:
        now = self._clock()
        repairs = await asyncio.to_thread(self.node.plan_repairs, now)
        if repairs:
            log.warning("audit: %d copies queued on other places to get pins back to %d verified copies",
                        repairs, self.node.copies, extra={"queued": repairs})
            if self._on_repair is not None:
                self._on_repair(repairs)
        await self._alert_failing_places()
        await asyncio.to_thread(self.node.index.roll_up_findings, now - self.policy.keep_days * audit.DAY)
        return repairs

    async def _alert_failing_places(self) -> None:
        health = await asyncio.to_thread(self.node.replication_health)
        failing = set(health.failing_places)
        if self._failing_metric is not None:
            self._failing_metric.set(len(failing))
        for place in sorted(failing - self._failing):
            log.warning("place %s is failing: some of its copies cannot be verified (pins below the target "
                        "get copies elsewhere)", place, extra={"place": place})
            await self._webhook({"event": "place_failing", "place": place, "at": self._clock(),
                                 "failing_places": sorted(failing)})
        for place in sorted(self._failing - failing):
            log.warning("place %s recovered", place, extra={"place": place})
        self._failing = failing

    async def _webhook(self, body: dict[str, object]) -> None:
        if not self.policy.webhook:
            return
        assert self._session is not None, "use Auditor as an async context manager"
        try:
            async with self._session.post(self.policy.webhook, json=body,
                                          timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT)) as response:
                if response.status >= 300:
                    log.warning("audit webhook answered %d", response.status)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("audit webhook failed: %s: %s", type(exc).__name__, exc)

    # --- helpers

    def _semaphore(self, place: str) -> asyncio.Semaphore:
        semaphore = self._semaphores.get(place)
        if semaphore is None:
            semaphore = self._semaphores[place] = asyncio.Semaphore(self.policy.concurrency_per_place)
        return semaphore

    def _remote(self, spec: PlaceSpec) -> Remote:
        remote = self._remotes.get(spec.name)
        if remote is None or remote.spec != spec:
            assert self._session is not None, "use Auditor as an async context manager"
            remote = self._remotes[spec.name] = open_remote(spec, self._session)
        return remote


def _outcome_of(result: ReadBack) -> Outcome:
    if result.ok:
        return Outcome("ok", None, result.blocks_verified, result.bytes_verified, result.seconds, "")
    if result.corrupt is not None:
        return Outcome("corrupt", str(result.corrupt), result.blocks_verified, result.bytes_verified,
                       result.seconds, f"served wrong bytes for block {result.corrupt}")
    block = str(result.missing) if result.missing is not None else None
    detail = f"does not serve block {block}" if block else "did not deliver every block"
    return Outcome("missing", block, result.blocks_verified, result.bytes_verified, result.seconds, detail)
