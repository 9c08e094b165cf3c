"""The scrub's pass over inline object rows: every row with a body is checked however many
pages it takes, rows without one are skipped, a damaged row is handed to ``repair_row`` (a
fake here) and counted repaired only if its stored bytes are whole afterwards."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cloudless.lib.clock import FakeClock
from cloudless.objectstore.blocks import BlockStore
from cloudless.objectstore.crdt import Entry
from cloudless.objectstore.metadb import MetaDb
from cloudless.objectstore.records import BODY, ObjectMeta
from cloudless.objectstore.scrub import ROWS_PER_READ, Scrubber


def record(i: int) -> bytes:
    body = f"body {i}".encode() * 50
    return ObjectMeta(f"v{i}", len(body), hashlib.md5(body).hexdigest(), 1.0, inline=body).encode()


def rot(raw: bytes) -> bytes:
    cut = raw.index(BODY) + 1
    return raw[:cut] + b"\xff" * (len(raw) - cut)


async def test_the_scrub_checks_every_inline_row_and_repairs_what_it_can(tmp_path: Path) -> None:
    meta = MetaDb(tmp_path / "m.db", "n1")
    objects = meta.table("objects")
    n = 2 * ROWS_PER_READ + 5  # three pages
    for i in range(n):
        objects.merge(f"b/k{i:03d}", 3, Entry(5, "n1", record(i)))
    objects.merge("b/head-only", 3, Entry(5, "n1", b'{"v":"x"}'))  # a block object: no body
    objects.merge("b/gone", 3, Entry(6, "n1", None))  # a tombstone
    mended, lost = "b/k007", f"b/k{n - 1:03d}"
    for pk in (mended, lost):
        meta.db.execute("UPDATE objects SET value = ? WHERE pk = ?", (rot(objects.get(pk)), pk))
        meta.forget("objects", pk)
    asked: list[str] = []

    async def repair_row(pk: str, part: int) -> None:
        asked.append(pk)
        assert part == 3
        if pk == mended:  # a replica had a good copy of the same write
            objects.merge(pk, part, Entry(5, "n1", record(7)))

    scrub = Scrubber(
        BlockStore(tmp_path / "b", meta),
        FakeClock(),
        bytes_per_second=0,
        objects=objects,
        repair_row=repair_row,
    )
    report = await scrub.scrub_once()
    assert report.rows == n
    assert report.corrupt_rows == [mended, lost] and asked == [mended, lost]
    assert report.repaired_rows == [mended]
    assert objects.get(mended) == record(7)
    meta.close()
