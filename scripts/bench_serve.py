#!/usr/bin/env python3
"""Serving benchmark: raw-block requests/s and CAR streaming MB/s of a real `artkeep serve`, in one run.

Usage: scripts/bench serve [--size-gib N] [--blocks N] [--block-kib N] [--duration S]
                           [--connections N] [--repeat N] [--keep] [--json]

Generates fresh random data under .bench/ (many small raw blocks, one big
file pinned with `artkeep pin`), starts `artkeep serve --listen 127.0.0.1:0`
in a subprocess, then measures, against that one server:

- raw blocks: `GET /ipfs/{cid}?format=raw` over the small blocks in turn,
  requests/s and latency percentiles, with `wrk` if it is installed (one
  thread, so the server keeps a core of its own) or else an aiohttp client
  in a child process;
- CAR streaming: `GET /ipfs/{root}?format=car` of the big file, read by
  curl into /dev/null (or by an aiohttp client), MB/s;
- the baseline, in a child process on the same blocks in the same order:
  reading each block file, and reading and hashing it (what the store does
  on every read);
- each stream and baseline twice: from the disk (the block files dropped
  from the page cache first, with posix_fadvise DONTNEED) and from the cache,
  in every round, the best of the rounds kept for streams and baseline alike.
  The CAR target compares the two disk figures;
- the server's CPU time (user + system, from /proc) per raw request and per
  GiB streamed: steadier than rates on a shared machine, to compare runs;
- the server's peak RSS (VmHWM from /proc) at the end.

Everything stays on 127.0.0.1. MB is 10^6 bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingest import (  # the ingest bench's helpers, next to this file
    GIB,
    MB,
    BenchError,
    artkeep_command,
    child_env,
    human_size,
    machine_facts,
    note,
    random_stream,
    run_child,
    timeout_for,
    use_bytecode_cache,
)
from bench_ingest import run_worker as run_ingest_worker

ROOT = Path(__file__).resolve().parent.parent
BENCH_ROOT = ROOT / ".bench"

TARGET_RAW_RPS = 5000  # small raw blocks per second, 2 cores
TARGET_CAR_X_DISK = 0.7  # CAR MB/s ≥ 0.7 × reading the same block files
RAW = "application/vnd.ipld.raw"
MAX_BLOCKS = 100_000
MAX_SIZE_GIB = 16.0


# --- the parent ---------------------------------------------------------------------------------------

class Server:
    """`artkeep serve` on 127.0.0.1:0 in a subprocess."""

    def __init__(self, home: Path, logs: Path) -> None:
        command = [*artkeep_command(), "--home", str(home), "serve", "--listen", "127.0.0.1:0", "--json"]
        self._err = (logs / "serve.err").open("wb")
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=self._err, cwd=ROOT, env=child_env())
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise BenchError(f"artkeep serve did not start: {(logs / 'serve.err').read_text()[-2000:]}")
        self.url: str = json.loads(line)["url"]
        if not self.url.startswith("http://127.0.0.1:"):
            raise BenchError(f"artkeep serve listens on {self.url}, not loopback")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mib(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        return int(match[1]) / 1024 if match else 0.0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._err.close()


def run_worker(op: str, params: dict[str, Any], logs: Path, timeout: float) -> dict[str, Any]:
    """Run one of this file's workers in a child process; its JSON answer."""
    params_path = logs.with_suffix(".json")
    params_path.write_text(json.dumps(params))
    _, stdout = run_child([sys.executable, str(Path(__file__).resolve()), "_worker", op, str(params_path)],
                          logs, timeout)
    params_path.unlink()
    answers = [line for line in stdout.splitlines() if line.startswith("{")]
    if not answers:
        raise BenchError(f"worker {op} gave no answer")
    result: dict[str, Any] = json.loads(answers[-1])
    return result


def pin_big_file(home: Path, path: Path, logs: Path) -> str:
    command = [*artkeep_command(), "--home", str(home), "pin", "--json", str(path)]
    done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=ROOT,
                          env=child_env(), timeout=timeout_for(path.stat().st_size), check=False)
    (logs / "pin.err").write_text(done.stderr)
    if done.returncode != 0:
        raise BenchError(f"artkeep pin failed: {done.stderr.strip()[-2000:]}")
    cid: str = json.loads(done.stdout.splitlines()[-1])["cid"]
    return cid


def raw_with_wrk(url: str, paths_file: Path, duration: float, connections: int, logs: Path) -> dict[str, Any]:
    script = logs / "raw.lua"
    script.write_text(
        "local paths = {}\n"
        f"for line in io.lines({json.dumps(str(paths_file))}) do paths[#paths + 1] = line end\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = i % #paths + 1\n"
        f"  return wrk.format('GET', paths[i], {{['Accept'] = '{RAW}'}})\n"
        "end\n")
    wrk = shutil.which("wrk")
    assert wrk is not None
    command = [wrk, "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", "-s", str(script), url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, check=False)
    (logs / "wrk.out").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise BenchError(f"wrk failed: {done.stderr.strip()}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)[1])  # type: ignore[index]
    percentiles = {int(p): _ms(value, unit) for p, value, unit in
                   re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", done.stdout, re.MULTILINE)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
    requests = int(re.search(r"(\d+) requests in", done.stdout)[1])  # type: ignore[index]
    return {"tool": "wrk 1 thread", "requests_s": rps, "requests": requests, "p50_ms": percentiles.get(50),
            "p99_ms": percentiles.get(99), "non_2xx": int(errors[1]) if errors else 0}


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def car_with_curl(url: str, expected_min: int) -> dict[str, Any]:
    curl = shutil.which("curl")
    assert curl is not None
    command = [curl, "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise BenchError(f"curl {url}: {done.stderr.strip()}")
    size, seconds = done.stdout.split()
    if int(size) < expected_min:
        raise BenchError(f"curl {url}: {size} bytes, expected at least {expected_min}")
    return {"bytes": int(size), "seconds": float(seconds)}


def render(facts: dict[str, Any], result: dict[str, Any], found: list[dict[str, Any]]) -> str:
    raw, streams, disk = result["raw"], result["streams_mb_s"], result["disk"]
    lines = [
        f"artkeep serving benchmark, {facts['date']}, artkeep {facts['artkeep']} ({facts['revision']})",
        f"machine: {facts['cpu']}, {facts['cores']} cores, {facts['memory_gib']} GiB RAM, "
        f"Linux {facts['kernel']}, Python {facts['python']}",
        f"data: {facts['filesystem']}; server and load generator share the machine; MB = 10^6 bytes; "
        f"load average {facts['load_start'][0]} at start",
        "",
        f"raw blocks ({result['blocks']} blocks of {human_size(result['block_size'])}, {raw['tool']}, "
        f"{result['connections']} connections, {result['duration']:g} s)",
        f"  {raw['requests_s']:,.0f} requests/s, p50 {raw['p50_ms']:.2f} ms, p99 {raw['p99_ms']:.2f} ms, "
        f"non-2xx {raw['non_2xx']}; server CPU {result['server_cpu']['raw_us_per_request']:.0f} µs a request",
        "",
        f"CAR streaming of {human_size(result['car_bytes'])} ({result['car_blocks']} blocks), best of "
        f"{result['repeat']}",
        f"  {'MB/s':>47} {'from disk':>10} {'from cache':>11}",
        *(f"  {label:<47} {cold:>10.0f} {warm:>11.0f}" for label, cold, warm in (
            ("GET ?format=car (curl to /dev/null)", streams["cold_car"], streams["warm_car"]),
            ("GET the file (browser mode)", streams["cold_file"], streams["warm_file"]),
            ("read the block files (baseline)", disk["cold_read_mb_s"], disk["warm_read_mb_s"]),
            ("read + sha256 the block files", disk["cold_verify_mb_s"], disk["warm_verify_mb_s"]))),
        "  (from disk: the block files were dropped from the page cache before each run)",
        f"  server CPU per GiB streamed: {result['server_cpu']['car_s_per_gib']:.2f} s for CARs, "
        f"{result['server_cpu']['file_s_per_gib']:.2f} s for files (mean of all rounds)",
        "",
        f"server peak RSS {result['server_peak_rss_mib']:.1f} MiB; "
        f"load average {result['load_end'][0]} at the end",
        "", "targets",
    ]
    for verdict in found:
        verdict_text = "PASS" if verdict["pass"] else "FAIL"
        lines.append(f"  {verdict['target']:<46} {verdict['text']:>8}  {verdict_text}  ({verdict['detail']})")
    return "\n".join(lines)


def verdicts(result: dict[str, Any]) -> list[dict[str, Any]]:
    rps = result["raw"]["requests_s"]
    car, disk = result["streams_mb_s"]["cold_car"], result["disk"]
    ratio = car / disk["cold_read_mb_s"]
    return [
        {"target": f"raw blocks ≥ {TARGET_RAW_RPS} requests/s", "value": round(rps), "text": f"{rps:,.0f}",
         "pass": rps >= TARGET_RAW_RPS, "detail": f"p99 {result['raw']['p99_ms']:.2f} ms"},
        {"target": f"CAR ≥ {TARGET_CAR_X_DISK}× reading the blocks from disk", "value": round(ratio, 3),
         "text": f"{ratio:.2f}×", "pass": ratio >= TARGET_CAR_X_DISK,
         "detail": f"{car:.0f} vs {disk['cold_read_mb_s']:.0f} MB/s; {car / disk['cold_verify_mb_s']:.2f}× "
                   f"read + sha256 ({disk['cold_verify_mb_s']:.0f} MB/s)"},
    ]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench serve",
        description="Serving benchmark: raw-block requests/s and CAR MB/s of `artkeep serve` on loopback, "
                    "against reading the same blocks from disk.")
    parser.add_argument("--size-gib", type=float, default=1.0, help="size of the big file (default 1)")
    parser.add_argument("--blocks", type=int, default=2000, help="small raw blocks (default 2000)")
    parser.add_argument("--block-kib", type=int, default=4, help="size of each small block (default 4)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of raw load (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    parser.add_argument("--repeat", type=int, default=3, help="CAR rounds; the best is kept (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the generated data under .bench/")
    parser.add_argument("--json", action="store_true",
                        help="one JSON document on stdout instead of the table")
    args = parser.parse_args(argv)
    if not 0 < args.size_gib <= MAX_SIZE_GIB:
        parser.error(f"--size-gib must be above 0 and at most {MAX_SIZE_GIB:g}")
    if not 1 <= args.blocks <= MAX_BLOCKS:
        parser.error(f"--blocks must be between 1 and {MAX_BLOCKS}")
    if not 1 <= args.block_kib <= 1024:
        parser.error("--block-kib must be between 1 and 1024")
    if not 1 <= args.duration <= 600 or not 1 <= args.connections <= 1024 or not 1 <= args.repeat <= 10:
        parser.error("--duration 1..600, --connections 1..1024, --repeat 1..10")
    return args


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["_worker"]:
        return worker_main(argv[1:])
    args = parse_args(argv)
    started = time.monotonic()
    BENCH_ROOT.mkdir(exist_ok=True)
    run_dir = BENCH_ROOT / f"serve-{datetime.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}"
    logs = run_dir / "logs"
    logs.mkdir(parents=True)
    home = run_dir / "home"
    big_size = int(args.size_gib * GIB)
    server: Server | None = None
    try:
        if shutil.disk_usage(BENCH_ROOT).free < 2 * big_size + GIB // 4:
            raise BenchError(f"{human_size(2 * big_size + GIB // 4)} of free disk needed under {BENCH_ROOT}")
        use_bytecode_cache(run_dir)
        facts = machine_facts(run_dir, logs)
        note(f"generating {args.blocks} raw blocks and a {human_size(big_size)} file", started)
        paths_file = run_dir / "raw-paths.txt"
        run_worker("blocks", {"home": str(home), "count": args.blocks, "size": args.block_kib * 1024,
                              "paths_file": str(paths_file), "seed": os.urandom(8).hex()},
                   logs / "blocks", 600)
        big = run_dir / "big.bin"
        run_ingest_worker("generate", {"paths": [str(big)], "size": big_size, "seed": os.urandom(8).hex()},
                          logs / "generate", timeout_for(big_size))
        note("artkeep pin of the big file", started)
        root = pin_big_file(home, big, logs)
        big.unlink()
        server = Server(home, logs)
        note(f"server at {server.url}; raw blocks", started)
        cpu_before = server.cpu_seconds()
        if shutil.which("wrk"):
            raw = raw_with_wrk(server.url, paths_file, args.duration, args.connections, logs)
        else:
            raw = run_worker("raw_load", {"url": server.url, "paths_file": str(paths_file),
                                          "duration": args.duration, "connections": args.connections},
                             logs / "raw", args.duration + 120)
        raw_cpu = server.cpu_seconds() - cpu_before
        note("CAR and file streaming, and the disk baseline, in each round", started)
        streams: dict[str, float] = {}
        stream_cpu = {"car": 0.0, "file": 0.0}
        disk: dict[str, Any] = {}
        for _ in range(args.repeat):
            baseline = run_worker("disk", {"home": str(home), "root": root}, logs / "disk",
                                  timeout_for(big_size))
            disk = {key: max(value, disk.get(key, value)) for key, value in baseline.items()}
            for cache in ("cold", "warm"):
                for kind, query in (("car", "?format=car"), ("file", "")):
                    if cache == "cold":
                        run_worker("evict", {"home": str(home), "root": root}, logs / "evict", 600)
                    cpu_before = server.cpu_seconds()
                    run = car_with_curl(f"{server.url}/ipfs/{root}{query}", big_size)
                    stream_cpu[kind] += server.cpu_seconds() - cpu_before
                    key = f"{cache}_{kind}"
                    streams[key] = min(streams.get(key, float("inf")), run["seconds"])
        rss = server.peak_rss_mib()
        rounds = 2 * args.repeat  # cold and warm
        gib_streamed = {"car": disk["bytes"] / GIB * rounds, "file": big_size / GIB * rounds}

        def stream_bytes(key: str) -> int:
            return int(disk["bytes"]) if key.endswith("car") else big_size  # CAR framing is not counted

        result = {
            "blocks": args.blocks, "block_size": args.block_kib * 1024, "connections": args.connections,
            "duration": args.duration, "repeat": args.repeat, "raw": raw, "root": root,
            "car_bytes": disk["bytes"], "car_blocks": disk["blocks"],
            "streams_mb_s": {key: round(stream_bytes(key) / seconds / MB, 1)
                             for key, seconds in streams.items()},
            "disk": disk, "server_peak_rss_mib": round(rss, 1),
            "server_cpu": {"raw_us_per_request": round(raw_cpu / max(raw["requests"], 1) * 1e6, 1),
                           **{f"{kind}_s_per_gib": round(stream_cpu[kind] / gib_streamed[kind], 3)
                              for kind in ("car", "file")}},
            "load_end": [round(x, 2) for x in os.getloadavg()],
        }
        found = verdicts(result)
        document = {"machine": facts, "results": result, "targets": found}
        print(json.dumps(document, indent=2) if args.json else render(facts, result, found))
        note("done", started)
        return 0 if all(v["pass"] for v in found) else 1
    except (BenchError, OSError) as exc:
        print(f"scripts/bench serve: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scripts/bench serve: interrupted", file=sys.stderr)
        return 130
    finally:
        if server is not None:
            server.stop()
        if args.keep:
            print(f"scripts/bench serve: data kept in {run_dir}", file=sys.stderr)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                BENCH_ROOT.rmdir()


# --- workers: `bench_serve.py _worker OP PARAMS.json`, each in its own process ---------------------------

def worker_blocks(home: str, count: int, size: int, paths_file: str, seed: str) -> dict[str, Any]:
    """count random raw blocks straight into a fresh store; their gateway paths, one a line."""
    from node import cid as cids
    from node.node import Node

    chunk, _ = random_stream(seed)
    paths = []
    with Node(Path(home)) as node, node.store.writer() as writer:
        for _ in range(count):
            block = chunk(size)
            cid = cids.cid_of(block, cids.RAW)
            writer.put(cid, [block], hashed=True)
            paths.append(f"/ipfs/{cid}?format=raw")
    Path(paths_file).write_text("\n".join(paths) + "\n")
    return {"blocks": count}


def block_files(home: str, root: str) -> list[Path]:
    """The DAG's block files in CAR order."""
    from node import cid as cids
    from node import dag
    from node.node import Node

    with Node(Path(home)) as node:
        return [node.store.path_of(cid) for cid, _ in dag.walk(cids.parse(root), node.get_block)]


def evict(paths: Sequence[Path]) -> None:
    """Drop the files from the page cache, so the next read comes from the disk."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def worker_evict(home: str, root: str) -> dict[str, Any]:
    paths = block_files(home, root)
    evict(paths)
    return {"evicted": len(paths)}


def worker_disk(home: str, root: str) -> dict[str, Any]:
    """Read the DAG's block files in CAR order, from the disk and from the cache, with and without sha256."""
    paths = block_files(home, root)
    result: dict[str, Any] = {"blocks": len(paths)}
    for cache in ("cold", "warm"):
        for label, verify in (("read", False), ("verify", True)):
            if cache == "cold":
                evict(paths)
            start = time.perf_counter()
            total = 0
            for path in paths:
                data = path.read_bytes()
                if verify:
                    hashlib.sha256(data).digest()
                total += len(data)
            seconds = time.perf_counter() - start
            result["bytes"] = total
            result[f"{cache}_{label}_mb_s"] = round(total / seconds / MB, 1)
    return result


def worker_raw_load(url: str, paths_file: str, duration: float, connections: int) -> dict[str, Any]:
    """The fallback load generator when wrk is absent: aiohttp clients, one event loop."""
    import asyncio

    import aiohttp

    paths = Path(paths_file).read_text().split()
    latencies: list[float] = []
    failures = 0

    async def client(index: int, session: aiohttp.ClientSession, stop: float) -> None:
        nonlocal failures
        position = index
        while time.perf_counter() < stop:
            began = time.perf_counter()
            async with session.get(url + paths[position % len(paths)], headers={"Accept": RAW}) as response:
                await response.read()
                failures += response.status != 200
            latencies.append(time.perf_counter() - began)
            position += connections

    async def run() -> float:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
            began = time.perf_counter()
            await asyncio.gather(*(client(i, session, began + duration) for i in range(connections)))
            return time.perf_counter() - began

    elapsed = asyncio.run(run())
    latencies.sort()
    return {"tool": "aiohttp client", "requests_s": len(latencies) / elapsed,
            "requests": len(latencies), "p50_ms": latencies[len(latencies) // 2] * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
            "non_2xx": failures}


def worker_main(argv: Sequence[str]) -> int:
    workers: dict[str, Callable[..., dict[str, Any]]] = {
        "blocks": worker_blocks, "disk": worker_disk, "evict": worker_evict, "raw_load": worker_raw_load}
    op, params = argv[0], json.loads(Path(argv[1]).read_text())
    print(json.dumps(workers[op](**params)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
