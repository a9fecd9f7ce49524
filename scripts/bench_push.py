#!/usr/bin/env python3
"""Push benchmark: works pushed to a local artkeep peer and to js-ipfs, next to a raw CAR upload with curl.

Usage: scripts/bench push [--works N] [--no-jsipfs] [--json]

Runs inside a loopback-only network namespace (it re-executes itself under
`unshare --net` when it is not in one), because it starts a js-ipfs node.
In one run, on the same N works (AUTOMATIC1111 / ComfyUI PNGs from the
import benchmark's generator, imported with `artkeep import`):

- baseline: every work's DAG in one multi-root CAR, uploaded with one
  `curl -F file=@works.car .../api/v0/dag/import?pin-roots=true` to a fresh
  place: the HTTP upload and import alone;
- artkeep: `Pusher.drain` of the N works to a fresh place, each one pushed as
  its own CAR (`dag/import`), confirmed with `pin/ls`, then fetched back block
  by block and re-hashed (push.verify, the default), push.concurrency 4.

Places: an `artkeep serve` subprocess (kind `peer`) and js-ipfs 0.66 (kind
`kubo`). Prints works/s, MB/s and the ratio to curl for each, and this
process's peak RSS (the pusher's). MB is 10^6 bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_import import generate  # the import benchmark's PNG generator
from bench_ingest import MB, ROOT, artkeep_command, child_env, note

sys.path.insert(0, str(ROOT))
from node import car, dag
from node import cid as cids
from node.node import Node
from node.pusher import Pusher, PushSettings
from node.remotes import validate_spec
from node.remotes.base import PlaceSpec
from tests import netns

BENCH_DIR = ROOT / ".bench" / "push"


def in_loopback_namespace(argv: list[str]) -> None:
    """Re-run this script inside a fresh network namespace with only loopback, unless already there."""
    if netns.loopback_only():
        return
    namespace = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "--net"]
    command = [*namespace, "--", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable,
               str(Path(__file__).resolve()), *argv]
    os.execvp(command[0], command)


def artkeep(home: Path, *args: str) -> str:
    done = subprocess.run([*artkeep_command(), "--home", str(home), *args], env=child_env(),
                          capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise SystemExit(f"artkeep {' '.join(args)} failed: {done.stderr[-2000:]}")
    return done.stdout


class Daemon:
    """`artkeep serve` on a fresh home, with one token."""

    def __init__(self, home: Path) -> None:
        shutil.rmtree(home, ignore_errors=True)
        self.home = home
        self.token = artkeep(home, "token", "create", "--name", "bench").strip()
        self.process = subprocess.Popen([*artkeep_command(), "--home", str(home), "serve", "--listen",
                                         "127.0.0.1:0", "--json"], env=child_env(), stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True)
        assert self.process.stdout is not None
        self.url = json.loads(self.process.stdout.readline())["url"]
        self.peer_id = artkeep(home, "id").strip()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def curl_upload(car: Path, url: str, token: str | None) -> float:
    command = ["curl", "-sS", "--fail", "-o", "/dev/null", "-X", "POST", "-F", f"file=@{car}",
               f"{url}/api/v0/dag/import?pin-roots=true"]
    if token:
        command[1:1] = ["-H", f"Authorization: Bearer {token}"]
    started = time.perf_counter()
    subprocess.run(command, check=True, timeout=3600)
    return time.perf_counter() - started


async def push_all(source: Path, spec: PlaceSpec) -> tuple[float, int]:
    """Seconds to push every work to one place until verified, and how many ended verified."""
    with Node(source, copies=1) as node:
        for old in node.places():
            node.remove_place(old.name)
        node.add_place(spec)
        node.plan_copies()
        started = time.perf_counter()
        async with Pusher(node, PushSettings()) as pusher:
            await pusher.drain(until=time.time() + 3600)
        seconds = time.perf_counter() - started
        verified = sum(1 for pin in node.pins()
                       if node.whereis(cids.parse(pin.cid)).verified_copies >= 1)
        return seconds, verified


def export_all(source: Path, out: Path) -> tuple[int, int]:
    """One CARv1 with every work's DAG (roots: the works); returns (works, DAG bytes)."""
    with Node(source) as node, out.open("wb") as file:
        roots = [pin.cid for pin in node.pins()]
        parsed = [cids.parse(root) for root in roots]
        writer = car.CarWriter(file.write, parsed)
        seen: set[cids.Cid] = set()
        total = 0
        for root in parsed:
            for cid, block in dag.walk(root, node.get_block):
                if cid not in seen:
                    seen.add(cid)
                    writer.add(cid, block)
                    total += len(block)
        return len(roots), total


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench push", description=__doc__.split("\n\n")[0])
    parser.add_argument("--works", type=int, default=1000)
    parser.add_argument("--no-jsipfs", action="store_true", help="only the artkeep peer")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    in_loopback_namespace(argv)
    started = time.monotonic()
    images = BENCH_DIR / "images"
    generate(images, args.works, "push")
    source = BENCH_DIR / "source"
    shutil.rmtree(source, ignore_errors=True)
    note(f"importing {args.works} works", started)
    artkeep(source, "import", str(images), "--source", "bench")
    car_path = BENCH_DIR / "works.car"
    works, dag_bytes = export_all(source, car_path)
    note(f"{works} pins ({args.works} works), {dag_bytes / MB:.1f} MB of blocks", started)
    results: dict[str, Any] = {"pins": works, "dag_mb": round(dag_bytes / MB, 2)}

    baseline_peer, target_peer = Daemon(BENCH_DIR / "peer-curl"), Daemon(BENCH_DIR / "peer-push")
    try:
        curl_s = curl_upload(car_path, baseline_peer.url, baseline_peer.token)
        note(f"curl to an artkeep peer: {curl_s:.2f} s", started)
        spec = validate_spec("peer", target_peer.url, {"public_key": target_peer.peer_id}, name="peer",
                             token=target_peer.token)
        push_s, verified = asyncio.run(push_all(source, spec))
        note(f"push to an artkeep peer: {push_s:.2f} s, {verified} verified", started)
        results["artkeep_peer"] = summary(works, dag_bytes, push_s, curl_s, verified)
    finally:
        baseline_peer.stop()
        target_peer.stop()

    if not args.no_jsipfs:
        results["jsipfs"] = asyncio.run(jsipfs_round(source, car_path, works, dag_bytes, started))
    results["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if args.json:
        print(json.dumps(results))
    else:
        print(render(results))
    return 0


async def jsipfs_round(source: Path, car_path: Path, works: int, dag_bytes: int, started: float
                       ) -> dict[str, Any]:
    from tests.interop.jsipfs import start_jsipfs

    folder = BENCH_DIR / "jsipfs"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    async with start_jsipfs(folder) as node:
        curl_s = await asyncio.to_thread(curl_upload, car_path, node.api_url, None)
        note(f"curl to js-ipfs: {curl_s:.2f} s", started)
        for root in await node.pin_ls():
            await node.rpc("pin/rm", [("arg", root)])
        await node.rpc("repo/gc")
        spec = validate_spec("kubo", node.api_url, {}, name="jsipfs")
        push_s, verified = await push_all(source, spec)
        note(f"push to js-ipfs: {push_s:.2f} s, {verified} verified", started)
    return summary(works, dag_bytes, push_s, curl_s, verified)


def summary(works: int, dag_bytes: int, push_s: float, curl_s: float, verified: int) -> dict[str, Any]:
    return {"push_s": round(push_s, 2), "pins_per_s": round(works / push_s, 1),
            "push_mb_per_s": round(dag_bytes / MB / push_s, 2), "curl_s": round(curl_s, 2),
            "curl_mb_per_s": round(dag_bytes / MB / curl_s, 2), "ratio_to_curl": round(curl_s / push_s, 3),
            "verified": verified}


def render(results: dict[str, Any]) -> str:
    lines = [f"{results['pins']} pins, {results['dag_mb']} MB of blocks; "
             f"peak RSS {results['peak_rss_mib']} MiB"]
    for place in ("artkeep_peer", "jsipfs"):
        if place in results:
            r = results[place]
            lines.append(f"{place:<13} push {r['pins_per_s']} pins/s, {r['push_mb_per_s']} MB/s "
                         f"({r['verified']} verified)  | curl one CAR {r['curl_mb_per_s']} MB/s  "
                         f"| ratio {r['ratio_to_curl']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
