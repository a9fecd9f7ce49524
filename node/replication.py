"""Replication rules: which places should hold a root, when to try a failed push again, what a copy is worth.

Pure: values in, values out. The push queue (node.pusher) and the index feed it
rows; it never reads a clock or a socket itself (`now` and the random source are
arguments).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from node.remotes.base import PlaceSpec

COPY_STATES: Final = ("pending", "pushed", "claimed", "verified", "failing", "corrupt")
# A copy in these states is still on its way or held: the planner does not look for another place.
LIVE_STATES: Final = frozenset({"pending", "pushed", "claimed", "verified", "failing"})


@dataclass(frozen=True, slots=True)
class CopyView:
    """One place's copy of a root, as `whereis` shows it."""

    place: str
    kind: str
    state: str               # one of COPY_STATES
    last_check: float | None
    verified: float | None
    error: str | None
    passed: Mapping[str, int] = field(default_factory=dict)  # level → passed checks ever (kept or rolled up)
    passed_since: float | None = None                         # the first of them


@dataclass(frozen=True, slots=True)
class Whereabouts:
    """Where a root's copies live, and how many of them we have proof for."""

    cid: str
    target: int
    verified_copies: int
    places: tuple[CopyView, ...]
    detection: str | None = None   # what the sampled audits can catch, in words (filled by the auditor)


@dataclass(frozen=True, slots=True)
class Health:
    """The replication summary `artkeep status` and the health page show."""

    works_below_target: int   # pins (works and plain files) with fewer verified copies than the target
    queue_depth: int          # copies the push queue still has work for
    failing_places: tuple[str, ...]
    places: int


@dataclass(frozen=True, slots=True)
class FindingView:
    """One audit check, as the health page lists it."""

    cid: str
    place: str
    level: str
    result: str
    block: str | None
    at: float


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: base · 2^(attempts−1), capped, then scaled by a random 50–100 %."""

    base: float = 30.0
    cap: float = 6 * 3600.0

    def delay(self, attempts: int, rng: random.Random, retry_after: float | None = None) -> float:
        raw = min(self.cap, self.base * 2.0 ** max(0, attempts - 1))
        jittered = raw * (0.5 + rng.random() / 2)  # spreads retries so a recovering place is not stampeded
        return max(jittered, min(retry_after or 0.0, self.cap))


def passed_at(place: str, passed: Mapping[tuple[str, str], tuple[int, float | None]]) \
        -> tuple[dict[str, int], float | None]:
    """One place's share of a root's passed checks ((place, level) → (count, first time)): counts per
    level, and the time of the first."""
    mine = {level: value for (name, level), value in passed.items() if name == place}
    firsts = [first for _, first in mine.values() if first is not None]
    return {level: count for level, (count, _) in mine.items()}, min(firsts, default=None)


def may_hold(place: PlaceSpec, pin_kind: str) -> bool:
    """Whether the policy lets `place` hold a pin of this kind (a work, or any other pin): a place
    the push queue may pick to keep a copy that counts toward the target."""
    return place.kind != "gateway" and _holds(place, pin_kind)


def watches(place: PlaceSpec, pin_kind: str) -> bool:
    """Whether `place` is a gateway that should serve pins of this kind. Nothing is sent there and its
    copies never count toward the target (a gateway promises nothing), but they are read back and
    audited like any other, so a gateway that stops serving a work is noticed."""
    return place.kind == "gateway" and _holds(place, pin_kind)


def counts(kind: str) -> bool:
    """Whether a verified copy on a place of this kind counts toward the target."""
    return kind != "gateway"


def _holds(place: PlaceSpec, pin_kind: str) -> bool:
    if place.holds == "works":
        return pin_kind == "work"
    if place.holds == "pins":
        return pin_kind != "work"
    return True


def places_to_add(target: int, pin_kind: str, dag_bytes: int, places: Sequence[PlaceSpec],
                  states: Mapping[str, str], used_bytes: Mapping[str, int]) -> list[str]:
    """The places to queue new copies on, so that live copies reach `target`.

    `states` maps place name → copy state for the copies that exist. Corrupt copies
    and copies on places that may no longer hold this kind do not count. New copies
    go first to the places with the most room left (fraction of quota, then name),
    and never beyond a quota.
    """
    counted = {name: state in LIVE_STATES for name, state in states.items()}
    return places_to_repair(target, pin_kind, dag_bytes, places, counted, used_bytes)


def _has_room(place: PlaceSpec, dag_bytes: int, used: int) -> bool:
    return place.quota_bytes is None or used + dag_bytes <= place.quota_bytes


def _fill(place: PlaceSpec, used: int) -> float:
    return 0.0 if not place.quota_bytes else used / place.quota_bytes


def escape_probability(missing_fraction: float, samples: int) -> float:
    """The chance that `samples` random blocks all miss the damage on a place missing this fraction."""
    return (1.0 - missing_fraction) ** samples


def places_to_repair(target: int, pin_kind: str, dag_bytes: int, places: Sequence[PlaceSpec],
                     counted: Mapping[str, bool], used: Mapping[str, int]) -> list[str]:
    """The places to queue new copies on after an audit, so that copies that count reach `target`.

    Unlike `places_to_add`, which trusts every live copy, `counted` maps place name →
    whether that copy counts (node.audit.counts_toward_target: verified within the
    window, or still on its way); failing, corrupt and stale copies do not. A place
    that has a copy in any state is never picked again: the push queue works on that one.
    """
    have = sum(1 for place in places if counted.get(place.name) and may_hold(place, pin_kind))
    wanted = target - have
    if wanted <= 0:
        return []
    candidates = [place for place in places
                  if place.name not in counted and may_hold(place, pin_kind)
                  and _has_room(place, dag_bytes, used.get(place.name, 0))]
    candidates.sort(key=lambda place: (_fill(place, used.get(place.name, 0)), place.name))
    return [place.name for place in candidates[:wanted]]
