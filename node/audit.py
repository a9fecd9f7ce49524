"""The audit's rules: when each copy is due for which check, which blocks to ask for, what an answer means.

Pure: no clock, socket, file or database; `now` and the random source are
arguments (the auditor passes `random.SystemRandom`, so a place cannot predict
which blocks it will be asked for). node.auditor does the I/O and follows
these rules; node.scheduler decides only when to call it.

Levels, cheapest first: `presence` (the place's word, never proof), `sampled`
(a few random blocks fetched and re-hashed), `full` (every block, from a CAR),
`local` (our own store re-hashed, damaged blocks healed from a verified copy).
A copy counts as verified only while a sampled or full check passed within
`verified_window`.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple, TypeVar

from node.config import Config
from node.errors import InputError
from node.replication import escape_probability

LEVELS: Final = ("presence", "sampled", "full", "local")
PLACE_LEVELS: Final = ("presence", "sampled", "full")   # the checks that ask a place
PROOF_LEVELS: Final = frozenset({"sampled", "full"})     # the checks that can make a copy verified
RESULTS: Final = ("ok", "missing", "corrupt", "unreachable")
# Copies the audit looks at: the place says it holds them and the push queue has nothing left to do.
AUDITED_STATES: Final = frozenset({"claimed", "verified"})
DAY: Final = 86400.0
HOUR: Final = 3600.0

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class AuditPolicy:
    """The audit settings (`[audit]` in the config), in the units the code uses (seconds)."""

    schedule: bool = True
    samples: int = 8
    presence_per_day: float = 6
    sampled_per_day: float = 4
    full_cycle_days: float = 30
    full_budget: float = 3600.0
    full_at: int = 3
    local_cycle_days: float = 7
    verified_window: float = 7 * DAY
    concurrency_per_place: int = 2
    check_timeout: float = 60.0
    failing_alert_after: int = 3
    webhook: str = ""
    keep_days: float = 7
    tick: float = 300.0

    @classmethod
    def from_config(cls, config: Config) -> AuditPolicy:
        def positive(key: str) -> int:
            value = int(config[key])
            if value <= 0:
                raise InputError(f"config: {key} must be more than 0, not {value}")
            return value

        full_at = int(config["audit.full_at"])
        if not 0 <= full_at <= 23:
            raise InputError(f"config: audit.full_at is an hour, 0 to 23, not {full_at}")
        webhook = str(config["audit.webhook"]).strip()
        if webhook and not webhook.startswith(("http://", "https://")):
            raise InputError(f"config: audit.webhook must be an http:// or https:// URL, not {webhook!r:.80}")
        return cls(schedule=bool(config["audit.schedule"]), samples=positive("audit.samples"),
                   presence_per_day=positive("audit.presence_per_day"),
                   sampled_per_day=positive("audit.sampled_per_day"),
                   full_cycle_days=positive("audit.full_cycle_days"),
                   full_budget=float(positive("audit.full_budget")), full_at=full_at,
                   local_cycle_days=positive("audit.local_cycle_days"),
                   verified_window=positive("audit.verified_window") * DAY,
                   concurrency_per_place=positive("audit.concurrency_per_place"),
                   check_timeout=float(positive("audit.check_timeout")),
                   failing_alert_after=positive("audit.failing_alert_after"), webhook=webhook,
                   keep_days=positive("audit.keep_days"), tick=float(positive("audit.tick")))

    def period(self, level: str) -> float:
        """Seconds between two checks of one copy (one pin, for local) at this level."""
        if level == "presence":
            return DAY / self.presence_per_day
        if level == "sampled":
            return DAY / self.sampled_per_day
        if level == "full":
            return self.full_cycle_days * DAY
        if level == "local":
            return self.local_cycle_days * DAY
        raise ValueError(f"not an audit level: {level!r}")


class CopyAudit(NamedTuple):
    """What the audit needs to know about one copy (a row of the index's copies table)."""

    cid: str
    place: str
    state: str
    handle: str | None
    since: float | None          # when the place first said it holds it (claimed, else verified, else pushed)
    verified: float | None
    presence_checked: float | None  # last check at each level, whatever its result
    sampled_checked: float | None
    full_checked: float | None
    misses: int                  # audits in a row that could not reach the place
    attempts: int

    def last(self, level: str) -> float | None:
        if level == "presence":
            return self.presence_checked
        if level == "sampled":
            return self.sampled_checked
        if level == "full":
            return self.full_checked
        raise ValueError(f"not a place level: {level!r}")


# --- when: each copy gets its own phase in every period, so a day's checks come evenly, not in bursts

def phase(key: str, period: float) -> float:
    """Where in each period this key's checks fall: a hash of the key, so it is stable across restarts."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0 ** 64 * period


def latest_slot(key: str, period: float, now: float) -> float:
    """The last moment at or before `now` when this key's check was due."""
    offset = phase(key, period)
    return math.floor((now - offset) / period) * period + offset


def is_due(key: str, period: float, last: float | None, since: float | None, now: float) -> bool:
    """Whether a check is due: its latest slot has passed since the last check (or since it exists)."""
    baseline = last if last is not None else since
    return baseline is None or baseline < latest_slot(key, period, now)


def copy_due(copy: CopyAudit, level: str, policy: AuditPolicy, now: float) -> bool:
    if copy.state not in AUDITED_STATES:
        return False
    return is_due(f"{copy.cid} {copy.place} {level}", policy.period(level), copy.last(level), copy.since, now)


def pin_due(cid: str, last: float | None, created: float, policy: AuditPolicy, now: float) -> bool:
    """Whether the local store's copy of a pin is due for its rolling fsck."""
    return is_due(f"{cid} local", policy.period("local"), last, created, now)


def overdue_first(copies: Sequence[CopyAudit], level: str) -> list[CopyAudit]:
    """Copies in the order a time-boxed round should take them: never checked, then longest ago."""
    return sorted(copies, key=lambda copy: (copy.last(level) is not None, copy.last(level) or 0.0))


# --- which blocks

def choose_samples(blocks: Sequence[_T], n: int, rng: random.Random) -> list[_T]:
    """n distinct blocks, each equally likely (all of them when there are no more than n).

    The rng must be unpredictable to the place (random.SystemRandom): a place that
    could guess the sample could keep just those blocks.
    """
    unique = list(dict.fromkeys(blocks))
    if n >= len(unique):
        return unique
    return rng.sample(unique, max(0, n))


def detection_text(samples: int, per_day: float, blocks: int | None = None) -> str:
    """The odds the sampled checks give, in words: how likely a damaged copy escapes them."""
    if blocks is not None and blocks <= samples:
        return (f"each sampled check fetches all {blocks} blocks and re-hashes them: "
                "any missing or damaged block is found at the next check")
    checks = max(1, math.floor(per_day))
    odds = []
    for fraction in (0.01, 0.1):
        once = escape_probability(fraction, samples)
        daily = escape_probability(fraction, samples * checks)
        odds.append(f"missing {fraction:.0%} of its blocks escapes one check {_percent(once)}, "
                    f"a day of {checks} checks {_percent(daily)}")
    return f"{samples} random blocks per sampled check: a copy " + "; ".join(odds)


def _percent(probability: float) -> str:
    if probability >= 0.095:
        return f"{probability:.0%}"
    if probability >= 0.0001:
        return f"{probability:.2%}"
    return "< 0.01%"


# --- what an answer means

class Outcome(NamedTuple):
    """What one check found, before it is recorded."""

    result: str          # one of RESULTS
    block: str | None    # the first bad block, if any
    blocks: int          # blocks fetched and re-hashed
    bytes: int
    seconds: float
    detail: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a check changes on the copy, and whether a copy elsewhere is wanted at once."""

    changes: dict[str, object]
    replan: bool = False
    became_failing: bool = False


def presence_outcome(said: str, seconds: float) -> Outcome:
    """The place's word about a root as a finding: pinned (or still pinning) is ok, anything else missing."""
    if said == "pinned":
        return Outcome("ok", None, 0, 0, seconds, "")
    if said == "pinning":
        return Outcome("ok", None, 0, 0, seconds, "the place says it is still pinning it")
    return Outcome("missing", None, 0, 0, seconds, f"the place says it does not pin it ({said})")


def judge(copy: CopyAudit, level: str, outcome: Outcome, policy: AuditPolicy, now: float) -> Verdict:
    """The change a check's outcome makes to the copy.

    Only a passed sampled or full check makes a copy verified. Missing: failing and
    due, so the push queue sends it again. Corrupt: never counted again (until
    `artkeep push --retry`), and a copy elsewhere is planned. Unreachable: one miss
    changes nothing but the time; `failing_alert_after` in a row make it failing.
    """
    checked: dict[str, object] = {f"{level}_checked": now, "last_check": now}
    if outcome.result == "ok":
        if level in PROOF_LEVELS:
            return Verdict({**checked, "state": "verified", "verified": now, "misses": 0, "attempts": 0,
                            "last_error": None})
        return Verdict({**checked, "misses": 0})
    if outcome.result == "missing":
        return Verdict({**checked, "state": "failing", "attempts": copy.attempts + 1, "misses": 0,
                        "last_error": f"audit ({level}): {outcome.detail}", "due": now},
                       became_failing=True)
    if outcome.result == "corrupt":
        return Verdict({**checked, "state": "corrupt", "misses": 0, "due": None,
                        "last_error": f"audit ({level}): {outcome.detail}"}, replan=True)
    if outcome.result != "unreachable":
        raise ValueError(f"not an audit result: {outcome.result!r}")
    misses = copy.misses + 1
    if misses < policy.failing_alert_after:
        return Verdict({"last_check": now, "misses": misses})
    return Verdict({"last_check": now, "misses": misses, "state": "failing", "attempts": misses,
                    "last_error": f"audit: unreachable {misses} times in a row ({outcome.detail})",
                    "due": now}, became_failing=True)


# --- repair: which copies count toward the target

def counts_toward_target(state: str, verified: float | None, due: float | None, now: float,
                         window: float) -> bool:
    """Whether a copy counts when looking for pins below target: verified within the window, or on its way.

    On its way: pending or pushed, or claimed with the push queue still to read it back.
    Stale, failing, corrupt and unverifiable claimed copies do not count.
    """
    if state == "verified":
        return verified is not None and verified >= now - window
    return state in ("pending", "pushed") or (state == "claimed" and due is not None)


def is_stale(state: str, verified: float | None, now: float, window: float) -> bool:
    """A verified copy whose last passed check is older than the window: shown as stale, not counted."""
    return state == "verified" and (verified is None or verified < now - window)
