#!/usr/bin/env python3
"""Audit benchmark: one sampled round and one full round over N works × 3 places on loopback.

Usage: scripts/bench audit [--works N ...] [--json]

For each N (default 1000 and 10000): N small works (64×64 noise PNGs with
A1111 parameters, through the real `Node.rescue`) in a source home, cached
under .bench/audit/N/ between runs; three places, each a real `artkeep serve`
process on 127.0.0.1 whose store holds the same blocks (hard links of the
source's block files) as pins, and a `kubo` place in the source for each, its
copies recorded as verified. Then, each in a child process under GNU time
(wall time and that process's own peak RSS): `Auditor.run("sampled",
force=True)` and `Auditor.run("full", force=True)` over every copy. The
baseline, measured in the same run, is hashing the same block bytes with
hashlib in one thread: the round's cost over the bare cost of re-hashing.
Targets: a round under 5 minutes at 10,000 works, and flat memory (the
auditor pages through the copies).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_ingest import GNU_TIME, ROOT, BenchError, artkeep_command, child_env, run_child

BENCH_DIR = ROOT / ".bench" / "audit"
PLACES = ("p1", "p2", "p3")
TARGET_SECONDS = 300.0


def make_png(rng: random.Random, i: int, side: int = 64) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    raw = b"".join(b"\x00" + rng.randbytes(side * 3) for _ in range(side))
    text = (f"parameters\x00a harbour at dawn {i}\nNegative prompt: blur\nSteps: 20, Sampler: Euler a, "
            f"Seed: {rng.getrandbits(40)}, Size: {side}x{side}, Model: bench").encode()
    header = side.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"tEXt", text)
            + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b""))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare(works: int) -> Path:
    """The source home with `works` works and three place homes holding them (cached by count)."""
    from node import sources
    from node.node import Node
    from node.profiles import get_profile

    folder = BENCH_DIR / str(works)
    if (folder / ".ready").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    images = folder / "images"
    images.mkdir(parents=True)
    rng = random.Random(works)
    for i in range(works):
        (images / f"w{i:06d}.png").write_bytes(make_png(rng, i))
    with Node(folder / "source") as node:
        for outcome in node.rescue(sources.walk([images], archives=False), get_profile("unixfs-v1-2025"),
                                   source="bench"):
            if outcome.outcome == "failed":
                raise BenchError(f"rescue failed: {outcome.error}")
        pins = [(pin.cid, pin.name, pin.profile, pin.size, pin.dag_size, pin.kind) for pin in node.pins()]
    for place in PLACES:
        home = folder / place
        home.mkdir()
        subprocess.run(["cp", "-al", str(folder / "source" / "blocks"), str(home / "blocks")], check=True)
        with Node(home) as node:
            node.index.add_pins(pins)
    shutil.rmtree(images)
    (folder / ".ready").write_text("")
    return folder


def start_places(folder: Path) -> tuple[list[subprocess.Popen[bytes]], dict[str, tuple[str, str]]]:
    """`artkeep serve` for each place; name → (url, token)."""
    from node.node import Node

    processes, places = [], {}
    env = {**child_env(), "ARTKEEP_AUDIT_SCHEDULE": "false", "ARTKEEP_LOG_LEVEL": "error"}
    for place in PLACES:
        home = folder / place
        with Node(home) as node:
            _, token = node.create_token("bench")
        url = f"http://127.0.0.1:{free_port()}"
        processes.append(subprocess.Popen([*artkeep_command(), "--home", str(home), "serve", "--listen",
                                           url.removeprefix("http://")], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        places[place] = (url, token)
    deadline = time.monotonic() + 60
    for url, _ in places.values():
        while True:
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError(f"{url} did not start") from None
                time.sleep(0.2)
    return processes, places


def record_copies(folder: Path, places: dict[str, tuple[str, str]]) -> tuple[int, int]:
    """Point the source at the places and record every copy as verified; (copies, block bytes per place)."""
    from node.node import Node
    from node.remotes.base import PlaceSpec

    with Node(folder / "source") as node:
        for name in [spec.name for spec in node.places()]:
            node.remove_place(name)
        for name, (url, token) in places.items():
            node.add_place(PlaceSpec(name, "kubo", url, token, {"timeout": "30"}))
        pins = node.pins()
        now = time.time()
        node.index.add_copies([(pin.cid, name, pin.dag_size) for pin in pins for name in places], now)
        with node.index._write() as db:  # the bench's shortcut past the push queue: all read back already
            db.execute("UPDATE copies SET state = 'verified', verified = ?, claimed = ?, due = NULL",
                       (now, now))
        return len(pins) * len(places), sum(pin.dag_size for pin in pins)


def hash_baseline(folder: Path) -> float:
    """Seconds to sha256 every block file of the source once (a round reads them once per place)."""
    started = time.perf_counter()
    for path in (folder / "source" / "blocks").rglob("*.data"):
        hashlib.sha256(path.read_bytes()).digest()
    return time.perf_counter() - started


def child_round(home: Path, level: str) -> None:
    """Run in the child: one forced round at `level`; print what it did as JSON."""
    from node.audit import AuditPolicy
    from node.auditor import Auditor
    from node.node import Node

    async def run() -> dict[str, Any]:
        policy = AuditPolicy(schedule=False, check_timeout=60)
        bytes_verified = 0
        with Node(home, audit=policy) as node:
            def count(finding: Any) -> None:
                nonlocal bytes_verified
                bytes_verified += finding.bytes

            async with Auditor(node, policy) as auditor:
                report = await auditor.run(level, force=True, on_finding=count)
        return {"checks": report.checks, "results": dict(report.results), "seconds": report.seconds,
                "bytes": bytes_verified}

    print(json.dumps(asyncio.run(run())))


def measure(works: int, started: float) -> dict[str, Any]:
    folder = prepare(works)
    print(f"[{time.monotonic() - started:6.1f}s] {works} works ready in {folder}", file=sys.stderr)
    processes, places = start_places(folder)
    try:
        copies, dag_bytes = record_copies(folder, places)
        baseline = hash_baseline(folder) * len(places)
        result: dict[str, Any] = {"works": works, "places": len(places), "copies": copies,
                                  "dag_bytes": dag_bytes * len(places), "hash_baseline_s": baseline}
        for level in ("sampled", "full"):
            sample, out = run_child([sys.executable, __file__, "--child", str(folder / "source"), level],
                                    folder / f"{level}.log", timeout=1800, rss=True)
            done = json.loads(out)
            result[level] = {"wall_s": sample.wall_s, "cpu_s": sample.cpu_s,
                             "rss_mib": sample.rss_kib / 1024, **done,
                             "copies_per_s": done["checks"] / done["seconds"]}
            print(f"[{time.monotonic() - started:6.1f}s] {works} works, {level}: {done['checks']} checks "
                  f"{done['results']} in {done['seconds']:.1f} s, peak RSS {sample.rss_kib / 1024:.0f} MiB",
                  file=sys.stderr)
        return result
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=60)


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child_round(Path(sys.argv[2]), sys.argv[3])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--works", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not GNU_TIME:
        print("bench audit: GNU time not found; peak RSS figures are at least the bench's own",
              file=sys.stderr)
    started = time.monotonic()
    results = [measure(works, started) for works in args.works]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'works':>6} {'copies':>7} {'level':>8} {'wall s':>8} {'copies/s':>9} {'MiB/s':>7} "
          f"{'peak RSS':>9} {'× hashing':>9}  results")
    for result in results:
        for level in ("sampled", "full"):
            row = result[level]
            ratio = row["seconds"] / result["hash_baseline_s"] if result["hash_baseline_s"] else 0.0
            verdict = "ok" if row["seconds"] < TARGET_SECONDS else "OVER 5 min"
            print(f"{result['works']:>6} {result['copies']:>7} {level:>8} {row['seconds']:>8.1f} "
                  f"{row['copies_per_s']:>9.0f} {row['bytes'] / row['seconds'] / 2**20:>7.1f} "
                  f"{row['rss_mib']:>6.0f} MiB {ratio:>9.0f}  {row['results']} ({verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
