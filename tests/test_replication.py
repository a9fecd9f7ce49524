"""The replication policy (pure) and the push queue's table: planning, leases, backoff."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from node import replication
from node.errors import InputError, PlaceNotFound
from node.index import Index
from node.node import Node
from node.remotes.base import PlaceSpec


def place(name: str, *, kind: str = "kubo", holds: str = "all", quota: int | None = None) -> PlaceSpec:
    return PlaceSpec(name, kind, f"http://127.0.0.1:1/{name}", "secret-token", {}, quota, holds)


def test_places_are_added_until_the_target_is_met_with_the_emptiest_first() -> None:
    places = [place("a"), place("b", quota=1000), place("c", quota=1000)]
    used = {"b": 900, "c": 100}
    assert replication.places_to_add(2, "work", 50, places, {}, used) == ["a", "c"]
    assert replication.places_to_add(2, "work", 50, places, {"a": "verified"}, used) == ["c"]
    assert replication.places_to_add(2, "work", 50, places, {"a": "pending", "c": "failing"}, used) == []


def test_corrupt_copies_and_full_quotas_do_not_count() -> None:
    places = [place("a"), place("b", quota=100), place("c")]
    assert replication.places_to_add(2, "work", 150, places, {"a": "corrupt"}, {}) == ["c"]
    assert replication.places_to_add(3, "work", 150, places, {}, {}) == ["a", "c"]  # b is too small


def test_holds_and_read_only_gateways_limit_what_goes_where() -> None:
    places = [place("works-only", holds="works"), place("pins-only", holds="pins"),
              place("gw", kind="gateway")]
    assert replication.places_to_add(5, "work", 1, places, {}, {}) == ["works-only"]
    assert replication.places_to_add(5, "file", 1, places, {}, {}) == ["pins-only"]


def test_backoff_doubles_with_jitter_is_capped_and_honours_retry_after() -> None:
    backoff = replication.Backoff(base=10, cap=100)
    rng = random.Random(7)
    delays = [backoff.delay(attempt, rng) for attempt in (1, 2, 3, 4, 5, 6)]
    for attempt, delay in zip((1, 2, 3, 4), delays, strict=False):
        full = 10 * 2 ** (attempt - 1)
        assert full / 2 <= delay <= full
    assert all(delay <= 100 for delay in delays)
    assert backoff.delay(1, rng, retry_after=60) == 60
    assert backoff.delay(1, rng, retry_after=10_000) == 100


def test_escape_probability() -> None:
    assert replication.escape_probability(0.1, 0) == 1
    assert replication.escape_probability(0.1, 20) == pytest.approx(0.9 ** 20)
    assert replication.escape_probability(1.0, 1) == 0


def test_queue_leases_respect_per_place_limits_and_expire(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.sqlite")
    index.add_place(place("a"))
    index.add_place(place("b"))
    with pytest.raises(InputError):
        index.add_place(place("a"))
    assert index.add_copies([(f"cid{i}", name, 10) for i in range(3) for name in ("a", "b")], now=100) == 6
    assert index.add_copies([("cid0", "a", 10)], now=100) == 0  # idempotent
    taken = index.lease_due_copies(now=100, lease=60, limit=10, per_place=2, busy={"b": 1})
    assert sorted(row.place for row in taken) == ["a", "a", "b"]
    # A second worker sees only what the first did not lease.
    other = index.lease_due_copies(now=101, lease=60, limit=10, per_place=5, busy={})
    assert {(row.cid, row.place) for row in other}.isdisjoint({(row.cid, row.place) for row in taken})
    assert len(other) == 3
    # Leases of a worker that died expire; then the copies are due again.
    assert index.lease_due_copies(now=150, lease=60, limit=10, per_place=5, busy={}) == []
    assert len(index.lease_due_copies(now=200, lease=60, limit=10, per_place=5, busy={})) == 6
    index.update_copy("cid0", "a", state="verified", due=None, verified=300)
    assert index.queue_depth() == 5
    assert index.copies_of("cid0")[0].state == "verified"
    with pytest.raises(ValueError):
        index.update_copy("cid0", "a", nonsense=1)
    index.close()


def test_node_plans_copies_for_every_pin_and_removing_a_place_forgets_its_copies(tmp_path: Path) -> None:
    source = tmp_path / "a.txt"
    source.write_bytes(b"keep me in two places")
    with Node(tmp_path / "home", copies=2) as node:
        from node.profiles import get_profile

        [(_, link)] = list(node.add_files([source], get_profile("unixfs-v1-2025")))
        assert node.plan_copies() == 0  # no places yet
        node.add_place(place("a"))
        node.add_place(place("b"))
        node.add_place(place("c"))
        assert node.plan_copies() == 2
        assert node.plan_copies() == 0
        where = node.whereis(link.cid)
        assert [view.state for view in where.places] == ["pending", "pending"]
        assert where.verified_copies == 0 and where.target == 2
        health = node.replication_health()
        assert (health.works_below_target, health.queue_depth, health.places) == (1, 2, 3)
        first = where.places[0].place
        node.remove_place(first)
        assert node.plan_copies() == 1  # the lost copy is planned on the place left over
        assert len(node.whereis(link.cid).places) == 2
        with pytest.raises(PlaceNotFound):
            node.remove_place(first)
