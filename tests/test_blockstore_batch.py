"""A BlockWriter makes a batch durable before any of its blocks is visible: a crash leaves only temp files.

The order under test: temp files first (not visible as blocks), made durable
for the whole batch, then renamed into place, then the caller records pins.
A real child process is SIGKILLed between writing and flushing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import ArtkeepCli

from node import cid, importer
from node.blockstore import TEMP_PREFIX, Blockstore, page_aligned

WAIT_SECONDS = 30.0


def raw(data: bytes) -> cid.Cid:
    return cid.cid_of(data, cid.RAW)


def temps_of(store: Blockstore) -> list[Path]:
    """Temp files in the shards, a live writer's included (temp_files() lists only dead writers')."""
    return sorted(store.root.glob(f"??/{TEMP_PREFIX}*"))


def wait_for_temps(store: Blockstore, count: int) -> list[Path]:
    deadline = time.monotonic() + WAIT_SECONDS
    while len(found := temps_of(store)) < count:
        assert time.monotonic() < deadline, f"{len(found)} of {count} temp files written"
        time.sleep(0.01)
    return found


def test_blocks_stay_temp_files_until_flush_makes_the_batch_durable(tmp_path: Path) -> None:
    store = Blockstore(tmp_path / "blocks")
    blocks = [os.urandom(3000) for _ in range(12)]
    with store.writer(threads=3) as writer:
        for data in blocks:
            writer.put(raw(data), [data])
        written = wait_for_temps(store, len(blocks))
        assert all(path.read_bytes() in blocks for path in written)
        assert list(store) == [] and not any(store.has(raw(data)) for data in blocks)
        writer.flush()
        assert temps_of(store) == []
        assert all(store.get(raw(data)) == data for data in blocks)


def test_a_block_put_twice_in_one_batch_is_written_once(tmp_path: Path) -> None:
    store = Blockstore(tmp_path / "blocks")
    data = os.urandom(5000)
    v1 = raw(data)
    v0_named = cid.cid_of(b"\x0a\x02\x08\x01", cid.DAG_PB, 0)  # one block under its CIDv0 and CIDv1
    with store.writer(threads=2) as writer:
        writer.put(v1, [data])
        writer.put(v1, [data])
        writer.put(v0_named, [b"\x0a\x02\x08\x01"])
        writer.put(v0_named.to_v1(), [b"\x0a\x02\x08\x01"])
        wait_for_temps(store, 2)
        time.sleep(0.2)  # a second write of either, if one were made, would show as a third temp file
        assert len(temps_of(store)) == 2
    assert sorted(map(str, store)) == sorted([str(v1), str(v0_named.to_v1())])


def test_a_full_batch_is_placed_before_flush_and_only_whole(tmp_path: Path) -> None:
    store = Blockstore(tmp_path / "blocks")
    blocks = [os.urandom(4096) for _ in range(40)]
    with store.writer(threads=2, batch_bytes=4 * 4096) as writer:
        for data in blocks:
            writer.put(raw(data), [data])
        deadline = time.monotonic() + WAIT_SECONDS
        while not list(store):
            assert time.monotonic() < deadline, "no sealed batch was placed"
            time.sleep(0.01)
        for block_cid in store:  # whatever is visible before flush is whole
            assert store.get(block_cid) in blocks
    assert {str(c) for c in store} == {str(raw(data)) for data in blocks}
    assert temps_of(store) == []


def test_puts_from_several_threads_across_small_batches_all_land(tmp_path: Path) -> None:
    store = Blockstore(tmp_path / "blocks")
    per_thread = [[os.urandom(1500) for _ in range(60)] for _ in range(4)]
    with store.writer(threads=3, batch_bytes=8 * 1500) as writer:
        def put_all(blocks: list[bytes]) -> None:
            for data in blocks:
                writer.put(raw(data), [data])

        threads = [threading.Thread(target=put_all, args=(blocks,)) for blocks in per_thread]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert {str(c) for c in store} == {str(raw(data)) for blocks in per_thread for data in blocks}
    assert temps_of(store) == []


def test_a_batch_abandoned_by_an_error_leaves_no_temp_files(tmp_path: Path) -> None:
    store = Blockstore(tmp_path / "blocks")
    data = os.urandom(2000)
    try:
        with store.writer(threads=2) as writer:
            writer.put(raw(data), [data])
            wait_for_temps(store, 1)
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert temps_of(store) == [] and list(store) == []


CHILD = """
import os, sys, time
from pathlib import Path
from node import cid, importer
from node.node import Node

blocks = [bytes([i]) * 70_000 + os.urandom(64) for i in range(int(sys.argv[2]))]
with Node(Path(sys.argv[1])) as node, node.store.writer() as writer:
    for data in blocks:
        writer.put(cid.cid_of(data, cid.RAW), [data])
    while len(list(node.store.root.glob("??/.tmp-*"))) < len(blocks):
        time.sleep(0.01)
    print("written", flush=True)
    time.sleep(600)  # killed here, before the flush
"""


def test_a_writer_killed_before_flush_leaves_only_temp_files_that_gc_clears(
        tmp_path: Path, artkeep: ArtkeepCli) -> None:
    count = 8
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(artkeep.home), str(count)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=artkeep.env())
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line == b"written\n", child.stderr.read() if child.stderr else line
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.communicate()
    store = Blockstore(artkeep.home / "blocks")
    assert list(store) == []  # nothing visible under a block name
    assert len(store.temp_files()) == count  # the dead writer's temps, recognised by its pid

    fsck = artkeep("fsck", "--json")
    assert fsck.returncode == 0, fsck
    assert [f["kind"] for f in fsck.records()] == ["leftover"] * count

    assert artkeep("gc", "--yes").returncode == 0
    assert temps_of(store) == []
    fsck = artkeep("fsck", "--json")
    assert fsck.returncode == 0 and fsck.records() == [], fsck


# --- big chunks go to the disk straight from the reader's buffers (O_DIRECT), small ones through the cache

def test_whole_chunks_are_written_from_page_aligned_buffers_and_read_back_exactly(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 100)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    chunks = list(importer.read_chunks(source, 1024 * 1024))
    assert [page_aligned(chunk) for chunk in chunks] == [True, True, True, False]  # the tail is no whole page
    assert not page_aligned(bytes(4096))  # bytes are never one of our aligned buffers
    store = Blockstore(tmp_path / "store")
    with store.writer() as writer:
        for chunk in chunks:
            writer.put(raw(bytes(chunk)), (chunk,))
    assert b"".join(store.get(raw(bytes(chunk))) for chunk in chunks) == data
    assert store.temp_files() == []


def test_a_reader_buffer_is_reused_only_once_nothing_refers_to_it(tmp_path: Path) -> None:
    pool = importer.BufferPool(8192, keep=2)
    held = pool.take()
    held[:] = b"\x01" * 8192
    part = held[100:200]  # a slice, as a block's parts may be, keeps the buffer too
    del held
    for _ in range(5):
        other = pool.take()
        other[:] = b"\x02" * 8192
        assert other.obj is not part.obj
        del other
    assert bytes(part) == b"\x01" * 100
    first = id(part.obj)  # (not the object: holding it would keep it busy)
    del part
    assert any(id(pool.take().obj) == first for _ in range(2))  # free again, so reused
