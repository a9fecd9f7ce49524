"""The blockstore: write-once, atomic, and it never hands out a block that does not match its CID."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from node import cid
from node.blockstore import MAX_BLOCK_SIZE, Blockstore
from node.errors import BlockMismatch, BlockNotFound, BlockTooLarge


def raw(data: bytes) -> cid.Cid:
    return cid.cid_of(data, cid.RAW)


def test_put_get_has_delete_and_iterate(tmp_path: Path) -> None:
    store = Blockstore(tmp_path / "blocks")
    blocks = {raw(bytes([i]) * (i + 1)): bytes([i]) * (i + 1) for i in range(20)}
    for block_cid, data in blocks.items():
        assert store.put(block_cid, [data]) is True
        assert store.put(block_cid, [data]) is False  # write-once: a second put is a no-op
    store.sync()
    assert set(store) == set(blocks)
    for block_cid, data in blocks.items():
        assert store.has(block_cid) and store.get(block_cid) == data
    usage = store.usage()
    assert (usage.blocks, usage.bytes) == (20, sum(len(d) for d in blocks.values()))
    victim = next(iter(blocks))
    assert store.delete(victim) and not store.has(victim)
    with pytest.raises(BlockNotFound):
        store.get(victim)


def test_a_cidv0_block_is_found_under_its_v1_name(tmp_path: Path) -> None:
    store = Blockstore(tmp_path)
    block = bytes.fromhex("0a020801")
    v0 = cid.cid_of(block, cid.DAG_PB, 0)
    store.put(v0, [block])
    assert store.get(v0.to_v1()) == block and store.has(v0)


def test_bytes_that_do_not_match_the_cid_are_never_stored(tmp_path: Path) -> None:
    store = Blockstore(tmp_path)
    with pytest.raises(BlockMismatch):
        store.put(raw(b"right"), [b"wrong"])
    assert list(store) == [] and store.temp_files() == []


def test_blocks_over_two_mib_are_refused(tmp_path: Path) -> None:
    store = Blockstore(tmp_path)
    big = b"\0" * (MAX_BLOCK_SIZE + 1)
    with pytest.raises(BlockTooLarge):
        store.put(raw(big), [big])
    assert list(store) == []


def test_a_flipped_byte_on_disk_is_caught_on_read(tmp_path: Path) -> None:
    store = Blockstore(tmp_path)
    data = b"precious pixels" * 100
    block_cid = raw(data)
    store.put(block_cid, [data])
    path = store.path_of(block_cid)
    os.chmod(path, 0o644)
    damaged = bytearray(path.read_bytes())
    damaged[7] ^= 0x01
    path.write_bytes(bytes(damaged))
    with pytest.raises(BlockMismatch, match=str(block_cid)):
        store.get(block_cid)


def test_leftover_temp_files_of_dead_writers_are_invisible_and_removable(tmp_path: Path) -> None:
    store = Blockstore(tmp_path)
    data = b"abc"
    store.put(raw(data), [data])
    shard = store.path_of(raw(data)).parent
    dead_pid = 2**22 + 12345  # above pid_max on Linux: no such process
    leftover = shard / f".tmp-{dead_pid}-1-1"
    leftover.write_bytes(b"half a blo")
    assert list(store) == [raw(data)]
    assert store.temp_files() == [leftover]
    assert store.remove_temp_files() == 1 and not leftover.exists()


def test_a_staged_batch_is_invisible_until_commit_and_gone_after_abort(tmp_path: Path) -> None:
    store = Blockstore(tmp_path)
    first, second = b"one", b"two"
    staging = store.staging()
    staging.put(raw(first), first)
    assert not store.has(raw(first))
    staging.abort()
    assert list(store) == [] and not staging.folder.exists()
    staging = store.staging()
    staging.put(raw(first), first)
    staging.put(raw(second), second)
    assert staging.commit() == 2
    assert store.get(raw(first)) == first and store.get(raw(second)) == second


def test_parallel_writer_stores_everything_and_reports_the_first_failure(tmp_path: Path) -> None:
    store = Blockstore(tmp_path)
    blocks = [os.urandom(1000) for _ in range(50)]
    with store.writer(threads=3) as writer:
        for data in blocks:
            writer.put(raw(data), [data])
    assert all(store.get(raw(data)) == data for data in blocks)
    with pytest.raises(BlockMismatch), store.writer(threads=2) as writer:
        writer.put(raw(b"a"), [b"b"])


def rot(store: Blockstore, block_cid: cid.Cid) -> None:
    path = store.path_of(block_cid)
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("way", ["put", "writer", "staging"])
def test_the_right_bytes_replace_a_damaged_block_and_never_a_whole_one(tmp_path: Path, way: str) -> None:
    store = Blockstore(tmp_path / "blocks")
    damaged, whole = b"rotted on disk", b"still whole"
    damaged_cid, whole_cid = raw(damaged), raw(whole)
    store.put(damaged_cid, [damaged])
    store.put(whole_cid, [whole])
    rot(store, damaged_cid)
    whole_inode = store.path_of(whole_cid).stat().st_ino
    assert not store.holds_whole(damaged_cid) and store.holds_whole(whole_cid)

    if way == "put":
        assert store.put(damaged_cid, [damaged]) is True and store.put(whole_cid, [whole]) is False
        store.sync()
    elif way == "writer":
        with store.writer() as writer:
            writer.put(damaged_cid, [damaged])
            writer.put(whole_cid, [whole])
            writer.flush()
    else:
        staging = store.staging()
        staging.put(damaged_cid, damaged)
        staging.put(whole_cid, whole)
        assert staging.commit() == 1

    assert store.get(damaged_cid) == damaged
    assert store.path_of(whole_cid).stat().st_ino == whole_inode  # write-once: never rewritten
    assert store.temp_files() == []
