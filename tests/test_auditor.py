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
from pathlib import Path

import pytest
from aiohttp import web
from PIL import Image, PngImagePlugin

from node import config, sources
from node.audit import AuditPolicy
from node.auditor import Auditor, RoundReport
from node.cid import RAW, Cid
from node.index import FindingRow
from node.node import Node
from node.profiles import get_profile
from node.pusher import Pusher, PushSettings
from node.remotes.base import PlaceSpec
from node.web.app import AUDIT, build_app
from node.web.context import PUSHER, ServeOptions
from tests.conftest import ArtkeepCli
from tests.fault_servers import FaultServer, status, tamper

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
    # a lost a block: the re-push sends the whole CAR again, so a holds it again. b keeps its rotted
    # file (an artkeep node never overwrites a block file it has; its own audit heals it), c is down.
    assert states(source, first) == {"a": "verified", "b": "failing", "c": "failing", "d": "verified",
                                     "e": "verified", "f": "verified"}
    assert states(source, second) == {"a": "verified", "b": "verified", "c": "failing", "d": "verified"}
    assert [source.whereis(root).verified_copies for root in (first, second)] == [4, 3]
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
