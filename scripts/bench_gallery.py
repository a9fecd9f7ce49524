#!/usr/bin/env python3
"""Gallery benchmark: ms per page at 100,000 works, first page and deep pages, with and without search.

Usage: scripts/bench gallery [--works N] [--page-size N] [--deep-page N] [--repeat N] [--json]

Fills a fresh index under .bench/gallery/ through Index.add_gallery_entries
(the path works take when they are recorded) with N synthetic works: prompts
drawn from a vocabulary, a few hundred models and LoRAs, random seeds. Then
times, each as the median of --repeat runs of Index.gallery_page:

- the newest page, and page --deep-page (by default the last page of 100,000
  works at 20 a page, page 5,000) reached by its keyset cursor;
- the same deep page read with OFFSET, for comparison (what keyset paging avoids);
- full-text search for a common and a rare word, first and deep page;
- the exact filters: model, LoRA, seed, generator, a date range.

Prints ms per page and the process's peak RSS (VmHWM). No network.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.index import Index
from node.search import GalleryEntry, GalleryQuery

WORDS = ("girl", "boy", "cat", "dog", "castle", "forest", "lighthouse", "dusk", "dawn", "neon", "city",
         "rain", "portrait", "landscape", "river", "mountain", "dragon", "robot", "armor", "flower",
         "garden", "ocean", "storm", "night", "sunset", "cinematic", "detailed", "painting", "watercolor",
         "anime", "photo", "studio", "lighting", "masterpiece", "quality", "bokeh", "fog", "snow",
         "desert", "ruins")
RARE = "quetzalcoatl"  # one work in ten thousand
FAMILIES = ("a1111", "comfyui", "invokeai", "novelai", "fooocus", "swarmui", "none")


def entries(count: int, rng: random.Random) -> list[GalleryEntry]:
    made = []
    for number in range(count):
        words = rng.choices(WORDS, k=rng.randint(8, 40))
        if number % 10_000 == 0:
            words.append(RARE)
        loras = tuple(f"lora_{rng.randrange(300)}" for _ in range(rng.randint(0, 3)))
        made.append(GalleryEntry(
            work=f"bafyreibench{number:012d}", image_cid=f"bafkreibench{number:012d}", name=f"{number}.png",
            family=FAMILIES[number % len(FAMILIES)], tool=None, model=f"model_{rng.randrange(400)}.ckpt",
            seed=str(rng.randrange(2**32)), width=1024, height=1024, prompt=", ".join(words),
            negative_prompt="lowres, bad anatomy, blurry", loras=loras))
    return made


def timed(run: Callable[[], object], repeat: int) -> float:
    """Median milliseconds of run()."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--works", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=20)
    parser.add_argument("--deep-page", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--json", action="store_true", help="one JSON object instead of text")
    args = parser.parse_args()
    folder = Path(__file__).resolve().parents[1] / ".bench" / "gallery"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    index = Index(folder / "index.sqlite")
    rng = random.Random(7)
    started = time.perf_counter()
    made = entries(args.works, rng)
    for start in range(0, len(made), 1000):
        index.add_gallery_entries(made[start:start + 1000])
    fill_s = time.perf_counter() - started
    size = args.page_size
    deep = min(args.deep_page, max(1, args.works // size))
    ids = [row[0] for row in index._read("SELECT id FROM gallery ORDER BY id DESC")]
    cursor = ids[(deep - 1) * size - 1] if deep > 1 else None
    sample = made[len(made) // 2]
    created_day = time.strftime("%Y-%m-%d", time.gmtime())

    def page(**query: object) -> Callable[[], object]:
        return lambda: index.gallery_page(GalleryQuery(limit=size, **query))  # type: ignore[arg-type]

    def offset_page() -> object:
        return index._read("SELECT id, work FROM gallery ORDER BY id DESC LIMIT ? OFFSET ?",
                           (size + 1, (deep - 1) * size))

    common = index.gallery_page(GalleryQuery(text="lighthouse", limit=size * 49))  # pages 1 to 49
    page_50 = common[min(len(common), size * 49) - 1].id
    cases: dict[str, Callable[[], object]] = {
        "newest page": page(),
        f"page {deep} (keyset)": page(before=cursor),
        f"page {deep} (OFFSET, for comparison)": offset_page,
        "search 'lighthouse', page 1": page(text="lighthouse"),
        "search 'lighthouse', page 50": page(text="lighthouse", before=page_50),
        f"search '{RARE}' (rare)": page(text=RARE),
        "search two words": page(text="neon rain"),
        "negative prompt words": page(negative="blurry"),
        "model (exact)": page(model=sample.model),
        "LoRA (exact)": page(lora=sample.loras[0] if sample.loras else "lora_1"),
        "seed (exact)": page(seed=sample.seed),
        "generator": page(generator="novelai"),
        "date range": page(since=created_day, until=created_day),
        "words + model + generator": page(text="castle", model=sample.model, generator=sample.family),
        "count and generator list (each page shows them)": lambda: (index.gallery_count(),
                                                                    index.gallery_families()),
    }
    results = {name: round(timed(run, args.repeat), 2) for name, run in cases.items()}
    index.close()
    report = {"works": args.works, "page_size": size, "fill_seconds": round(fill_s, 1),
              "ms_per_page": results, "peak_rss_mib": round(peak_rss_mib(), 1),
              "index_mib": round(sum(p.stat().st_size for p in folder.iterdir()) / 2**20, 1)}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{args.works} works indexed in {fill_s:.1f} s; index {report['index_mib']} MiB; "
          f"{size} per page; median of {args.repeat}")
    for name, ms in results.items():
        print(f"  {name:<48} {ms:8.2f} ms")
    print(f"  peak RSS {report['peak_rss_mib']} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
