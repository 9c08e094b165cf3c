"""A full disk: ``DiskFull`` from SQLite's and the file system's errors, the node's warning
once a minute and its ``refusing_writes`` for two, and how ``status`` shows a node's disk."""

from __future__ import annotations

import errno
import logging
import sqlite3
from pathlib import Path

import pytest

from cloudless.lib.clock import FakeClock
from cloudless.objectstore.admin import disk_text
from cloudless.objectstore.blocks import BlockStore
from cloudless.objectstore.local import FULL_EVERY_S, FULL_HOLD_S, LocalStore
from cloudless.objectstore.members import NODES, StorageNode
from cloudless.objectstore.metadb import DiskFull, MetaDb, full

GIB = 1 << 30


def sqlite_error(code: int) -> sqlite3.OperationalError:
    e = sqlite3.OperationalError("x")
    e.sqlite_errorcode = code  # type: ignore[attr-defined]
    return e


# (error, whether it says the disk is full)
FULL = [
    (sqlite_error(sqlite3.SQLITE_FULL), True),
    (sqlite_error(sqlite3.SQLITE_BUSY), False),
    (sqlite3.OperationalError("no code"), False),
    (OSError(errno.ENOSPC, "No space left on device"), True),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
    (OSError(errno.EIO, "I/O error"), False),
    (DiskFull("n1", "metadata"), True),
    (ValueError("no"), False),
]


@pytest.mark.parametrize(("e", "want"), FULL)
def test_full_table(e: BaseException, want: bool) -> None:
    assert full(e) is want


def test_disk_full_reads_as_an_os_error_naming_the_node() -> None:
    e = DiskFull("n2", "block ab12")
    assert isinstance(e, OSError) and e.errno == errno.ENOSPC
    assert str(e) == "n2: no space left on device for block ab12"


def test_a_node_warns_once_a_minute_and_reports_refusing_writes_for_two(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    meta = MetaDb(tmp_path / "m.db", "n1")
    local = LocalStore(meta, BlockStore(tmp_path / "b", meta), clock)
    assert not local.refusing_writes()
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            local.disk_full(DiskFull("n1", "metadata"))
            clock.advance(1)
        assert local.refusing_writes()
        said = [r for r in caplog.records if "no space left" in r.getMessage()]
        assert len(said) == 1 and "reads go on" in said[0].getMessage()
        clock.advance(FULL_EVERY_S)
        local.disk_full(DiskFull("n1", "metadata"))
        assert len([r for r in caplog.records if "no space left" in r.getMessage()]) == 2
    clock.advance(FULL_HOLD_S - 1)
    assert local.refusing_writes()
    clock.advance(2)
    assert not local.refusing_writes()


def node(**kw: object) -> StorageNode:
    base: dict[str, object] = {
        "name": "n1", "zone": "home", "capacity": 10**12,
        "rpc_url": "https://10.0.0.1:7400", "s3_url": "",
    }  # fmt: skip
    return StorageNode(**{**base, **kw})  # type: ignore[arg-type]


# (registration, what status adds to its line)
DISK = [
    (node(disk_free=3 * GIB // 2, disk_size=100 * GIB), "  disk 1.5 of 100.0 GiB free"),
    (
        node(disk_free=0, disk_size=8 * GIB, refusing_writes=True),
        "  disk 0.0 of 8.0 GiB free  REFUSING WRITES: its disk is full",
    ),
    (node(), ""),  # not reported (a node of an earlier version)
    (node(capacity=0, disk_free=GIB, disk_size=GIB), ""),  # a gateway stores nothing
]


@pytest.mark.parametrize(("n", "want"), DISK)
def test_disk_text_table(n: StorageNode, want: str) -> None:
    assert disk_text(n) == want


def test_registrations_read_across_versions() -> None:
    """Without the disk fields (an older node): unknown; with a field this code does not know
    (a newer node): read without it."""
    codec = NODES.default_codec
    old = codec.encode(node())
    for k in ("disk_free", "disk_size", "refusing_writes"):
        del old[k]  # type: ignore[union-attr]
    n = codec.decode(old)
    assert (n.disk_free, n.disk_size, n.refusing_writes) == (-1, -1, False)
    assert codec.decode(codec.encode(node(disk_free=5, disk_size=9))).disk_free == 5
    newer = {**codec.encode(node(disk_free=5)), "a_field_of_a_later_version": 1}  # type: ignore[dict-item]
    assert codec.decode(newer) == node(disk_free=5)  # a rolling upgrade: ignored


# (error, whether the node notes a full disk, what its warning names)
NOTED = [
    (sqlite_error(sqlite3.SQLITE_FULL), True, "n1: no space left on device for a checkpoint"),
    (OSError(errno.ENOSPC, "No space left on device"), True, "for a checkpoint"),
    (DiskFull("n1", "block ab"), True, "for block ab"),  # passed on as it is
    (OSError(errno.EIO, "I/O error"), False, None),
    (sqlite_error(sqlite3.SQLITE_BUSY), False, None),
]


@pytest.mark.parametrize(("e", "noted", "said"), NOTED)
def test_noted_full_table(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    e: BaseException,
    noted: bool,
    said: str | None,
) -> None:
    meta = MetaDb(tmp_path / "m.db", "n1")
    local = LocalStore(meta, BlockStore(tmp_path / "b", meta), FakeClock())
    with caplog.at_level(logging.WARNING):
        assert local.noted_full(e, "a checkpoint") is noted
    assert local.refusing_writes() is noted
    if said is None:
        assert caplog.records == []
    else:
        assert said in caplog.records[0].getMessage()
