"""A full disk in a running agent: three ``cloudless agent --storage`` processes (R=3), node-2's
object-store directory a 24 MiB tmpfs.

Writes through node-1 and node-2 fill node-2's disk; every PUT is still acknowledged (node-1
and node-3 are a write quorum), every object reads back through all three nodes, node-2 goes
on beating (its registration says it refuses writes, ``cloudless s3 status`` shows it) and
logs no error or traceback, only a warning now and then. Then it restarts on its full disk
(its catch-up cannot write: the service must not die of it), gets room again, catches up and
takes new writes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudless.objectstore.members import NODES
from cloudless.objectstore.procs import StoreCluster, wait_for
from cloudless.objectstore.records import object_pk
from tests.integration.objectstore.netns_rig import has_row, s3, s3_up

pytestmark = pytest.mark.timeout(600)
BUCKET = "full"


def registration(cluster: StoreCluster, name: str) -> Any:
    async def nodes(store: Any) -> dict[str, Any]:
        return {r.value.name: r.value for r in (await NODES.bind(store).list()).records}

    return cluster.with_etcd(nodes).get(name)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[StoreCluster]:
    small = tmp_path / "a2" / "objectstore"  # agent 2's storage directory (procs.StoreCluster)
    small.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", small], check=True)
    c = StoreCluster(tmp_path, ["z1", "z2", "z3"], replication=3)
    try:
        yield c.start()
    finally:
        c.close()
        subprocess.run(["umount", "-l", small], check=False)


def test_a_full_disk_in_a_running_agent(cluster: StoreCluster) -> None:
    a1, a2, a3 = cluster.agents
    key = cluster.create_key("tester")
    wait_for(lambda: s3_up(a1.s3, key), "node-1's S3 API", 120)
    cluster.create_bucket(BUCKET, key.key_id)
    for a in (a1, a2, a3):
        wait_for(lambda a=a: s3_up(a.s3, key), f"{a.name}'s S3 API", 120)
    objects: dict[str, bytes] = {}
    for i in range(36):  # ~35 MiB, more than node-2's disk holds
        data = os.urandom(1_000_000 if i % 4 else 5_000)
        name = f"k{i}"
        s3((a1, a2)[i % 2].s3, key).put_object(Bucket=BUCKET, Key=name, Body=data)
        objects[name] = data
    node2 = a2.node_id
    wait_for(
        lambda: (r := registration(cluster, node2)) is not None and r.refusing_writes,
        "node-2 to report that it refuses writes",
        30,
    )
    beat = registration(cluster, node2).beat
    wait_for(lambda: registration(cluster, node2).beat > beat + 1, "node-2 to go on beating", 30)
    status = "\n".join(cluster.call_api("GET", "/v1/s3/status")["lines"])
    assert status.count("REFUSING WRITES: its disk is full") == 1, status
    full = f"object store node {node2}: disk full ("
    wait_for(lambda: any(full in m for m in cluster.events("objectstore")), "the event", 30)

    def check_all(endpoint: str) -> None:
        c = s3(endpoint, key)
        for name, data in objects.items():
            got = c.get_object(Bucket=BUCKET, Key=name)["Body"].read()
            assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), name

    for a in (a1, a2, a3):
        check_all(a.s3)
    # restarted on its full disk: the catch-up cannot write, and the node stays up
    cluster.kill(1)
    cluster.start_agent(1)
    wait_for(lambda: s3_up(a2.s3, key), "node-2's S3 API again", 120)
    s3(a1.s3, key).put_object(Bucket=BUCKET, Key="while-full", Body=b"x" * 2_000_000)
    objects["while-full"] = b"x" * 2_000_000
    assert cluster.agents[1].proc is not None and cluster.agents[1].proc.poll() is None
    # room again: it catches up (reads open) and has every object's row
    subprocess.run(["mount", "-o", "remount,size=256m", a2.data / "objectstore"], check=True)
    wait_for(lambda: "caught up:" in a2.log.read_text(), "node-2 to catch up", 180)
    wait_for(
        lambda: all(has_row(a2.data, object_pk(BUCKET, n)) for n in objects),
        "node-2 to hold every object",
        120,
    )
    check_all(a2.s3)
    room = f"object store node {node2}: disk has room again, taking writes"
    wait_for(lambda: room in cluster.events("objectstore"), "the room-again event", 120)
    log = a2.log.read_text()
    assert "no space left on device" in log
    assert " ERROR " not in log and "Traceback" not in log, log[-3000:]
