"""The object store across real network boundaries, shared by the netns tests
(``test_zone_cut.py``) and the store chaos run (``tests/chaos/objectstore``): a coordinator and
``cloudless agent --storage`` processes, each in a network namespace of its own on a lab
bridge, R=3, and the boto3 helpers the tests drive them with.

``netns_store(base, tag, zones, skip, bucket)`` starts one (``zones``: one entry per agent, in
order) and waits until every agent is in one synced layout version and serves S3 with a fresh
access key and bucket; it yields ``(cluster, key)`` and tears everything down (processes,
namespaces, bridge) however the block ends.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]

from cloudless.devenv.netns import (
    NetnsLab,
    cleanup_dead_runs,
    free_subnet,
    netns_unavailable_reason,
    run_prefix,
)
from cloudless.lib.errors import CloudlessError
from cloudless.lib.net import free_port
from cloudless.objectstore.procs import AgentProc, StoreCluster, wait_for

WHY_NOT = netns_unavailable_reason()
PART = 5 << 20  # the S3 minimum part size


class NetnsStoreCluster(StoreCluster):
    """``StoreCluster`` with the coordinator and every agent in a lab host of their own
    (agent ``i`` is lab host ``a{i+1}``)."""

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

    def host(self, i: int) -> Any:
        return self.lab.hosts[f"a{i + 1}"]

    def cut(self, i: int) -> None:
        """Agent ``i`` loses every link (the test harness cannot reach it either)."""
        self.host(i).cut()

    def cut_link(self, i: int, j: int) -> None:
        """Agents ``i`` and ``j`` no longer reach each other; both reach everything else."""
        self.host(i).cut_peer(self.agents[j].address)

    def heal(self, i: int) -> None:
        """Undo every cut made on agent ``i``'s host (``cut(i)``, ``cut_link(i, _)``)."""
        self.host(i).heal()


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


def s3_up(endpoint: str, key: Any) -> bool:
    """Whether ``endpoint`` answers an S3 call signed with ``key``."""
    try:
        s3(endpoint, key).list_buckets()
        return True
    except Exception:
        return False


def answers(endpoint: str, key: Any, bucket: str, timeout: float = 30) -> bool:
    try:
        s3(endpoint, key, timeout).head_bucket(Bucket=bucket)
        return True
    except Exception:
        return False


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def status(cluster: StoreCluster) -> list[str] | None:
    try:
        lines: list[str] = cluster.call_api("GET", "/v1/s3/status")["lines"]
        return lines
    except CloudlessError:
        return None


def settled(cluster: StoreCluster, nodes: int) -> list[str] | None:
    """``cloudless s3 status`` lines once ``nodes`` nodes hold partitions in one live, synced
    layout version with nothing staged (None until then)."""
    x = status(cluster)
    if x is None:
        return None
    held = sum("partitions" in line and "synced" in line for line in x)
    one = any(re.match(r"layout version \d+, replication 3, live versions \d+$", y) for y in x)
    return x if held == nodes and one and not any("staged:" in y for y in x) else None


def ready(cluster: StoreCluster, bucket: str) -> Any:
    """Every agent in one layout version, a key and ``bucket`` made through the API, every S3
    API up; returns the key."""
    n = len(cluster.agents)
    wait_for(functools.partial(settled, cluster, n), f"one layout version holding {n} nodes", 240)
    key = cluster.create_key("tester")
    cluster.create_bucket(bucket, key.key_id)
    for a in cluster.agents:
        wait_for(functools.partial(answers, a.s3, key, bucket), f"{a.name}'s S3 API", 120)
    return key


@contextlib.contextmanager
def netns_store(
    base: Path, tag: str, zones: list[str], skip: int, bucket: str
) -> Iterator[tuple[NetnsStoreCluster, Any]]:
    """A started, ready cluster (see the module docstring). Its lab is named
    ``run_prefix(tag)`` (unique to this process: two sessions running the same test never
    sweep each other's namespaces) after removing the labs of killed runs with this tag;
    ``skip`` (which free subnet) keeps two rigs of one run apart."""
    cleanup_dead_runs(tag)
    lab = NetnsLab(run_prefix(tag), free_subnet(skip=skip))
    lab.setup()
    c = NetnsStoreCluster(base, zones, lab)
    try:
        c.start()
        yield c, ready(c, bucket)
    finally:
        c.close()
        lab.teardown()


def throttle(veth: str, rate: str | None) -> None:
    """Cap what the bridge sends into a lab host (its veth's egress in the root namespace)."""
    if rate is None:
        subprocess.run(["tc", "qdisc", "del", "dev", veth, "root"], check=False)
        return
    tbf = ["tbf", "rate", rate, "burst", "32kb", "latency", "400ms"]
    subprocess.run(["tc", "qdisc", "replace", "dev", veth, "root", *tbf], check=True)


def has_row(data: Path, pk: str) -> bool:
    """The node with data dir ``data`` holds a live row for object ``pk`` in its own SQLite."""
    db = sqlite3.connect(f"file:{data / 'objectstore' / 'meta.db'}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM objects WHERE pk = ?", (pk,)).fetchone()
        return row is not None and row[0] is not None
    except sqlite3.OperationalError:
        return False
    finally:
        db.close()


def readable(endpoint: str, key: Any, bucket: str, name: str) -> bytes | None:
    try:
        body: bytes = s3(endpoint, key).get_object(Bucket=bucket, Key=name)["Body"].read()
        return body
    except Exception:
        return None
