"""The store across real network boundaries: a coordinator and four ``cloudless agent
--storage`` processes, each in a network namespace of its own (prefix ``cl16o-``) on a lab
bridge, in three zones (z1: two nodes, z2, z3), R=3 (one copy per zone).

* Zone z1 is cut off (iptables DROP on both of its hosts' links, inside their namespaces)
  while two writers go on through z2 and z3: every write, before, during and after the cut
  and the heal, succeeds (a write quorum of 2 in z2 and z3), large and small; once the zone
  is healed every acknowledged object reads back hash-identical through every node, the cut
  ones included (2 of 3 replicas answer, the stale one is repaired).
* A multipart upload through one node loses that node (kill -9) while a part is in flight:
  the part is retried through another node under the same upload id, the upload completes
  and reads back hash-identical; the killed node returns and serves it too.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest
from botocore.config import Config  # type: ignore[import-untyped]

from cloudless.devenv.netns import NetnsLab, free_subnet, netns_unavailable_reason
from cloudless.lib.errors import CloudlessError
from cloudless.lib.net import free_port
from cloudless.objectstore.procs import AgentProc, StoreCluster, wait_for

_WHY = netns_unavailable_reason()
pytestmark = [
    pytest.mark.netns,
    pytest.mark.timeout(900),
    pytest.mark.skipif(_WHY is not None, reason=_WHY or ""),
]
BUCKET = "zones"
PART = 5 << 20  # the S3 minimum part size


class NetnsStoreCluster(StoreCluster):
    """``StoreCluster`` with the coordinator and every agent in a lab host of their own."""

    def __init__(self, base: Path, zones: list[str], lab: NetnsLab) -> None:
        super().__init__(base, zones, replication=3, grace_s=600.0)
        self.lab = lab
        c1 = lab.add_host("c1")
        self.coord_host, self.coord_netns = c1.ip, c1.netns

    def add(self, zone: str, *, start: bool = True) -> AgentProc:
        i = len(self.agents) + 1
        h = self.lab.add_host(f"a{i}")
        a = AgentProc(
            f"node-{i}", zone, self.capacity, self.base / f"a{i}", free_port(), free_port(),
            self.base / f"a{i}.log", address=h.ip, netns=h.netns,
        )  # fmt: skip
        self.agents.append(a)
        if start:
            a.proc = self._spawn(a, self._token())
        return a

    def cut(self, i: int) -> None:
        self.lab.hosts[f"a{i + 1}"].cut()

    def heal(self, i: int) -> None:
        self.lab.hosts[f"a{i + 1}"].heal()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NetnsStoreCluster]:
    lab = NetnsLab("cl16o", free_subnet(skip=16))
    lab.setup()
    c = NetnsStoreCluster(tmp_path, ["z1", "z2", "z3", "z1"], lab)
    try:
        c.start()
        yield c
    finally:
        c.close()
        lab.teardown()


def s3(endpoint: str, key: Any, timeout: float = 30) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key.key_id,
        aws_secret_access_key=key.secret,
        region_name="cloudless",
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            connect_timeout=3,
            read_timeout=timeout,
        ),
    )


def answers(endpoint: str, key: Any) -> bool:
    try:
        s3(endpoint, key).head_bucket(Bucket=BUCKET)
        return True
    except Exception:
        return False


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ready(cluster: NetnsStoreCluster) -> Any:
    """The four nodes in one layout, a key and bucket made through the API, every S3 API up."""

    def settled() -> list[str] | None:
        """Status lines once the four nodes are in one live layout version, nothing staged."""
        try:
            x: list[str] = cluster.call_api("GET", "/v1/s3/status")["lines"]
        except CloudlessError:
            return None
        held = sum("partitions" in line and "synced" in line for line in x)
        one = any(re.match(r"layout version \d+, replication 3, live versions \d+$", y) for y in x)
        return x if held == 4 and one and not any("staged:" in y for y in x) else None

    wait_for(settled, "one layout version holding the four nodes", 240)
    key = cluster.create_key("zones")
    cluster.create_bucket(BUCKET, key.key_id)
    for a in cluster.agents:
        wait_for(functools.partial(answers, a.s3, key), f"{a.name}'s S3 API at {a.s3}", 120)
    return key


def test_a_zone_cut_off_loses_no_acknowledged_write(cluster: NetnsStoreCluster) -> None:
    key = ready(cluster)
    a1, a2, a3, _ = cluster.agents
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
    for a in cluster.agents:
        c = s3(a.s3, key)
        for name, digest in acked.items():
            got = c.get_object(Bucket=BUCKET, Key=name)["Body"].read()
            assert sha(got) == digest, (a.name, name)


def test_kill_9_of_the_gateway_mid_multipart_upload(cluster: NetnsStoreCluster) -> None:
    key = ready(cluster)
    a1, a2, _, _ = cluster.agents
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


def throttle(veth: str, rate: str | None) -> None:
    """Cap what the bridge sends into a lab host (its veth's egress in the root namespace)."""
    if rate is None:
        subprocess.run(["tc", "qdisc", "del", "dev", veth, "root"], check=False)
        return
    tbf = ["tbf", "rate", rate, "burst", "32kb", "latency", "400ms"]
    subprocess.run(["tc", "qdisc", "replace", "dev", veth, "root", *tbf], check=True)


def readable(endpoint: str, key: Any, name: str) -> bytes | None:
    try:
        body: bytes = s3(endpoint, key).get_object(Bucket=BUCKET, Key=name)["Body"].read()
        return body
    except Exception:
        return None
