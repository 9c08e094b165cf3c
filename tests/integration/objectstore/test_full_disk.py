"""A storage node whose disk fills up (a tmpfs of a few MiB under its data directory).

While one replica of three is full, every PUT is still acknowledged (by the other two,
whichever node takes it, the full one included) and every object reads back through every
node, the full one included: its failed writes are a failed replica (``DiskFull``), never a
failed request, and nothing is logged at ERROR; the node says once that it is full. With two
of three full, a PUT is refused as ``ServiceUnavailable`` naming the full disks, and the
objects acknowledged before still read back. Once there is room again the nodes take writes
again (their SQLite transactions were rolled back, not left open).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudless.objectstore.layout import NodeRole
from cloudless.objectstore.records import object_pk
from cloudless.objectstore.s3.errors import S3Error
from cloudless.objectstore.testing import LoopbackCluster
from tests.integration.objectstore.conftest import body

SMALL, BLOCK = 4096, 300_000


@pytest.fixture
def small_disks(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """n2 on a 6 MiB tmpfs, n3 on a 12 MiB one."""
    disks = {"n2": tmp_path / "n2", "n3": tmp_path / "n3"}
    mounted: list[Path] = []
    try:
        for d, size in zip(disks.values(), ("6m", "12m"), strict=True):
            d.mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", d], check=True)
            mounted.append(d)
        yield disks
    finally:
        for d in mounted:
            subprocess.run(["umount", "-l", d], check=False)


def _room(d: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", d], check=True)


async def test_a_full_disk_fails_a_replica_not_a_request(
    tmp_path: Path, small_disks: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    roles = {f"n{i}": NodeRole(f"z{i}", 10**9) for i in range(1, 4)}
    c = await LoopbackCluster(tmp_path, roles, replication=3).start()
    written: dict[str, bytes] = {}
    try:
        with caplog.at_level(logging.WARNING):
            refused: S3Error | None = None
            for i in range(120):
                data = os.urandom(SMALL if i % 3 == 0 else BLOCK)
                node = f"n{i % 3 + 1}"  # the full nodes take PUTs too
                try:
                    await c.engine(node).put(
                        "b", f"k{i}", body(data), content_type="x", user_meta={}
                    )
                except S3Error as e:  # refused only once n3 is (nearly) full too
                    assert shutil.disk_usage(small_disks["n3"]).free < 2 * BLOCK, e
                    refused = e
                    break
                written[f"k{i}"] = data
            assert shutil.disk_usage(small_disks["n2"]).free < BLOCK, "n2 never filled up"
            assert refused is not None, "n3 never filled up"
            assert refused.code == "ServiceUnavailable"
            assert "no space left on device" in str(refused)
            assert len(written) > 25  # acknowledged while only n2 was full
            for reader in ("n1", "n2", "n3"):
                for key, data in written.items():
                    obj = await c.engine(reader).head("b", key)
                    assert obj is not None, (reader, key)
                    assert await c.engine(reader).read_whole(obj, 0, obj.size) == data
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == []
        said = [
            r.getMessage() for r in caplog.records if "no space left on device" in r.getMessage()
        ]
        assert 1 <= len(said) <= 2, said  # once per full node (each says so once a minute)
        # what each node's registration reports (``cloudless s3 status``)
        assert c.nodes["n2"].local.refusing_writes() and c.nodes["n3"].local.refusing_writes()
        assert not c.nodes["n1"].local.refusing_writes()
        # room again: a PUT is acknowledged and lands on every node
        for d in small_disks.values():
            _room(d, "64m")
        data = os.urandom(BLOCK)
        await c.engine("n2").put("b", "after", body(data), content_type="x", user_meta={})
        pk = object_pk("b", "after")
        for n in c.nodes.values():
            for _ in range(250):
                if n.local.raw("objects").entry(pk) is not None:
                    break
                await asyncio.sleep(0.02)
            assert n.local.raw("objects").entry(pk) is not None, n.name
            assert not n.local.meta.db.in_transaction
    finally:
        await c.close()
