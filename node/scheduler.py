"""The daemon's audit schedule: APScheduler jobs, each one Auditor round.

I/O edge (asyncio, APScheduler 3's AsyncIOScheduler). Presence, sampled and
local rounds run every `audit.tick` seconds and check only what is due (each
copy has its own slot in the day, node.audit.phase, so the work comes evenly);
the full round starts nightly at `audit.full_at` and stops after
`audit.full_budget` seconds. A job never runs twice at once and missed runs
collapse into one (max_instances=1, coalesce=True). Audits give way to imports
and pushes: few checks at once per place, and they wait on the network, not
the CPU. Used as an async context manager inside the app's cleanup_ctx.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

from node.audit import AuditPolicy
from node.auditor import Auditor, RoundReport
from node.errors import NodeError
from node.node import Node
from node.web.metrics import Registry

log = logging.getLogger("artkeep.audit")
TICK_LEVELS: Final = ("presence", "sampled", "local")


class AuditSchedule:
    """Starts the audit jobs on entry and stops them (cancelling a round in flight) on exit."""

    def __init__(self, node: Node, policy: AuditPolicy, *, metrics: Registry | None = None,
                 on_repair: Callable[[int], None] | None = None) -> None:
        self.policy = policy
        self.auditor = Auditor(node, policy, metrics=metrics, on_repair=on_repair)
        self._scheduler = AsyncIOScheduler()
        self._rounds: set[asyncio.Task[object]] = set()
        self.reports: dict[str, RoundReport] = {}   # the last report of each level, for tests and logs

    async def __aenter__(self) -> AuditSchedule:
        await self.auditor.__aenter__()
        first = datetime.now().astimezone() + timedelta(seconds=self.policy.tick)
        for level in TICK_LEVELS:
            self._scheduler.add_job(self._round, IntervalTrigger(seconds=self.policy.tick, start_date=first),
                                    args=(level,), id=f"audit-{level}", name=f"audit {level}",
                                    max_instances=1, coalesce=True)
        self._scheduler.add_job(self._round, CronTrigger(hour=self.policy.full_at), args=("full",),
                                kwargs={"budget": self.policy.full_budget}, id="audit-full",
                                name="audit full", max_instances=1, coalesce=True)
        self._scheduler.start()
        log.info("audit schedule: presence, sampled and local checks every %g s as they fall due; "
                 "full checks nightly at %02d:00 for up to %g s", self.policy.tick, self.policy.full_at,
                 self.policy.full_budget)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._scheduler.shutdown(wait=False)  # cancels rounds in flight; their findings so far are kept
        await asyncio.gather(*self._rounds, return_exceptions=True)
        await self.auditor.__aexit__(*exc_info)

    def next_run(self, level: str) -> datetime | None:
        """When the job of this level fires next (None once the schedule stopped)."""
        job = self._scheduler.get_job(f"audit-{level}")
        return None if job is None else job.next_run_time

    def fire_now(self, level: str) -> None:
        """Run this level's job at once, as its trigger would (the next runs keep their times)."""
        self._scheduler.get_job(f"audit-{level}").modify(next_run_time=datetime.now().astimezone())

    async def _round(self, level: str, budget: float | None = None) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._rounds.add(task)
        try:
            self.reports[level] = await self.auditor.run(level, budget=budget)
        except NodeError as exc:  # e.g. the index is busy or the store unreadable: the next tick tries again
            log.error("audit round %s failed: %s", level, exc.message, extra={"level": level})
        finally:
            self._rounds.discard(task)
