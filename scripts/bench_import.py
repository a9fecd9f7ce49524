#!/usr/bin/env python3
"""Import benchmark: `artkeep import` of AI images against plain `artkeep pin` of the same files.

Usage: scripts/bench import [--files N] [--repeat N] [--seed S] [--json]

Generates N PNGs (256×256, random pixels) under .bench/import/, half with
AUTOMATIC1111 infotext, half with a ComfyUI prompt graph and a ~24 KiB
workflow (stored as its own block). Then, on the same files, in one run:

- `artkeep pin --plain` (the baseline: hashing and storing only),
- `artkeep import` (works: extraction, records, signatures), with a fresh home each round,
- the same import of a quarter of the files, to show memory does not grow with their number,
- one thread timing each phase over all files in memory: extraction, UnixFS
  hashing, record building and signing, so the share of extraction is known.

Prints works/s and files/s, the ratio to plain pin (target ≥ 0.5), the phase
shares and each run's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import zlib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import GNU_TIME, ROOT, BenchError, Sample, artkeep_command, retire, run_child

BENCH_DIR = ROOT / ".bench" / "import"
TARGET_RATIO = 0.5
MAX_FILES = 50_000


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def make_png(rng: random.Random, text: list[tuple[str, str]], side: int = 256) -> bytes:
    raw = b"".join(b"\x00" + rng.randbytes(side * 3) for _ in range(side))
    header = side.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    chunks = [png_chunk(b"IHDR", header)]
    chunks += [png_chunk(b"tEXt", key.encode("latin-1") + b"\x00" + value.encode("utf-8"))
               for key, value in text]
    chunks += [png_chunk(b"IDAT", zlib.compress(raw, 1)), png_chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def a1111_text(rng: random.Random, i: int) -> list[tuple[str, str]]:
    return [("parameters", f"a painting of a lighthouse {i}, oil on canvas\nNegative prompt: blurry\n"
                           f"Steps: {rng.randint(10, 50)}, Sampler: DPM++ 2M, Schedule type: Karras, "
                           f"CFG scale: 7, Seed: {rng.getrandbits(40)}, Size: 256x256, "
                           "Model hash: c0d1994c73, Model: realisticVision")]


def comfy_text(rng: random.Random, i: int) -> list[tuple[str, str]]:
    seed = rng.getrandbits(48)
    prompt = {
        "3": {"class_type": "KSampler",
              "inputs": {"seed": seed, "steps": 20, "cfg": 7.0, "sampler_name": "euler",
                         "scheduler": "normal", "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0],
                         "negative": ["7", 0], "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 256, "height": 256, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode",
              "inputs": {"text": f"a castle in the clouds {i}", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "low quality", "clip": ["4", 1]}},
    }
    workflow = {"nodes": [{"id": n, "type": "Node", "widgets_values": ["x" * 80] * 3,
                           "pos": [n * 10, n * 20]} for n in range(60)], "links": [], "version": 0.4}
    return [("prompt", json.dumps(prompt)), ("workflow", json.dumps(workflow))]


def generate(folder: Path, count: int, seed: str) -> int:
    stamp = folder / ".generated"
    want = f"{count} {seed}"
    if stamp.exists() and stamp.read_text() == want:
        return sum(p.stat().st_size for p in folder.glob("*.png"))
    for old in folder.glob("*.png"):
        old.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    total = 0
    for i in range(count):
        text = a1111_text(rng, i) if i % 2 == 0 else comfy_text(rng, i)
        data = make_png(rng, text)
        (folder / f"img{i:05d}.png").write_bytes(data)
        total += len(data)
    stamp.write_text(want)
    return total


def run_artkeep(args: list[str], home: Path, logs: Path) -> tuple[Sample, str]:
    retire(home)  # not deleted: see retire
    return run_child([*artkeep_command(), "--home", str(home), *args], logs, timeout=3600, rss=True)


PHASES = r'''
import json, sys, time
from pathlib import Path
from node import unixfs, work
from node.metadata import extract
from node.profiles import get_profile
from node.signing import new_seed
files = sorted(Path(sys.argv[1]).glob("*.png"))
datas = [f.read_bytes() for f in files]
profile, seed = get_profile("unixfs-v1-2025"), new_seed()
t = {"extract": 0.0, "hash": 0.0, "record": 0.0}
for data, path in zip(datas, files):
    a = time.perf_counter(); e = extract(data); b = time.perf_counter()
    link = unixfs.build_bytes(data, profile); c = time.perf_counter()
    blob = lambda blob: unixfs.build_bytes(blob, profile).cid
    image = work.ImageInfo(link.cid, len(data), "PNG", 256, 256, "image/png")
    origin = work.Provenance(path.name, None, "2026-01-01T00:00:00Z")
    r = work.build(image, e.generator.to_json(), e.params.to_json(), list(e.entries), origin, blob)
    work.sign_and_encode(r, seed); d = time.perf_counter()
    t["extract"] += b - a; t["hash"] += c - b; t["record"] += d - c
print(json.dumps(t))
'''


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench import", description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000, help="PNGs to generate (default 2000)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best is reported (default 3)")
    parser.add_argument("--seed", default="artkeep-import", help="seed of the generated images")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    args = parser.parse_args(argv)
    if not 4 <= args.files <= MAX_FILES or not 1 <= args.repeat <= 10:
        parser.error(f"--files must be 4..{MAX_FILES} and --repeat 1..10")
    folder, small = BENCH_DIR / "images", BENCH_DIR / "quarter"
    total = generate(folder, args.files, args.seed)
    generate(small, args.files // 4, args.seed + "-quarter")
    logs = BENCH_DIR / "log"
    home = BENCH_DIR / "home"
    plain: list[Sample] = []
    works: list[Sample] = []
    quarter: list[Sample] = []
    for _ in range(args.repeat):
        plain.append(run_artkeep(["pin", "--plain", str(folder)], home, logs)[0])
        sample, out = run_artkeep(["import", str(folder), "--json"], home, logs)
        made = sum(1 for line in out.splitlines() if '"work"' in line and '"new"' in line)
        if made != args.files:
            raise BenchError(f"import made {made} works from {args.files} images")
        works.append(sample)
        quarter.append(run_artkeep(["import", str(small)], home, logs)[0])
    retire(home)
    shutil.rmtree(BENCH_DIR / "trash", ignore_errors=True)  # now that nothing more is timed
    phases_sample, phases_out = run_child([sys.executable, "-c", PHASES, str(folder)], logs, timeout=3600)
    phases = json.loads(phases_out.strip().splitlines()[-1])
    best_plain, best_works = min(s.wall_s for s in plain), min(s.wall_s for s in works)
    phase_total = sum(phases.values())
    result: dict[str, Any] = {
        "files": args.files, "bytes": total, "repeat": args.repeat,
        "pin_plain": {"best_s": round(best_plain, 3), "files_s": round(args.files / best_plain, 1),
                      "peak_rss_mib": round(max(s.rss_kib for s in plain) / 1024, 1)},
        "import": {"best_s": round(best_works, 3), "works_s": round(args.files / best_works, 1),
                   "peak_rss_mib": round(max(s.rss_kib for s in works) / 1024, 1),
                   "cpu_s": round(min(s.cpu_s for s in works), 2)},
        "import_quarter": {"files": args.files // 4,
                           "peak_rss_mib": round(max(s.rss_kib for s in quarter) / 1024, 1)},
        "ratio_to_plain_pin": round(best_plain / best_works, 3),
        "target": TARGET_RATIO,
        "single_thread_phases_s": {k: round(v, 3) for k, v in phases.items()},
        "extraction_share": round(phases["extract"] / phase_total, 3),
        "rss_source": "GNU time %M" if GNU_TIME else "wait4 ru_maxrss",
    }
    result["meets_target"] = result["ratio_to_plain_pin"] >= TARGET_RATIO
    del phases_sample
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.files} PNGs, {total / 1e6:.1f} MB, best of {args.repeat}")
        print(f"  pin --plain   {result['pin_plain']['files_s']:8.1f} files/s   "
              f"peak RSS {result['pin_plain']['peak_rss_mib']} MiB")
        print(f"  import        {result['import']['works_s']:8.1f} works/s   "
              f"peak RSS {result['import']['peak_rss_mib']} MiB "
              f"({result['import_quarter']['peak_rss_mib']} MiB for {args.files // 4} files)")
        print(f"  ratio         {result['ratio_to_plain_pin']:.3f} (target ≥ {TARGET_RATIO})"
              f"  {'ok' if result['meets_target'] else 'MISSED'}")
        print("  one thread:   " + ", ".join(f"{k} {v:.2f} s" for k, v in phases.items())
              + f"  → extraction {result['extraction_share']:.0%} of CPU work")
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
