"""The store as Cloudless runs it: a real coordinator (embedded etcd) and agents started with
``--storage``, every one a separate process; boto3 against the agents' S3 endpoints.

R=3 over three zones: the first layout appears once three storage nodes registered; a PUT
through one node reads back through another; with one agent killed (-9) writes and reads go
on; the agent comes back, catches up what it missed (its own SQLite holds every object
written while it was down, before any read is served by it) and, with another agent killed,
serves reads; with its disk wiped it catches up everything before serving reads; a fourth
agent in an existing zone joins by a layout change and syncs; an agent gone past the grace
period is replaced automatically (one transition), and everything written stays readable
and hash-identical.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudless.objectstore.history import LayoutHistory
from cloudless.objectstore.layout_store import LayoutStore
from cloudless.objectstore.procs import StoreCluster, wait_for
from cloudless.objectstore.records import object_pk
from tests.integration.objectstore.netns_rig import has_row, s3, s3_up

pytestmark = pytest.mark.timeout(600)
BUCKET = "photos"


def history(cluster: StoreCluster) -> LayoutHistory:
    h: LayoutHistory = cluster.with_etcd(lambda s: LayoutStore(s).show())
    return h


def caught_up(a: Any) -> bool:
    """The agent logged the end of its catch-up pass (reads open again)."""
    return "caught up:" in a.log.read_text()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[StoreCluster]:
    c = StoreCluster(tmp_path, ["z1", "z2", "z3"], replication=3, grace_s=12.0, lifecycle_s=2.0)
    try:
        yield c.start()
    finally:
        c.close()


def test_agents_run_a_replicated_store(cluster: StoreCluster) -> None:
    hist = wait_for(lambda: (h := history(cluster)).current and h, "the first layout", 120)
    a1, a2, a3 = cluster.agents
    assert hist.current.replication == 3
    assert sorted(hist.current.roles) == sorted(a.node_id for a in (a1, a2, a3))
    key = cluster.create_key("tester")  # through the API: stored sealed, opened for nodes
    cluster.create_bucket(BUCKET, key.key_id)
    for a in (a1, a2, a3):
        wait_for(lambda a=a: s3_up(a.s3, key), f"{a.name}'s S3 API", 90)
    status = "\n".join(cluster.call_api("GET", "/v1/s3/status")["lines"])
    assert "3 registered object-store nodes" in status and a1.s3 in status
    assert status.count(" GiB free") == 3 and "REFUSING WRITES" not in status

    objects: dict[str, bytes] = {}

    def put(endpoint: str, name: str, size: int) -> None:
        data = os.urandom(size)
        s3(endpoint, key).put_object(Bucket=BUCKET, Key=name, Body=data)
        objects[name] = data

    def check_all(endpoint: str) -> None:
        c = s3(endpoint, key)
        for name, data in objects.items():
            got = c.get_object(Bucket=BUCKET, Key=name)["Body"].read()
            assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), name

    for i in range(8):
        put(a1.s3, f"before/{i}", 100 if i % 2 else 1_500_000)
    check_all(a2.s3)

    # One node down (kill -9): R=3 writes (W=2) and reads (Rq=2) go on.
    cluster.kill(2)
    for i in range(8):
        put(a1.s3, f"during/{i}", 2000 if i % 2 else 1_200_000)
    check_all(a2.s3)

    # It comes back and catches up before serving reads: its own SQLite then holds every
    # object written while it was down.
    cluster.start_agent(2)
    wait_for(lambda: s3_up(a3.s3, key), "node-3's S3 API again", 90)
    missed = [object_pk(BUCKET, f"during/{i}") for i in range(8)]
    wait_for(
        lambda: all(has_row(a3.data, pk) for pk in missed),
        "node-3 to catch up what it missed",
        180,
    )
    wait_for(lambda: caught_up(a3), "node-3 to open reads", 180)
    # With node-1 down, reads need node-3's copy (Rq=2 of node-2, node-3).
    cluster.kill(0)
    time.sleep(1)
    check_all(a3.s3)
    put(a3.s3, "after/0", 300_000)
    cluster.start_agent(0)
    wait_for(lambda: s3_up(a1.s3, key), "node-1's S3 API again", 90)

    # node-3's disk is wiped while it stays in the layout (a device reinstalled): it starts
    # on empty data the layout reads from, so it catches up every partition before serving
    # reads, as a returning node does (its own SQLite then holds every object's row).
    cluster.kill(2)
    shutil.rmtree(a3.data / "objectstore")
    put(a1.s3, "while-wiped/0", 5_000)
    cluster.start_agent(2)
    wait_for(lambda: a3.log.read_text().count("caught up:") >= 2, "wiped node-3 to catch up", 180)
    assert all(has_row(a3.data, object_pk(BUCKET, name)) for name in objects)

    # A fourth node in zone z1 joins: a layout change, synced, then acknowledged.
    a4 = cluster.add("z1")
    v = hist.current.version
    wait_for(lambda: (a4.data / "identity" / "node.json").exists(), "node-4 to enroll", 120)

    def joined() -> bool:
        h = history(cluster)
        return (
            bool(h.current and a4.node_id in h.current.roles and len(h.versions) == 1)
            and h.current.version > v
        )

    hist = wait_for(joined, "node-4 in the layout, synced", 180) and history(cluster)
    wait_for(lambda: s3_up(a4.s3, key), "node-4's S3 API", 120)
    check_all(a4.s3)

    # node-2 gone for good: past the grace period (12 s) it is replaced automatically.
    cluster.kill(1)
    v = hist.current.version

    def replaced() -> bool:
        h = history(cluster)
        return bool(h.current and a2.node_id not in h.current.roles and len(h.versions) == 1)

    hist = wait_for(replaced, "node-2 replaced and the new layout synced", 240) and history(cluster)
    assert hist.current.version == v + 1  # one transition
    assert sorted(hist.current.roles) == sorted(a.node_id for a in (a1, a3, a4))
    # the event log tells the story: first layout, the join, the replacement, each synced
    said = wait_for(
        lambda: (
            (e := cluster.events("objectstore"))
            and f"object store layout v{v + 1} in force: every node synced it" in e
            and e
        ),
        "the replacement's events",
        30,
    )
    layouts = [m for m in said if m.startswith("object store layout")]
    assert layouts[0].startswith("object store layout v1 (R=3): +") and "first layout" in layouts[0]
    assert f"-{a2.node_id}; " in layouts[-2] and "partition copies move" in layouts[-2]
    assert any(f"+{a4.node_id}; " in m for m in layouts), layouts
    for p in hist.current.partitions:
        assert len(set(p)) == 3
    check_all(a4.s3)
    check_all(a1.s3)

    # A lifecycle rule whose date has passed: the bucket's acting node deletes what it
    # covers at its next sweep (every 2 s here), and nothing else.
    s3(a1.s3, key).put_bucket_lifecycle_configuration(
        Bucket=BUCKET,
        LifecycleConfiguration={"Rules": [{
            "ID": "old", "Filter": {"Prefix": "expire/"}, "Status": "Enabled",
            "Expiration": {"Date": "2020-01-01T00:00:00Z"},
        }]},
    )  # fmt: skip
    for i in range(2):
        s3(a4.s3, key).put_object(Bucket=BUCKET, Key=f"expire/{i}", Body=os.urandom(i or 2_000_000))

    def expired() -> bool:
        listed = s3(a3.s3, key).list_objects_v2(Bucket=BUCKET, Prefix="expire/")
        return listed["KeyCount"] == 0

    wait_for(expired, "the lifecycle sweep to delete expire/*", 60)
    check_all(a3.s3)
    assert "lifecycle of bucket photos: 2 objects deleted" in "".join(
        a.log.read_text() for a in (a1, a3, a4)
    )

    # Made public-read through one node: another serves unsigned reads of it (once its 2 s
    # bucket cache has passed), and the event log says so.
    s3(a1.s3, key).put_bucket_acl(Bucket=BUCKET, ACL="public-read")
    name, data = next(iter(objects.items()))

    def unsigned() -> bytes | None:
        try:
            with urllib.request.urlopen(f"{a4.s3}/{BUCKET}/{name}", timeout=10) as r:
                body: bytes = r.read()
                return body
        except urllib.error.HTTPError:
            return None

    assert wait_for(unsigned, "an unsigned read of the public bucket", 30) == data
    public = f"s3 bucket {BUCKET} is now public-read"
    wait_for(lambda: any(public in m for m in cluster.events("objectstore")), "its event", 30)


@pytest.fixture
def cluster_r2(tmp_path: Path) -> Iterator[StoreCluster]:
    c = StoreCluster(tmp_path, ["z1", "z2", "z3"], replication=2, grace_s=600.0)
    try:
        yield c.start()
    finally:
        c.close()


def test_r2_stays_writable_with_a_node_down(cluster_r2: StoreCluster) -> None:
    """R=2 over three agents: with one killed, every PUT is acknowledged (hinted handoff to
    the third node); back, it gets what it missed; with another node killed, it serves
    everything hash-identical."""
    cluster = cluster_r2
    a1, a2, a3 = cluster.agents

    def all_three() -> bool:
        # R=2: the first layout may come with the first two nodes, the third joining after
        h = history(cluster)
        return bool(h.current and len(h.current.roles) == 3 and len(h.versions) == 1)

    wait_for(all_three, "a synced layout of the three nodes", 180)
    time.sleep(6)  # every node re-reads the layout each 5 s beat: let them see v1 retired
    hist = history(cluster)
    # v1 if all three registered before the first decision, else v2 (the third joined)
    assert hist.current.replication == 2 and hist.version() in (1, 2)
    key = cluster.create_key("tester")
    cluster.create_bucket(BUCKET, key.key_id)
    for a in (a1, a2, a3):
        wait_for(lambda a=a: s3_up(a.s3, key), f"{a.name}'s S3 API", 90)
    cluster.kill(1)
    objects = {}
    for i in range(12):
        data = os.urandom(200 if i % 2 else 1_100_000)
        s3(a1.s3, key).put_object(Bucket=BUCKET, Key=f"k{i}", Body=data)
        objects[f"k{i}"] = data
    cluster.start_agent(1)
    wait_for(lambda: s3_up(a2.s3, key), "node-2's S3 API again", 90)
    owners = history(cluster).current.partitions
    from cloudless.objectstore.records import partition

    if a2.node_id in owners[partition(BUCKET)]:
        pks = [object_pk(BUCKET, k) for k in objects]
        wait_for(
            lambda: all(has_row(a2.data, pk) for pk in pks), "node-2 to get what it missed", 180
        )
    wait_for(lambda: caught_up(a2), "node-2 to open reads", 180)
    cluster.kill(0)
    time.sleep(1)
    c = s3(a2.s3, key)
    for name, data in objects.items():
        got = c.get_object(Bucket=BUCKET, Key=name)["Body"].read()
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), name
