"""The store across real network boundaries: a coordinator and ``cloudless agent --storage``
processes, each in a network namespace of its own on a lab bridge (``netns_rig.py``), in three
zones (z1: two nodes, z2, z3), R=3 (one copy per zone). One cluster for the module; its tests
run in this order and each leaves every node it still needs up and healed:

* A fifth node joins z2: one layout change; it pulls only what it ends up holding and nothing
  moves between the other nodes (their sync lines and their disks).
* Zone z1 is cut off (iptables DROP on both of its hosts' links, inside their namespaces)
  while two writers go on through z2 and z3: every write, before, during and after the cut
  and the heal, succeeds (a write quorum of 2 in z2 and z3), large and small; once the zone
  is healed every acknowledged object reads back hash-identical through both cut nodes and
  one other (2 of 3 replicas answer, the stale one is repaired).
* A multipart upload through one node loses that node (kill -9) while a part is in flight:
  the part is retried through another node under the same upload id, the upload completes
  and reads back hash-identical; the killed node returns and serves it too.
* aws-cli puts through one node and gets through another.
* An operator removes a node (``cloudless s3 layout stage --remove``, ``apply``) and stops it:
  R=3 is restored on the others and the automatic policy does not add it back.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudless.objectstore.procs import CLI, ENV, AgentProc, wait_for
from cloudless.objectstore.records import object_pk
from tests.integration.objectstore.netns_rig import (
    PART,
    WHY_NOT,
    NetnsStoreCluster,
    has_row,
    netns_store,
    s3,
    settled,
    sha,
    status,
    throttle,
)
from tests.integration.objectstore.netns_rig import answers as rig_answers
from tests.integration.objectstore.netns_rig import readable as rig_readable

pytestmark = [
    pytest.mark.netns,
    pytest.mark.timeout(900),
    pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or ""),
]
BUCKET = "zones"


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NetnsStoreCluster, Any]]:
    """One cluster for the module's tests, in order: each leaves the nodes later ones need up."""
    base = tmp_path_factory.mktemp("zones")
    with netns_store(base, "o", ["z1", "z2", "z3", "z1"], 16, BUCKET) as r:
        yield r


def answers(endpoint: str, key: Any) -> bool:
    return rig_answers(endpoint, key, BUCKET)


def readable(endpoint: str, key: Any, name: str) -> bytes | None:
    return rig_readable(endpoint, key, BUCKET, name)


def layout_version(cluster: NetnsStoreCluster) -> int:
    lines = status(cluster) or []
    for line in lines:
        m = re.match(r"layout version (\d+),", line)
        if m:
            return int(m.group(1))
    raise AssertionError(f"no layout version in {lines}")


def block_bytes(data: Path) -> int:
    """Bytes of the blocks a node holds on disk."""
    root = data / "objectstore" / "blocks"
    return sum(p.stat().st_size for p in root.glob("??/??/*") if p.is_file())


def synced_lines(a: AgentProc, version: int) -> list[tuple[int, int]]:
    """``(partitions, block bytes)`` of each "layout v<version> synced" line in ``a``'s log."""
    rx = r"layout v(\d+) synced: (\d+) partitions, \d+ rows, \d+ blocks \((\d+) bytes\)"
    return [
        (int(m.group(2)), int(m.group(3)))
        for m in re.finditer(rx, a.log.read_text())
        if int(m.group(1)) == version
    ]


def into(veth: str) -> int:
    """Bytes the bridge has sent into a lab host so far (its veth's tx counter)."""
    return int(Path(f"/sys/class/net/{veth}/statistics/tx_bytes").read_text())


def cli(cluster: NetnsStoreCluster, *args: str) -> str:
    r = subprocess.run(
        [*CLI, "s3", *args, "--config", str(cluster.config)],
        capture_output=True, text=True, env=ENV, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, f"cloudless s3 {' '.join(args)}: {r.stdout}{r.stderr}"
    return r.stdout


def test_a_node_joins_and_data_moves_only_to_it(rig: tuple[NetnsStoreCluster, Any]) -> None:
    """A fifth node joins z2 (first, on the fresh cluster: no repair of earlier faults in
    flight): one layout change, it pulls only what it ends up holding and no other node gains
    a byte."""
    cluster, key = rig
    objects: dict[str, str] = {}
    c = s3(cluster.agents[1].s3, key)
    for i in range(40):
        data = os.urandom(1_100_000 if i % 2 else 2_000)
        c.put_object(Bucket=BUCKET, Key=f"join/{i}", Body=data)
        objects[f"join/{i}"] = sha(data)
    v0 = layout_version(cluster)
    before = {a.name: block_bytes(a.data) for a in cluster.agents}

    a5 = cluster.add("z2")
    veth = cluster.lab.hosts["a5"].veth
    rx0 = into(veth)
    wait_for(functools.partial(settled, cluster, 5), "node-5 in the layout, synced", 180)
    v1 = layout_version(cluster)
    assert v1 == v0 + 1, (v0, v1)  # one transition
    rx = into(veth) - rx0
    (_, pulled), *_ = synced_lines(a5, v1)
    held = block_bytes(a5.data)
    after = {a.name: block_bytes(a.data) for a in cluster.agents[:4]}
    gained = {n: after[n] - before[n] for n in after if after[n] > before[n]}
    others = {a.name: synced_lines(a, v1) for a in cluster.agents[:4]}
    print(
        f"join: node-5 pulled {pulled} block bytes, holds {held} ({pulled / held:.3f}x); "
        f"{rx} bytes entered its host in all; other nodes' sync lines {others}"
    )
    assert held > 4 << 20 and pulled <= 1.1 * held, (pulled, held)
    assert gained == {}, gained  # nothing moved between the other nodes
    assert all(p == 0 for lines in others.values() for p, _ in lines), others
    wait_for(functools.partial(answers, a5.s3, key), "node-5's S3 API", 120)
    for name, digest in objects.items():
        got = s3(a5.s3, key).get_object(Bucket=BUCKET, Key=name)["Body"].read()
        assert sha(got) == digest, name


def test_a_zone_cut_off_loses_no_acknowledged_write(rig: tuple[NetnsStoreCluster, Any]) -> None:
    cluster, key = rig
    a1, a2, a3 = cluster.agents[:3]
    acked: dict[str, str] = {}
    failures: list[str] = []
    lock = threading.Lock()

    def put(endpoint: str, name: str, size: int) -> None:
        data = os.urandom(size)
        s3(endpoint, key).put_object(Bucket=BUCKET, Key=name, Body=data)
        with lock:
            acked[name] = sha(data)  # only what the store acknowledged

    for i in range(4):
        put(a1.s3, f"before/{i}", 2_000 if i % 2 else 1_500_000)

    # two writers through z2 and z3 keep going while z1 is cut off and healed
    stop = threading.Event()

    def writer(endpoint: str, tag: str) -> None:
        i = 0
        while not stop.is_set():
            name = f"{tag}/{i}"
            try:  # small (inline) and two-block objects
                put(endpoint, name, 3_000 if i % 3 else 1_500_000)
            except Exception as e:
                with lock:
                    failures.append(f"{name}: {e}")
            i += 1

    writers = [threading.Thread(target=writer, args=(a.s3, a.name)) for a in (a2, a3)]
    for t in writers:
        t.start()
    time.sleep(1.0)  # wall clock: writes in flight when the cut lands
    cluster.cut(0)  # z1: a1 and a4
    cluster.cut(3)
    assert not answers(a1.s3, key)  # the cut is real: not even the harness reaches z1
    time.sleep(8.0)
    during = len(acked)
    for name in [n for n in acked if n.startswith("before/")]:
        got = s3(a2.s3, key).get_object(Bucket=BUCKET, Key=name)["Body"].read()
        assert sha(got) == acked[name], name  # z2 and z3 serve reads alone too
    cluster.heal(0)
    cluster.heal(3)
    time.sleep(2.0)  # and while it comes back
    stop.set()
    for t in writers:
        t.join(60)
    assert failures == [], failures  # W=2 of z2 + z3 for every partition, all along
    assert during > 10 and len(acked) > during, (during, len(acked))
    print(f"acknowledged: {during} by the end of the cut, {len(acked)} in all")  # -s shows it
    for a in cluster.agents:
        wait_for(functools.partial(answers, a.s3, key), f"{a.name} reachable again", 60)
    for a in (cluster.agents[0], cluster.agents[3], a2):  # the two cut nodes and one other
        c = s3(a.s3, key)
        for name, digest in acked.items():
            got = c.get_object(Bucket=BUCKET, Key=name)["Body"].read()
            assert sha(got) == digest, (a.name, name)


def test_kill_9_of_the_gateway_mid_multipart_upload(rig: tuple[NetnsStoreCluster, Any]) -> None:
    cluster, key = rig
    a1, a2 = cluster.agents[:2]
    parts = [os.urandom(PART) for _ in range(3)] + [os.urandom(1_000_000)]
    first = s3(a1.s3, key)
    up = first.create_multipart_upload(Bucket=BUCKET, Key="big.bin")["UploadId"]
    etags: dict[int, str] = {}
    r = first.upload_part(Bucket=BUCKET, Key="big.bin", UploadId=up, PartNumber=1, Body=parts[0])
    etags[1] = r["ETag"]

    # part 2 goes to a1 over a link capped to 2 MB/s (5 MiB: ~2.6 s), so it dies mid-body
    veth = cluster.lab.hosts["a1"].veth
    throttle(veth, "16mbit")
    outcome: list[Any] = []

    def send() -> None:
        try:
            outcome.append(
                s3(a1.s3, key, timeout=20).upload_part(
                    Bucket=BUCKET, Key="big.bin", UploadId=up, PartNumber=2, Body=parts[1]
                )
            )
        except Exception as e:
            outcome.append(e)

    t = threading.Thread(target=send)
    t.start()
    time.sleep(1.0)  # wall-clock: about 2 of the ~5 MiB are on their way
    cluster.kill(0)
    t.join(60)
    assert outcome and isinstance(outcome[0], Exception), outcome  # never acknowledged
    throttle(veth, None)

    other = s3(a2.s3, key)  # the same upload id through another node: multipart is replicated
    for n in (2, 3, 4):
        r = other.upload_part(
            Bucket=BUCKET, Key="big.bin", UploadId=up, PartNumber=n, Body=parts[n - 1]
        )
        etags[n] = r["ETag"]
    listed = other.list_parts(Bucket=BUCKET, Key="big.bin", UploadId=up)["Parts"]
    assert sorted(p["PartNumber"] for p in listed) == [1, 2, 3, 4]
    done = other.complete_multipart_upload(
        Bucket=BUCKET,
        Key="big.bin",
        UploadId=up,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in sorted(etags.items())]},
    )
    assert done["ETag"].strip('"').endswith("-4")
    whole = b"".join(parts)
    got = other.get_object(Bucket=BUCKET, Key="big.bin")["Body"].read()
    assert sha(got) == sha(whole)

    cluster.start_agent(0)
    wait_for(lambda: answers(a1.s3, key), "node-1 back", 120)
    got = wait_for(
        lambda: readable(a1.s3, key, "big.bin"), "node-1 serving big.bin after catching up", 120
    )
    assert sha(got) == sha(whole)


AWS = shutil.which("aws", path="/usr/bin:/usr/local/bin") or ""


@pytest.mark.skipif(not AWS, reason="aws-cli not installed (scripts/install-system-deps)")
def test_awscli_across_nodes(rig: tuple[NetnsStoreCluster, Any], tmp_path: Path) -> None:
    """aws-cli uploads (one PUT and a 2-part multipart) through node-1 and downloads through
    node-3: byte-identical, the `-2` ETag as one node has it."""
    cluster, key = rig
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),  # no user config or credentials file is read
        "AWS_ACCESS_KEY_ID": key.key_id,
        "AWS_SECRET_ACCESS_KEY": key.secret,
        "AWS_DEFAULT_REGION": "cloudless",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_PAGER": "",
    }

    def aws(endpoint: str, *args: str) -> str:
        r = subprocess.run([AWS, "--endpoint-url", endpoint, *args], env=env,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
        assert r.returncode == 0, f"aws {' '.join(args)}: exit {r.returncode}\n{r.stderr}"
        return r.stdout

    a1, _, a3 = cluster.agents[:3]
    small, big = tmp_path / "small.txt", tmp_path / "big.bin"
    small.write_bytes(b"through node-1\n")
    big.write_bytes(os.urandom(10 << 20))  # 8 + 2 MiB parts
    aws(a1.s3, "s3", "cp", str(small), f"s3://{BUCKET}/cli/small.txt")
    aws(a1.s3, "s3", "cp", str(big), f"s3://{BUCKET}/cli/big.bin")
    head = json.loads(aws(a3.s3, "s3api", "head-object", "--bucket", BUCKET, "--key",
                          "cli/big.bin"))  # fmt: skip
    assert head["ETag"].strip('"').endswith("-2") and head["ContentLength"] == 10 << 20
    for want in (small, big):
        got = tmp_path / f"got-{want.name}"
        aws(a3.s3, "s3", "cp", f"s3://{BUCKET}/cli/{want.name}", str(got))
        assert got.read_bytes() == want.read_bytes(), want.name


def test_an_operator_removes_a_node(rig: tuple[NetnsStoreCluster, Any]) -> None:
    """An operator removes node-4 (z1) with `cloudless s3 layout stage --remove` and `apply`
    and then stops it: node-1, the other z1 node, takes over its copies (R=3 restored:
    everything reads with node-3, z3's only node, down too) and the automatic policy does not
    add node-4 back while its registration stays."""
    cluster, key = rig
    objects: dict[str, str] = {}
    c = s3(cluster.agents[1].s3, key)
    for i in range(12):
        data = os.urandom(1_100_000 if i % 2 else 2_000)
        c.put_object(Bucket=BUCKET, Key=f"remove/{i}", Body=data)
        objects[f"remove/{i}"] = sha(data)
    v1 = layout_version(cluster)
    a1, _, _, a4 = cluster.agents[:4]
    gone = a4.node_id
    cli(cluster, "layout", "stage", gone, "--remove")
    preview = cli(cluster, "layout", "preview")
    assert f"{a1.node_id}: 256 partitions" in preview, preview
    cli(cluster, "layout", "apply", "--version", str(v1))
    wait_for(functools.partial(settled, cluster, 4), "node-4 out of the layout, synced", 180)
    v2 = layout_version(cluster)
    assert v2 == v1 + 1
    held = [n for n in objects if has_row(a1.data, object_pk(BUCKET, n))]
    assert len(held) == len(objects)  # z1's one node now holds a copy of every object
    cluster.kill(3)  # decommissioned: its registration stays (present for the grace period)
    time.sleep(12)  # two beats of every node: the automatic policy must not take it back
    assert layout_version(cluster) == v2
    show = cli(cluster, "layout", "show")
    assert f"  {gone}  zone" not in show
    assert f"removed by an operator (not added back automatically): {gone}" in show
    cluster.kill(2)  # z3's only node down too: reads need node-1's copies (Rq=2 of 3)
    try:
        for name, digest in objects.items():
            got = s3(a1.s3, key).get_object(Bucket=BUCKET, Key=name)["Body"].read()
            assert sha(got) == digest, name
    finally:
        cluster.start_agent(2)
    wait_for(functools.partial(answers, cluster.agents[2].s3, key), "node-3 back", 120)
