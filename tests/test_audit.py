"""The audit's rules (node.audit, pure): settings, the even schedule, sampling, verdicts, repair counting."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from node import audit, config, replication
from node.audit import DAY, AuditPolicy, CopyAudit, Outcome
from node.errors import InputError
from node.remotes.base import PlaceSpec


def copy(**changes: Any) -> CopyAudit:
    base = CopyAudit(cid="bafyroot", place="p", state="verified", handle=None, since=0.0, verified=0.0,
                     presence_checked=None, sampled_checked=None, full_checked=None, misses=0, attempts=0)
    return base._replace(**changes)


def test_policy_comes_from_the_config_in_seconds_and_refuses_nonsense() -> None:
    policy = AuditPolicy.from_config(config.build({"audit": {"verified_window": 3, "samples": 12}}, {}))
    assert policy.verified_window == 3 * DAY and policy.samples == 12
    assert policy.period("sampled") == DAY / policy.sampled_per_day
    assert policy.period("full") == policy.full_cycle_days * DAY
    defaults = AuditPolicy.from_config(config.build({}, {}))
    assert defaults == AuditPolicy()  # the dataclass and the declared settings agree
    for bad in ({"full_at": 24}, {"samples": 0}, {"webhook": "ftp://example.invalid/x"}):
        with pytest.raises(InputError):
            AuditPolicy.from_config(config.build({"audit": bad}, {}))


def test_each_copy_is_checked_once_per_period_and_a_day_of_checks_comes_evenly() -> None:
    policy = AuditPolicy(sampled_per_day=4)
    copies: dict[str, float | None] = {f"cid{i}": None for i in range(2000)}  # cid → last sampled check
    per_hour: Counter[int] = Counter()
    checks: Counter[str] = Counter()
    tick = 300.0
    for step in range(1, int(DAY / tick) + 1):  # one day of ticks, starting from copies made at time 0
        now = step * tick
        for cid, last in copies.items():
            if audit.copy_due(copy(cid=cid, sampled_checked=last, since=0.0), "sampled", policy, now):
                copies[cid] = now
                checks[cid] += 1
                per_hour[int(now // 3600) % 24] += 1
    assert set(checks.values()) <= {3, 4, 5} and sum(checks.values()) / len(checks) == pytest.approx(4, 0.01)
    expected = sum(per_hour.values()) / 24
    assert all(abs(count - expected) < 0.15 * expected for count in per_hour.values()), per_hour


def test_only_claimed_or_verified_copies_are_audited_and_new_ones_wait_for_their_slot() -> None:
    policy = AuditPolicy()
    period = policy.period("presence")
    for state in ("pending", "pushed", "failing", "corrupt"):
        assert not audit.copy_due(copy(state=state), "presence", policy, 10 * DAY)
    key = "bafyroot p presence"
    slot = audit.latest_slot(key, period, 10 * DAY)
    assert not audit.copy_due(copy(since=slot + 1), "presence", policy, 10 * DAY)
    assert audit.copy_due(copy(since=slot - 1), "presence", policy, 10 * DAY)
    assert audit.copy_due(copy(since=None), "presence", policy, 10 * DAY)


def test_full_rounds_take_the_longest_unchecked_first() -> None:
    copies = [copy(place="a", full_checked=50.0), copy(place="b"), copy(place="c", full_checked=10.0)]
    assert [c.place for c in audit.overdue_first(copies, "full")] == ["b", "c", "a"]


def test_samples_are_distinct_uniform_and_all_blocks_when_few() -> None:
    blocks = [f"b{i}" for i in range(40)]
    rng = random.Random(5)
    seen: Counter[str] = Counter()
    for _ in range(4000):
        chosen = audit.choose_samples(blocks, 8, rng)
        assert len(chosen) == len(set(chosen)) == 8 and set(chosen) <= set(blocks)
        seen.update(chosen)
    expected = 4000 * 8 / 40
    assert all(abs(count - expected) < 0.15 * expected for count in seen.values())
    assert audit.choose_samples(["x", "y", "x"], 8, rng) == ["x", "y"]


def test_detection_odds_are_the_escape_probability_in_words() -> None:
    text = audit.detection_text(8, 4)
    once = replication.escape_probability(0.1, 8)
    day = replication.escape_probability(0.1, 32)
    assert f"{once:.0%}" in text and f"{day:.2%}" in text and "8 random blocks" in text
    assert "all 5 blocks" in audit.detection_text(8, 4, blocks=5)


def test_only_a_passed_sampled_or_full_check_verifies() -> None:
    policy = AuditPolicy(failing_alert_after=3)
    claimed = copy(state="claimed", verified=None)
    ok = Outcome("ok", None, 8, 1000, 0.1, "")
    presence = audit.judge(claimed, "presence", ok, policy, 100.0)
    assert "state" not in presence.changes and "verified" not in presence.changes
    assert presence.changes["presence_checked"] == 100.0
    for level in ("sampled", "full"):
        verdict = audit.judge(claimed, level, ok, policy, 100.0)
        assert verdict.changes["state"] == "verified" and verdict.changes["verified"] == 100.0
    assert audit.presence_outcome("pinned", 0.1).result == "ok"
    assert audit.presence_outcome("missing", 0.1).result == "missing"


def test_missing_is_pushed_again_corrupt_is_replaced_and_misses_add_up() -> None:
    policy = AuditPolicy(failing_alert_after=3)
    gone = Outcome("missing", "b1", 2, 10, 0.1, "gone")
    missing = audit.judge(copy(attempts=1), "sampled", gone, policy, 5.0)
    assert missing.changes["state"] == "failing" and missing.changes["due"] == 5.0
    assert missing.changes["attempts"] == 2 and missing.became_failing
    corrupt = audit.judge(copy(), "full", Outcome("corrupt", "b1", 2, 10, 0.1, "wrong"), policy, 5.0)
    assert corrupt.changes["state"] == "corrupt" and corrupt.changes["due"] is None and corrupt.replan
    down = Outcome("unreachable", None, 0, 0, 1.0, "refused")
    first = audit.judge(copy(), "sampled", down, policy, 5.0)
    assert first.changes == {"last_check": 5.0, "misses": 1}  # one miss: no verdict on the copy
    third = audit.judge(copy(misses=2), "sampled", down, policy, 5.0)
    assert third.changes["state"] == "failing" and third.became_failing and third.changes["due"] == 5.0


def test_stale_failing_and_unverifiable_copies_do_not_count_toward_the_target() -> None:
    window, now = 7 * DAY, 100 * DAY
    assert audit.counts_toward_target("verified", now - DAY, None, now, window)
    assert not audit.counts_toward_target("verified", now - 8 * DAY, None, now, window)
    assert audit.is_stale("verified", now - 8 * DAY, now, window)
    assert audit.counts_toward_target("pending", None, now, now, window)
    assert audit.counts_toward_target("claimed", None, now, now, window)      # the queue still reads it
    assert not audit.counts_toward_target("claimed", None, None, now, window)  # its word, nothing more
    assert not audit.counts_toward_target("failing", now, now, now, window)
    assert not audit.counts_toward_target("corrupt", now, None, now, window)


def test_repair_picks_new_places_never_ones_that_have_a_copy() -> None:
    places = [PlaceSpec(name, "kubo", f"http://127.0.0.1:1/{name}") for name in ("a", "b", "c", "d")]
    counted = {"a": True, "b": False}  # b's copy failed: it stays b's, the queue retries it
    assert replication.places_to_repair(3, "work", 10, places, counted, {}) == ["c", "d"]
    assert replication.places_to_repair(1, "work", 10, places, counted, {}) == []
    full = [*places[:3], PlaceSpec("d", "kubo", "http://127.0.0.1:1/d", quota_bytes=5)]
    assert replication.places_to_repair(3, "work", 10, full, counted, {}) == ["c"]
