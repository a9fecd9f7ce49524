"""Audits against real places: artkeep daemons on 127.0.0.1 whose stores the tests damage on disk.

A source node holds real works and pushes them (the real push queue) to places
of the kubo kind (other artkeep daemons' /api/v0); then a block file is
deleted on one place, a byte flipped in one on another, a third is stopped,
and the audit must name exactly those copies; repair must bring every pin back
to its target; a second round must pass. Liars (tests/fault_servers.py, FAKE
servers in front of a real daemon) say "pinned" but serve wrong bytes or none,
and are never counted.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from PIL import Image, PngImagePlugin

from node import cid as cids
from node import config, sources
from node.audit import AuditPolicy
from node.auditor import Auditor, RoundReport
from node.cid import RAW, Cid
from node.index import FindingRow
from node.node import Node
from node.profiles import get_profile
from node.pusher import Pusher, PushSettings
from node.remotes.base import PlaceSpec
from node.scheduler import AuditSchedule
from node.web.app import AUDIT, build_app
from node.web.context import PUSHER, ServeOptions
from tests.conftest import ArtkeepCli
from tests.fault_servers import FaultServer, serve, status, tamper

# Sampled checks here fetch every block (no work has 64), so each damaged block is found every time.
POLICY = AuditPolicy(schedule=False, samples=64, failing_alert_after=1, check_timeout=10, tick=1)
FAST_PUSH = PushSettings(timeout=10)
StartDaemon = Callable[..., Awaitable["Daemon"]]


@dataclass
class Daemon:
    """An artkeep daemon on a loopback port that a test can stop."""

    url: str
    node: Node
    token: str
    runner: web.AppRunner

    async def stop(self) -> None:
        await self.runner.cleanup()


@pytest.fixture
async def daemons(tmp_path: Path) -> AsyncIterator[StartDaemon]:
    """A factory: `await daemons(name, policy)` starts a daemon with its own home under tmp_path."""
    started: list[Daemon] = []

    async def start(name: str, policy: AuditPolicy | None = None, copies: int = 2) -> Daemon:
        values = dict(config.build({}, {}).values)
        values["fetch.allow_networks"] = "127.0.0.0/8"
        values["push.timeout"] = 10
        node = Node(tmp_path / name, copies=copies, audit=policy or AuditPolicy(schedule=False))
        app = build_app(node, ServeOptions.from_config(config.Config(values)))
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        _, token = node.create_token("tests")
        daemon = Daemon(f"http://127.0.0.1:{runner.addresses[0][1]}", node, token, runner)
        started.append(daemon)
        return daemon

    yield start
    for daemon in reversed(started):
        await daemon.runner.cleanup()
        daemon.node.close()


def make_work(node: Node, folder: Path, name: str) -> Cid:
    """A noise PNG with A1111 parameters (~0.8 MB: several 256 KiB leaves) rescued as a signed work."""
    rng = random.Random(name)
    image = Image.frombytes("RGB", (512, 512), rng.randbytes(512 * 512 * 3))
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", f"{name}\nNegative prompt: blur\nSteps: 20, Sampler: Euler a, Seed: 7")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    image.save(path, pnginfo=info, compress_level=0)
    [rescued] = list(node.rescue(sources.walk([path], archives=False), get_profile("kubo-cidv1")))
    assert rescued.outcome == "new" and rescued.work is not None, rescued
    return rescued.work


def kubo_place(name: str, daemon: Daemon | FaultServer, token: str) -> PlaceSpec:
    return PlaceSpec(name, "kubo", daemon.url, token, {"timeout": "5"})


def leaves(node: Node, root: Cid) -> list[Cid]:
    return [cid for cid in node.dag_blocks(root) if cid.codec == RAW]


def hand_over(source: Node, target: Node, root: Cid, tmp_path: Path) -> None:
    """Pin root on target from source's CAR, with no push queue involved."""
    car_path = tmp_path / f"{root}.car"
    with car_path.open("wb") as out:
        source.export_car(root, out.write)
    with car_path.open("rb") as stream:
        target.import_car(stream, str(root))


def flip_a_byte(node: Node, cid: Cid) -> None:
    path = node.store.path_of(cid)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.chmod(0o644)
    path.write_bytes(bytes(data))


async def push_all(node: Node, settings: PushSettings = FAST_PUSH) -> None:
    await asyncio.to_thread(node.plan_copies)
    async with Pusher(node, settings) as pusher:
        await pusher.drain(wait_retries=False)


async def audit(node: Node, level: str, policy: AuditPolicy = POLICY) -> tuple[list[FindingRow], RoundReport]:
    found: list[FindingRow] = []
    async with Auditor(node, policy) as auditor:
        report = await auditor.run(level, force=True, on_finding=found.append)
    return found, report


def states(node: Node, root: Cid) -> dict[str, str]:
    return {view.place: view.state for view in node.whereis(root).places}


async def test_audit_names_exactly_the_damaged_copies_and_repair_restores_the_target(
        daemons: StartDaemon, tmp_path: Path) -> None:
    source = Node(tmp_path / "source", copies=3, audit=POLICY)
    first, second = [await asyncio.to_thread(make_work, source, tmp_path / "art", name)
                     for name in ("harbour", "orchard")]
    places = {name: await daemons(name) for name in ("a", "b", "c", "d", "e", "f")}
    for name, daemon in places.items():
        source.add_place(kubo_place(name, daemon, daemon.token))
    await push_all(source)
    for root in (first, second):  # the planner took a, b and c (emptiest, then by name); d to f are spare
        assert states(source, root) == {"a": "verified", "b": "verified", "c": "verified"}

    deleted, flipped = leaves(source, first)[:2]
    places["a"].node.store.path_of(deleted).unlink()
    flip_a_byte(places["b"].node, flipped)
    await places["c"].stop()

    found, report = await audit(source, "sampled")
    # b, an artkeep node, refuses to serve the block that rotted there (HTTP 500 "... does not match its
    # CID (damaged)"): for the auditor that block is missing there.
    damaged_at_b = next(f for f in found if f.place == "b" and f.result != "ok")
    assert (damaged_at_b.result, damaged_at_b.block) == ("missing", str(flipped)), damaged_at_b
    problems = sorted((f.cid, f.place, f.result, f.block) for f in found
                      if f.result != "ok" and f.place != "b")
    assert problems == sorted([
        (str(first), "a", "missing", str(deleted)),
        (str(first), "c", "unreachable", None),
        (str(second), "c", "unreachable", None),
    ])
    assert damaged_at_b.cid == str(first)
    assert sorted((f.cid, f.place) for f in found if f.result == "ok") == [(str(second), "a"),
                                                                            (str(second), "b")]
    assert all(f.level == "sampled" for f in found)
    ok = next(f for f in found if f.result == "ok")
    assert ok.blocks == len(source.dag_blocks(second)) and ok.bytes > 0
    assert report.repairs == 4  # first: d, e and f; second: d
    assert source.whereis(first).verified_copies == 0 and source.whereis(second).verified_copies == 2
    assert source.replication_health().works_below_target == 2

    await push_all(source)  # the queue sends the repairs, and tries the failing copies again
    # The re-push sends the whole CAR again: a gets back the block it lost, and b replaces its rotted
    # file with the right bytes (a damaged block is the one file a store replaces). c is down.
    assert states(source, first) == {"a": "verified", "b": "verified", "c": "failing", "d": "verified",
                                     "e": "verified", "f": "verified"}
    assert states(source, second) == {"a": "verified", "b": "verified", "c": "failing", "d": "verified"}
    assert [source.whereis(root).verified_copies for root in (first, second)] == [5, 3]
    assert places["b"].node.get_block(flipped) == source.get_block(flipped)
    assert source.replication_health().works_below_target == 0

    again, report = await audit(source, "sampled")
    assert again and all(f.result == "ok" for f in again), again
    assert report.repairs == 0
    full, _ = await audit(source, "full")
    assert full and all(f.result == "ok" and f.level == "full" for f in full), full
    assert {(f.cid, f.place) for f in full} == {(f.cid, f.place) for f in again}
    source.close()


async def test_presence_is_never_proof_and_liars_are_never_counted(daemons: StartDaemon,
                                                                    tmp_path: Path) -> None:
    source = Node(tmp_path / "source", copies=2, audit=POLICY)
    root = await asyncio.to_thread(make_work, source, tmp_path / "art", "lantern")
    honest, behind_wrong, behind_empty = [await daemons(name) for name in ("honest", "w", "e")]
    async with (FaultServer(upstream=behind_wrong.url) as wrong,
                FaultServer(upstream=behind_empty.url) as empty):
        # Both liars pass pin/ls through (the real daemon pinned what was pushed) and lie about blocks.
        wrong.inject(tamper(3), path="/api/v0/block/get")
        empty.inject(status(500, body=json.dumps({"Message": "block was not found locally (offline)",
                                                  "Code": 0, "Type": "error"}).encode()),
                     path="/api/v0/block/get")
        source.add_place(kubo_place("wrong", wrong, behind_wrong.token))
        source.add_place(kubo_place("empty", empty, behind_empty.token))
        await push_all(source, replace(FAST_PUSH, verify=False))  # their word only: claimed
        assert states(source, root) == {"empty": "claimed", "wrong": "claimed"}

        found, _ = await audit(source, "presence")
        assert sorted((f.place, f.result) for f in found) == [("empty", "ok"), ("wrong", "ok")]
        assert source.whereis(root).verified_copies == 0  # "pinned" is not proof
        assert states(source, root) == {"empty": "claimed", "wrong": "claimed"}

        source.add_place(kubo_place("honest", honest, honest.token))
        found, report = await audit(source, "sampled")
        results = {f.place: (f.result, f.block is not None) for f in found}
        assert results == {"wrong": ("corrupt", True), "empty": ("missing", True)}
        assert states(source, root) == {"empty": "failing", "wrong": "corrupt", "honest": "pending"}
        assert source.whereis(root).verified_copies == 0
        assert report.repairs == 1  # the honest place gets a copy
        await push_all(source)
        assert states(source, root)["honest"] == "verified"
        assert source.whereis(root).verified_copies == 1
        corrupt = next(f for f in found if f.result == "corrupt")
        assert corrupt.detail.startswith("served wrong bytes") and corrupt.block in {
            str(cid) for cid in source.dag_blocks(root)}
    source.close()


def pinned_everywhere(root: Cid, *, listing: bool) -> bytes:
    """A PSA answer for a pin the service claims it holds: what a liar says to every question."""
    status = {"requestid": "liar-1", "status": "pinned", "created": "2026-11-21T00:00:00Z",
              "pin": {"cid": str(root)}, "delegates": []}
    return json.dumps({"count": 1, "results": [status]} if listing else status).encode()


def lying_pinning_service(front: FaultServer, root: Cid) -> None:
    """Turn `front` into a FAKE pinning service whose PSA status and gateway HEAD say "pinned" for root
    whatever it holds. GETs of blocks go on to its upstream (a real daemon), or are 404 without one."""
    front.inject(serve(pinned_everywhere(root, listing=False)), path="/psa/pins/", method="GET")
    front.inject(serve(pinned_everywhere(root, listing=True)), path="/psa/pins", method="GET")
    front.inject(status(200, headers={"Content-Type": "application/vnd.ipld.raw"}), path="/ipfs/",
                 method="HEAD")


async def test_a_pinning_service_that_says_pinned_but_serves_wrong_bytes_or_nothing_never_counts(
        daemons: StartDaemon, tmp_path: Path) -> None:
    source = Node(tmp_path / "source", copies=2, audit=POLICY)
    root = await asyncio.to_thread(make_work, source, tmp_path / "art", "beacon")
    upstream = await daemons("upstream")  # a real daemon that holds the work: the wrong-bytes liar's store
    hand_over(source, upstream.node, root, tmp_path)
    async with FaultServer(upstream=upstream.url) as wrong, FaultServer() as empty:
        for liar in (wrong, empty):
            lying_pinning_service(liar, root)
        wrong.inject(tamper(-5), path="/ipfs/", method="GET")  # every block and CAR it serves is off
        for name, liar in (("wrong", wrong), ("empty", empty)):
            options = {"gateway": liar.url, "origins": "http://127.0.0.1:9", "timeout": "5"}
            source.add_place(PlaceSpec(name, "pinning", f"{liar.url}/psa", "psa-token", options))
        await push_all(source, replace(FAST_PUSH, verify=False))
        assert states(source, root) == {"empty": "claimed", "wrong": "claimed"}  # found pinned at once

        found, _ = await audit(source, "presence")
        assert sorted((f.place, f.result) for f in found) == [("empty", "ok"), ("wrong", "ok")]
        async with aiohttp.ClientSession() as client, client.head(f"{empty.url}/ipfs/{root}") as head:
            assert head.status == 200  # its gateway answers HEAD too: still no proof
        assert source.whereis(root).verified_copies == 0

        found, _ = await audit(source, "sampled")
        assert {f.place: f.result for f in found} == {"wrong": "corrupt", "empty": "missing"}, found
        assert source.whereis(root).verified_copies == 0
        assert source.replication_health().works_below_target == 1
        assert states(source, root) == {"empty": "failing", "wrong": "corrupt"}
        assert all(f.block in {str(cid) for cid in source.dag_blocks(root)} for f in found)

        # The push queue, which reads every block back before it says verified, is not fooled either.
        source.retry_copies([str(root)])
        await push_all(source)
        assert states(source, root) == {"empty": "failing", "wrong": "corrupt"}
        assert source.whereis(root).verified_copies == 0
    source.close()


async def test_a_damaged_local_block_is_healed_from_a_verified_copy(daemons: StartDaemon,
                                                                     tmp_path: Path) -> None:
    source = Node(tmp_path / "source", copies=1, audit=POLICY)
    root = await asyncio.to_thread(make_work, source, tmp_path / "art", "meadow")
    place = await daemons("p")
    source.add_place(kubo_place("p", place, place.token))
    await push_all(source)
    rotten, gone = leaves(source, root)[:2]
    flip_a_byte(source, rotten)
    source.store.path_of(gone).unlink()

    found, report = await audit(source, "local")
    assert [(f.place, f.result) for f in found] == [("", "corrupt"), ("", "ok")]
    damage, healed = found
    assert damage.detail.count("healed from p") == 2 and str(rotten) in damage.detail
    assert healed.detail == "re-verified after healing" and healed.blocks == len(source.dag_blocks(root))
    assert report.healed == 2
    assert source.get_block(rotten) == place.node.get_block(rotten)
    assert not [f for f in source.fsck() if f.kind != "leftover"]

    # With the only copy gone too, nothing can heal it: the damage is reported, never papered over.
    flip_a_byte(source, rotten)
    place.node.store.path_of(rotten).unlink()
    found, _ = await audit(source, "local")
    assert [(f.result, f.block) for f in found] == [("corrupt", str(rotten))]
    assert "no verified copy gave it back" in found[0].detail
    with pytest.raises(Exception, match="does not match"):
        source.get_block(rotten)
    source.close()


async def test_a_place_that_is_down_is_skipped_after_a_few_tries_and_reported(
        daemons: StartDaemon, tmp_path: Path) -> None:
    received: list[dict[str, object]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response()

    hook_app = web.Application()
    hook_app.router.add_post("/hook", hook)
    hook_runner = web.AppRunner(hook_app, access_log=None)
    await hook_runner.setup()
    await web.TCPSite(hook_runner, "127.0.0.1", 0).start()
    webhook = f"http://127.0.0.1:{hook_runner.addresses[0][1]}/hook"
    policy = replace(POLICY, failing_alert_after=2, concurrency_per_place=1, webhook=webhook)
    source = Node(tmp_path / "source", copies=1, audit=policy)
    roots = [await asyncio.to_thread(make_work, source, tmp_path / "art", f"w{i}") for i in range(5)]
    place = await daemons("p")
    source.add_place(kubo_place("p", place, place.token))
    await push_all(source)
    await place.stop()

    async with Auditor(source, policy) as auditor:
        found: list[FindingRow] = []
        report = await auditor.run("sampled", force=True, on_finding=found.append)
        assert [f.result for f in found] == ["unreachable"] * 3  # then p is skipped for the round
        assert report.skipped_places == {"p"} and report.repairs == 0
        assert all(view.state == "verified" for root in roots for view in source.whereis(root).places)
        assert not received
        report = await auditor.run("sampled", force=True, on_finding=found.append)
    # The second miss in a row makes the copies failing; the place is reported once.
    assert sum(1 for root in roots if states(source, root) == {"p": "failing"}) == 3
    assert source.replication_health().failing_places == ("p",)
    assert [(body["event"], body["place"]) for body in received] == [("place_failing", "p")]
    await hook_runner.cleanup()
    source.close()


async def test_the_daemon_audits_on_schedule_and_counts_findings_in_metrics(
        daemons: StartDaemon, tmp_path: Path) -> None:
    place = await daemons("p")
    policy = replace(POLICY, schedule=True, tick=1, sampled_per_day=86400, presence_per_day=86400,
                     local_cycle_days=1 / 86400)  # every copy due each second
    served = await daemons("source", policy, copies=1)
    root = await asyncio.to_thread(make_work, served.node, tmp_path / "art", "dune")
    served.node.add_place(kubo_place("p", place, place.token))
    app = served.runner.app
    app[PUSHER].wake.set()
    deadline = asyncio.get_running_loop().time() + 20
    levels: set[str] = set()
    while asyncio.get_running_loop().time() < deadline and not {"presence", "sampled", "local"} <= levels:
        await asyncio.sleep(0.3)
        levels = {f.level for f in served.node.index.recent_findings(100) if f.result == "ok"}
    assert {"presence", "sampled", "local"} <= levels, served.node.index.recent_findings(100)
    assert served.node.whereis(root).verified_copies == 1
    assert set(app[AUDIT].reports) >= {"presence", "sampled", "local"}
    from aiohttp import ClientSession

    async with ClientSession() as client, client.get(f"{served.url}/metrics") as response:
        text = await response.text()
    assert 'artkeep_audit_findings_total{level="sampled",result="ok"}' in text
    assert "artkeep_places_failing 0" in text


async def test_audit_command_prints_one_finding_per_line_and_exits_by_the_worst(
        daemons: StartDaemon, artkeep: ArtkeepCli, tmp_path: Path) -> None:
    place = await daemons("p")
    artkeep.home.mkdir(parents=True)
    (artkeep.home / "config.toml").write_text("[replication]\ncopies = 1\n[audit]\nsamples = 64\n")
    with Node(artkeep.home) as node:
        root = await asyncio.to_thread(make_work, node, tmp_path / "art", "quay")
    run = await asyncio.to_thread(artkeep, "place", "add", "p", "kubo", place.url, "--token", place.token)
    assert run.returncode == 0, run
    assert (await asyncio.to_thread(artkeep, "push", "--wait", "--timeout", "60")).returncode == 0

    run = await asyncio.to_thread(artkeep, "audit", "--now", "--json")
    assert run.returncode == 0, run
    [line] = run.records()
    assert {key: line[key] for key in ("cid", "place", "level", "result", "block")} == {
        "cid": str(root), "place": "p", "level": "sampled", "result": "ok", "block": None}
    blocks = len(place.node.dag_blocks(root))
    assert line["blocks"] == blocks and line["bytes"] > 0  # type: ignore[operator]

    lost = leaves(place.node, root)[0]
    place.node.store.path_of(lost).unlink()
    run = await asyncio.to_thread(artkeep, "audit", "--now", "--json", str(root))
    assert run.returncode == 1, run
    assert [(r["result"], r["block"]) for r in run.records()] == [("missing", str(lost))]
    run = await asyncio.to_thread(artkeep, "audit", "--now", "--level", "local")
    assert run.returncode == 0 and "1 ok" in run.err, run

    where = (await asyncio.to_thread(artkeep, "whereis", "--json", str(root))).records()[0]
    assert where["verified_copies"] == 0 and where["places"][0]["state"] == "failing"  # type: ignore[index]
    assert f"all {blocks} blocks" in str(where["detection"])  # 64 samples cover it
    status = (await asyncio.to_thread(artkeep, "status", "--json")).records()[0]
    assert status["place_checks"][0]["name"] == "p" and status["below_target"] == 1  # type: ignore[index]
    assert "escapes one check" in str(status["detection"])


async def test_the_nightly_full_round_fires_at_its_hour_checks_every_block_and_keeps_to_its_budget(
        daemons: StartDaemon, tmp_path: Path) -> None:
    policy = replace(POLICY, schedule=True, tick=3600, full_at=(datetime.now().hour + 5) % 24,
                     full_cycle_days=0.1 / 86400)  # every copy is due for its full check every 0.1 s
    source = Node(tmp_path / "source", copies=1, audit=policy)
    roots = [await asyncio.to_thread(make_work, source, tmp_path / "art", f"n{i}") for i in range(3)]
    place = await daemons("p")
    source.add_place(kubo_place("p", place, place.token))
    await push_all(source)

    async def fired(schedule: AuditSchedule, level: str) -> RoundReport:
        schedule.reports.pop(level, None)
        schedule.fire_now(level)
        deadline = asyncio.get_running_loop().time() + 30
        while level not in schedule.reports and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        return schedule.reports[level]

    async with AuditSchedule(source, replace(policy, full_budget=1e-6)) as schedule:
        next_full = schedule.next_run("full")
        assert next_full is not None and (next_full.hour, next_full.minute) == (policy.full_at, 0)
        assert timedelta(0) < next_full - datetime.now().astimezone() <= timedelta(days=1)
        cut_short = await fired(schedule, "full")
        assert cut_short.unfinished and cut_short.checks == 0  # the time box ends the night's round
        assert schedule.next_run("full") == next_full  # the nightly time is unchanged
    await asyncio.sleep(0.2)  # a full cycle and more since the push queue's read-back: all are due
    async with AuditSchedule(source, policy) as schedule:
        report = await fired(schedule, "full")
    assert not report.unfinished and report.results == {"ok": 3}
    full = [f for f in source.index.recent_findings(100) if f.level == "full" and f.place == "p"]
    pushed_checks = 3  # the push queue's read-back is a full check too
    assert len(full) == pushed_checks + 3
    assert {f.cid for f in full[-3:]} == {str(root) for root in roots}
    assert all(f.blocks == len(source.dag_blocks(cids.parse(f.cid))) for f in full[-3:])
    source.close()


async def test_old_passed_checks_are_rolled_up_by_month_and_problems_stay_one_by_one(
        daemons: StartDaemon, artkeep: ArtkeepCli, tmp_path: Path) -> None:
    place = await daemons("p")
    artkeep.home.mkdir(parents=True)
    (artkeep.home / "config.toml").write_text("[replication]\ncopies = 1\n[audit]\nkeep_days = 30\n")
    with Node(artkeep.home) as node:
        root = await asyncio.to_thread(make_work, node, tmp_path / "art", "ledger")
        node.add_place(kubo_place("p", place, place.token))
        await push_all(node)
        day, now = 86400.0, datetime(2026, 11, 21, tzinfo=UTC).timestamp()
        old = [FindingRow(str(root), "p", "sampled", "ok", None, 5, 1000, 0.5, "", now - days * day)
               for days in (40, 45, 50, 65)]  # three in October, one in September (UTC)
        lost = FindingRow(str(root), "p", "sampled", "missing", "bafkb", 0, 0, 0.1, "lost", now - 60 * day)
        recent = FindingRow(str(root), "p", "full", "ok", None, 5, 1000, 1.0, "", now - day)
        node.index.add_findings([*old, lost, recent])
        before = node.index.passed_checks(str(root))

        assert node.index.roll_up_findings(now - 30 * day) == 4
        assert node.index.roll_up_findings(now - 30 * day) == 0
        kept = node.index.recent_findings(100, str(root))
        assert lost in kept and recent in kept and not set(old) & set(kept)
        assert node.index.passed_checks(str(root)) == before  # nothing forgotten, only folded
        months = node.index._read("SELECT month, checks, blocks, bytes FROM findings_months ORDER BY month")
        assert months == [("2026-09", 1, 5, 1000), ("2026-10", 3, 15, 3000)]
        node.index.add_findings([old[0]._replace(at=now - 41 * day)])
        node.index.roll_up_findings(now - 30 * day)  # lands in October's row, which grows
        october = node.index._read("SELECT checks, bytes FROM findings_months WHERE month = '2026-10'")
        assert october == [(4, 4000)]

    where = (await asyncio.to_thread(artkeep, "whereis", "--json", str(root))).records()[0]
    [view] = cast(list[dict[str, Any]], where["places"])
    assert view["passed_checks"]["sampled"] == 5 and view["passed_checks"]["full"] >= 2  # push read-back too
    assert view["passed_since"] == datetime.fromtimestamp(now - 65 * day, UTC).isoformat(timespec="seconds")


async def test_a_gateway_place_is_watched_and_audited_but_never_counted_toward_the_target(
        daemons: StartDaemon, tmp_path: Path) -> None:
    source = Node(tmp_path / "source", copies=1, audit=POLICY)
    served, elsewhere = [await asyncio.to_thread(make_work, source, tmp_path / "art", name)
                         for name in ("tide", "ember")]
    holder, gateway = await daemons("holder"), await daemons("gw")
    hand_over(source, gateway.node, served, tmp_path)  # the gateway serves one of the two works, on its own
    async with FaultServer(upstream=gateway.url) as liar:
        # A FAKE gateway in front of the same store: HEAD says it serves everything, GETs flip a byte.
        liar.inject(status(200, headers={"Content-Type": "application/vnd.ipld.raw"}), path="/ipfs/",
                    method="HEAD")
        liar.inject(tamper(-3), path="/ipfs/", method="GET")
        source.add_place(kubo_place("holder", holder, holder.token))
        source.add_place(PlaceSpec("gw", "gateway", gateway.url, None, {"timeout": "5"}))
        source.add_place(PlaceSpec("liar", "gateway", liar.url, None, {"timeout": "5"}))
        await push_all(source)
        assert {method for method, _ in liar.requests} == {"HEAD", "GET"}  # nothing is sent to a gateway
        assert states(source, served) == {"holder": "verified", "gw": "verified", "liar": "corrupt"}
        assert states(source, elsewhere) == {"holder": "verified", "gw": "failing", "liar": "failing"}
        assert [pin.cid for pin in gateway.node.pins()] == [str(served)]

        # Only the place that keeps copies for us counts; the gateway's verified copy is an extra.
        assert [source.whereis(root).verified_copies for root in (served, elsewhere)] == [1, 1]
        found, report = await audit(source, "sampled")
        assert sorted((f.cid == str(served), f.place, f.result) for f in found) == [
            (False, "holder", "ok"), (True, "gw", "ok"), (True, "holder", "ok")]
        assert report.repairs == 0
        source.remove_place("holder")
        assert source.whereis(served).verified_copies == 0 and states(source, served)["gw"] == "verified"
        assert source.replication_health().works_below_target == 2
    source.close()
