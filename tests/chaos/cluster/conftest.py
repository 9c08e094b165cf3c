"""Fixtures and invariant checks for the cluster chaos scenarios (real processes, real
containerd and etcd, every node in a network namespace: ``cloudless.devenv.cluster``)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from cloudless.devenv.cluster import NetnsCluster, unavailable_reason, wait_until

SKIP = unavailable_reason()


def spec(name: str, image: str, replicas: int) -> bytes:
    """A long-running busybox workload, one replica per zone where possible. It exits within
    a second of SIGTERM, so stopping an extra replica does not wait for the kill grace."""
    return (
        f"name: {name}\nimage: {image}\n"
        "command: [sh, -c, 'trap \"exit 0\" TERM; while true; do sleep 1; done']\n"
        f"resources: {{cpu: 10m, memory: 8Mi}}\nreplicas: {replicas}\n"
        "restart: {policy: always}\n"
        "placement:\n  spread:\n    - topology_key: zone\n"
    ).encode()


class Writes:
    """Every write the API acknowledged: workload name -> replicas of the last acked apply."""

    def __init__(self, cluster: NetnsCluster) -> None:
        self.c = cluster
        self.acked: dict[str, int] = {}
        self.failed = 0
        self.created: list[str] = []  # workloads whose creation was acknowledged

    def create(self, name: str) -> bool:
        """Create an empty workload (0 replicas): one acknowledged write, checked by name."""
        try:
            self.c.api.apply(spec(name, self.c.image, 0))
        except Exception:
            self.failed += 1
            return False
        self.created.append(name)
        return True

    def apply(self, name: str, replicas: int) -> bool:
        try:
            self.c.api.apply(spec(name, self.c.image, replicas))
        except Exception:
            self.failed += 1
            return False
        self.acked[name] = replicas
        return True

    def scale(self, name: str, replicas: int) -> bool:
        """Scale through ``/scale`` (keeps the spec version: no rolling restart; a changed
        ``replicas`` in an apply bumps the version and restarts every replica)."""
        try:
            self.c.api.call("POST", f"/v1/workloads/{name}/scale", {"replicas": replicas})
        except Exception:
            self.failed += 1
            return False
        self.acked[name] = replicas
        return True


def running_replicas(c: NetnsCluster, name: str) -> list[dict[str, Any]]:
    reps = c.api.workload(name)["replicas"]
    return [r for r in reps if r["desired"] == "running" and r["observed"] == "running"]


def settled(c: NetnsCluster, w: Writes) -> str:
    """'' when every invariant holds now, else what does not (for polling and messages).

    1. no acknowledged write lost: each workload exists with the last acked replica count;
    2. desired replica counts restored: that many replicas desired+observed running;
    3. no duplicates: containerd, over all agents, runs exactly that many containers of the
       workload and at most one per replica id;
    4. no orphans: every running container belongs to a replica that exists and is desired
       running.
    """
    counts = c.running_containers()
    dup = {k: v for k, v in counts.items() if v > 1}
    if dup:
        return f"duplicate containers: {dup}"
    if w.created:
        have = {x["name"] for x in c.api.call("GET", "/v1/workloads")["workloads"]}
        lost = [n for n in w.created if n not in have]
        if lost:
            return f"acknowledged creations lost: {lost}"
    wanted_ids: dict[str, str] = {}
    for name, n in w.acked.items():
        wl = c.api.workload(name)
        if wl["replicas_wanted"] != n or wl.get("deleted"):
            return f"acknowledged write lost: {name} wants {wl['replicas_wanted']}, acked {n}"
        run = [r for r in wl["replicas"] if r["desired"] == "running"]
        ok = [r for r in run if r["observed"] == "running"]
        if len(ok) != n:
            return f"{name}: {len(ok)}/{n} replicas running"
        for r in run:
            wanted_ids[r["id"]] = name
        on_hosts = sum(1 for cid in counts if cid in wanted_ids and wanted_ids[cid] == name)
        if on_hosts != n:
            return f"{name}: {on_hosts} containers running on the hosts, want {n}"
    orphans = sorted(set(counts) - set(wanted_ids))
    if orphans:
        return f"orphaned containers (no desired-running replica): {orphans}"
    return ""


async def assert_settles(c: NetnsCluster, w: Writes, timeout: float) -> float:
    """Wait until ``settled``; returns seconds taken, fails with the last violation."""
    t0 = time.monotonic()
    last = ["(not checked)"]

    def probe() -> bool:
        last[0] = settled(c, w)
        return not last[0]

    try:
        await wait_until("invariants", probe, timeout, interval=0.3)
    except Exception:
        pytest.fail(f"invariants do not hold after {timeout:.0f}s: {last[0]}")
    return time.monotonic() - t0


async def timed(what: str, probe: Callable[[], Any], timeout: float) -> float:
    t0 = time.monotonic()
    await wait_until(what, probe, timeout, interval=0.05)
    return time.monotonic() - t0


def report(name: str, **figures: float | int | str) -> None:
    """Print a scenario's measured figures (see them with ``pytest -s``); with
    ``CHAOS_RESULTS=path`` also append them to that file, so the README's numbers come from
    runs, not from memory."""
    line = " ".join(
        f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
    )
    print(f"\n[chaos] {name}: {line}")
    if out := os.environ.get("CHAOS_RESULTS"):
        with Path(out).open("a") as f:
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {name}: {line}\n")


async def _cluster(tmp_path: Path, coordinators: int) -> AsyncIterator[NetnsCluster]:
    if SKIP:
        pytest.skip(SKIP)
    c = NetnsCluster(tmp_path / "cl", coordinators=coordinators, agents=3)
    # pytest keeps the last 3 runs' tmp_path: every coordinator's, agent's, etcd's and
    # containerd's log of a failed scenario stays there (README: "Logs").
    print(f"\n[chaos] logs: {c.logs}, {c.work}/c*/etcd/*.log, {c.work}/containerd-a*/")
    try:
        async with asyncio.timeout(240):
            await c.__aenter__()
        yield c
    finally:
        await c.close()
        left = c.leftovers()
        assert not left, f"teardown left: {left}"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[NetnsCluster]:
    async for c in _cluster(tmp_path, 1):
        yield c


@pytest.fixture
async def ha_cluster(tmp_path: Path) -> AsyncIterator[NetnsCluster]:
    async for c in _cluster(tmp_path, 3):
        yield c
