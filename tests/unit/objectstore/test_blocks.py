"""Blocks on disk: atomic writes, hash-checked reads, reference counts, delayed GC."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cloudless.lib.clock import FakeClock
from cloudless.objectstore.blocks import (
    SYNC_MAX,
    BlockStore,
    CorruptBlock,
    MissingBlock,
    block_hash,
)
from cloudless.objectstore.local import LocalStore
from cloudless.objectstore.metadb import MetaDb


@pytest.fixture
def blocks(tmp_path: Path) -> BlockStore:
    return BlockStore(tmp_path / "blocks", MetaDb(tmp_path / "meta.db", "n1"), gc_delay=600)


async def test_write_read_dedupe(blocks: BlockStore) -> None:
    data = b"x" * 5000
    h = block_hash(data)
    assert await blocks.write(h, data) is True
    assert await blocks.write(h, data) is False  # same content, same name: nothing to do
    assert await blocks.read(h) == data
    assert list(blocks.path(h).parent.iterdir()) == [blocks.path(h)]  # no temp file left


async def test_corrupt_block_is_detected_and_quarantined(tmp_path: Path) -> None:
    data = b"hello" * 100
    h = block_hash(data)
    blocks = BlockStore(tmp_path / "blocks", MetaDb(tmp_path / "meta.db", "n1"))
    await blocks.write(h, data)
    blocks.path(h).write_bytes(b"jello" * 100)  # bit rot
    assert await blocks.read(h) == data  # held in memory since its write, checked then
    with pytest.raises(CorruptBlock):
        blocks.read_sync(h)  # the scrub's read goes to the file
    await blocks.write(h, data)  # repaired (as the scrub does)
    blocks.path(h).write_bytes(b"jello" * 100)
    restarted = BlockStore(tmp_path / "blocks", MetaDb(tmp_path / "meta.db", "n1"))
    with pytest.raises(CorruptBlock, match="failed its hash check"):
        await restarted.read(h)
    assert not restarted.has(h) and (restarted.root / "corrupt" / h).exists()
    with pytest.raises(MissingBlock):
        await restarted.read(h)


async def test_small_blocks_are_held_within_the_budget_and_dropped_with_their_file(
    tmp_path: Path,
) -> None:
    meta = MetaDb(tmp_path / "meta.db", "n1")
    blocks = BlockStore(tmp_path / "blocks", meta, small_cache_bytes=3 * 10_000)
    pieces = [os.urandom(10_000) for _ in range(4)]
    hashes = [block_hash(p) for p in pieces]
    for h, p in zip(hashes, pieces, strict=True):
        await blocks.write(h, p)
    for h in hashes:  # files gone: only what is held can still be read
        blocks.path(h).unlink()
    for h, p in zip(hashes[1:], pieces[1:], strict=True):  # the oldest went over budget
        assert await blocks.read(h) == p
    with pytest.raises(MissingBlock):
        await blocks.read(hashes[0])
    big = os.urandom(SYNC_MAX + 1)  # a large block is never held
    await blocks.write(block_hash(big), big)
    blocks.path(block_hash(big)).unlink()
    with pytest.raises(MissingBlock):
        await blocks.read(block_hash(big))
    blocks.forget(hashes[1])  # what collection and quarantine do
    with pytest.raises(MissingBlock):
        await blocks.read(hashes[1])


async def test_a_read_block_is_held_after_its_hash_check(blocks: BlockStore) -> None:
    data = os.urandom(9_000)
    h = block_hash(data)
    await blocks.write(h, data)
    blocks.forget(h)
    assert await blocks.read(h) == data  # from the file, hashed, then held
    blocks.path(h).unlink()
    assert await blocks.read(h) == data


def test_crash_leftovers_are_invisible_and_cleaned(blocks: BlockStore) -> None:
    h = block_hash(b"a")
    blocks.path(h).parent.mkdir(parents=True)
    blocks.path(h).with_name(h + ".tmp.dead").write_bytes(b"partial")  # died before rename
    assert not blocks.has(h)
    assert blocks.remove_temps() == 1


def test_bad_hash_names_are_refused(blocks: BlockStore) -> None:
    with pytest.raises(ValueError, match="64 lowercase hex"):
        blocks.path("../../etc/passwd")


async def test_refcounts_and_delayed_gc(tmp_path: Path) -> None:
    clock = FakeClock(start=1000.0)
    meta = MetaDb(tmp_path / "meta.db", "n1")
    blocks = BlockStore(tmp_path / "blocks", meta, gc_delay=600)
    refs = LocalStore(meta, blocks, clock).table("block_refs")
    h = block_hash(b"data")
    blocks.write_sync(h, b"data")

    async def ref(version: str, live: bool, at: float) -> None:
        clock.advance(at - clock.now())
        await refs.put(f"{h}/{version}", 0, b"1" if live else None, int(at * 1000))

    await ref("v1", True, 1000.0)
    await ref("v2", True, 1000.0)
    assert blocks.refcount(h) == 2
    await ref("v1", False, 1001.0)
    assert blocks.refcount(h) == 1 and blocks.collect(now=99999.0) == []
    await ref("v2", False, 1002.0)  # count 0: due at 1002 + 600 = 1602
    assert blocks.collect(now=1601.0) == [] and blocks.has(h)
    # rescued: a new reference before the delay ends keeps the block
    await ref("v3", True, 1500.0)
    assert blocks.collect(now=1700.0) == [] and blocks.has(h)
    await ref("v3", False, 1800.0)  # due 2400
    assert blocks.collect(now=2400.0) == [h] and not blocks.has(h)
    with pytest.raises(MissingBlock):  # nor held in memory any more
        await blocks.read(h)


async def test_group_commit_writes_then_syncs(blocks: BlockStore) -> None:
    datas = [bytes([i]) * 100_000 for i in range(3)]
    hashes = [block_hash(d) for d in datas]
    for h, d in zip(hashes, datas, strict=True):
        assert await blocks.write(h, d, durable=False) is True
    await blocks.sync([*hashes, hashes[0]])  # duplicates are synced once
    assert [await blocks.read(h) for h in hashes] == datas


async def test_deferred_fsync_is_done_by_the_next_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = BlockStore(tmp_path / "b", MetaDb(tmp_path / "m.db", "n1"), fsync_each=False)
    synced: list[int] = []
    real = __import__("os").fsync
    monkeypatch.setattr("cloudless.objectstore.blocks.os.fsync", lambda fd: synced.append(fd))
    one, two, three = b"1" * 100, b"2" * 200_000, b"3" * 300
    for data in (one, two, three):
        assert await blocks.write(block_hash(data), data) is True
    assert synced == []  # nothing synced while acknowledging
    assert await blocks.write(block_hash(one), one) is False  # already there: not queued again
    blocks.path(block_hash(three)).unlink()  # collected before the flush: skipped
    assert await blocks.flush() == 3
    # two files, then their directories (one each: distinct hash prefixes)
    assert len(synced) == 2 + 2
    assert await blocks.flush() == 0
    monkeypatch.setattr("cloudless.objectstore.blocks.os.fsync", real)
    assert await blocks.read(block_hash(two)) == two


async def test_a_failed_flush_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = BlockStore(tmp_path / "b", MetaDb(tmp_path / "m.db", "n1"), fsync_each=False)
    data = b"x" * 100
    await blocks.write(block_hash(data), data)

    def broken(fd: int) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr("cloudless.objectstore.blocks.os.fsync", broken)
    with pytest.raises(OSError):
        await blocks.flush()
    monkeypatch.undo()
    assert await blocks.flush() == 1


async def test_blocks_truncated_by_an_unclean_stop_are_found(blocks: BlockStore) -> None:
    # Four blocks: two written long before the stop, two in its last seconds. Of each pair
    # one came back truncated (its fsync was still pending when the power went).
    datas = [bytes([i]) * 5000 for i in range(4)]
    hs = [block_hash(d) for d in datas]
    for h, d in zip(hs, datas, strict=True):
        await blocks.write(h, d)
    stop = 1_700_000_000.0
    for h, mtime in zip(hs, (stop - 3600, stop - 3600, stop - 2, stop - 1), strict=True):
        os.utime(blocks.path(h), (mtime, mtime))
    for h in (hs[1], hs[3]):
        os.truncate(blocks.path(h), 4096)
        os.utime(blocks.path(h), (stop - 1, stop - 1) if h == hs[3] else (stop - 3600,) * 2)
    assert all(blocks.has(h) for h in hs)  # present by name, truncated or not
    # re-read only what changed in the minute before the stop: the old truncated block is
    # left to the scrub; the recent one is found, quarantined, and no longer counts as held
    assert blocks.check_recent(stop - 60) == [hs[3]]
    assert not blocks.has(hs[3]) and (blocks.root / "corrupt" / hs[3]).exists()
    assert blocks.has(hs[2]) and blocks.has(hs[1])
    assert blocks.check_recent(stop - 7200) == [hs[1]]  # a wider window finds the other


async def test_open_hashes_a_file_only_when_it_changed_since_written_or_verified(
    blocks: BlockStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cloudless.objectstore.blocks as mod

    hashed: list[int] = []
    real = mod._file_hash

    def counting(f: object) -> str:
        hashed.append(1)
        return real(f)  # type: ignore[arg-type]

    monkeypatch.setattr(mod, "_file_hash", counting)
    data = os.urandom(200_000)
    h = block_hash(data)
    await blocks.write(h, data)
    with await blocks.open(h) as f:  # written by this store, unchanged: no hashing
        assert f.read() == data
    assert hashed == []
    blocks.path(h).write_bytes(bytes(len(data)))  # rewritten in place: same size, new times
    with pytest.raises(CorruptBlock):
        await blocks.open(h)
    assert hashed == [1] and (blocks.root / "corrupt" / h).exists()
    fresh = BlockStore(blocks.root, MetaDb(blocks.root.parent / "meta2.db", "n1"))
    other = os.urandom(100_000)
    h2 = block_hash(other)
    blocks.path(h2).parent.mkdir(parents=True, exist_ok=True)
    blocks.path(h2).write_bytes(other)  # on disk before this store started: hashed once
    for _ in range(2):
        with await fresh.open(h2) as f:
            assert f.read() == other
    assert hashed == [1, 1]


async def test_a_write_of_a_block_due_for_deletion_takes_it_off_the_queue(
    tmp_path: Path,
) -> None:
    """A re-upload that finds the file present references it right after: its deletion is
    off from the write on, before the reference lands (the GC used to check the count in a
    thread and could unlink the file in between). The queue survives a reopen."""
    clock = FakeClock(start=1000.0)
    meta = MetaDb(tmp_path / "meta.db", "n1")
    blocks = BlockStore(tmp_path / "blocks", meta, gc_delay=600)
    refs = LocalStore(meta, blocks, clock).table("block_refs")
    kept, other = block_hash(b"kept"), block_hash(b"other")
    for h, data in ((kept, b"kept"), (other, b"other")):
        blocks.write_sync(h, data)
        await refs.put(f"{h}/v1", 0, b"1", 1_000_000)
        await refs.put(f"{h}/v1", 0, None, 1_001_000)  # count 0: due at 1601
    blocks = BlockStore(tmp_path / "blocks", meta, gc_delay=600)  # reopened: queue reloaded
    assert await blocks.write(kept, b"kept") is False  # found present: not written again
    assert blocks.collect(now=1700.0) == [other]  # its reference has not landed, yet it stays
    assert blocks.has(kept) and not blocks.has(other)


def test_the_gc_deletes_in_bounded_batches(tmp_path: Path) -> None:
    meta = MetaDb(tmp_path / "meta.db", "n1")
    blocks = BlockStore(tmp_path / "blocks", meta, gc_delay=0)
    hashes = []
    for i in range(5):
        h = block_hash(b"%d" % i)
        blocks.write_sync(h, b"%d" % i)
        blocks.reconsider(h, now=0.0)
        hashes.append(h)
    first = blocks.collect(now=1.0, limit=3)
    rest = blocks.collect(now=1.0, limit=3)
    assert len(first) == 3 and len(rest) == 2 and sorted(first + rest) == sorted(hashes)
    assert blocks.collect(now=1.0, limit=3) == []


async def test_a_budget_of_zero_holds_nothing(tmp_path: Path) -> None:
    blocks = BlockStore(tmp_path / "b", MetaDb(tmp_path / "m.db", "n1"), small_cache_bytes=0)
    data = os.urandom(5_000)
    await blocks.write(block_hash(data), data)
    blocks.path(block_hash(data)).unlink()
    with pytest.raises(MissingBlock):
        await blocks.read(block_hash(data))
