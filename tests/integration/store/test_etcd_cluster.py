"""Real etcd members under our launcher: supervision, failover, durability, membership, backup.

All on loopback with mutual TLS, random free ports and tmp data dirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import time
from pathlib import Path

import pytest

from cloudless.store.backup import restore_snapshot, save_snapshot
from cloudless.store.etcd_admin import EtcdAdmin
from cloudless.store.etcd_process import (
    EtcdMember,
    EtcdNotInstalled,
    EtcdStartFailed,
    MemberRemoved,
)
from cloudless.store.membership import ensure_identity, join, remove
from cloudless.store.tables.config import ClusterIdentity
from cloudless.testing.etcd import SupervisedCluster, TestPki, free_ports, member_configs

pytestmark = pytest.mark.integration


async def test_missing_binary_says_how_to_install(tmp_path: Path) -> None:
    pki = TestPki(tmp_path / "pki")
    (cfg,) = member_configs(tmp_path, pki, 1, binary="/nonexistent/etcd")
    with pytest.raises(EtcdNotInstalled, match="apt-get install etcd-server"):
        await EtcdMember(cfg).start()


async def test_supervisor_restarts_killed_member(tmp_path: Path, pki: TestPki) -> None:
    async with SupervisedCluster(tmp_path, pki, 1) as c:
        store = c.client()
        await store.put("/k", b"before")
        old_pid = c.members[0].pid
        c.kill(0)
        for _ in range(200):
            if c.members[0].restarts and c.members[0].pid not in (None, old_pid):
                break
            await asyncio.sleep(0.05)
        assert c.members[0].restarts == 1
        assert c.members[0].healthy()
        kv = await store.get("/k")  # retried through the restart
        assert kv is not None and kv.value == b"before"
        await store.close()


async def test_supervisor_restarts_frozen_member(tmp_path: Path, pki: TestPki) -> None:
    """SIGSTOP: silent and using no CPU, so hung (``hung_verdict``), not merely slow."""
    (cfg,) = member_configs(tmp_path, pki, 1)
    m = EtcdMember(cfg)
    task = asyncio.create_task(m.run(health_interval=0.3, unhealthy_after=1.5))
    try:
        for _ in range(500):  # run() starts it
            if m.pid is not None:
                break
            await asyncio.sleep(0.02)
        await m.wait_ready()
        old_pid = m.pid
        assert old_pid is not None
        cpu0 = m.cpu_seconds()
        assert cpu0 is not None
        os.kill(old_pid, signal.SIGSTOP)
        await asyncio.sleep(0.5)
        assert m.cpu_seconds() == pytest.approx(cpu0, abs=0.05)  # a frozen member uses none
        for _ in range(300):
            if m.restarts and m.pid not in (None, old_pid) and m.healthy():
                break
            await asyncio.sleep(0.05)
        assert m.restarts == 1 and m.healthy()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_three_members_leader_kill_then_kill_all(tmp_path: Path, pki: TestPki) -> None:
    async with SupervisedCluster(tmp_path, pki, 3) as c:
        store = c.client()
        acked: dict[str, bytes] = {}
        for i in range(50):
            await store.put(f"/w/{i:03d}", b"v%d" % i)
            acked[f"/w/{i:03d}"] = b"v%d" % i
        leader = await c.wait_leader()
        c.kill(leader)  # kill -9 the leader's etcd
        killed_at = time.monotonic()
        for i in range(50, 100):
            while True:
                try:
                    await store.put(f"/w/{i:03d}", b"v%d" % i)
                    break
                except Exception:  # OutcomeUnknown/Unavailable during the election: retry
                    await asyncio.sleep(0.05)
            acked[f"/w/{i:03d}"] = b"v%d" % i
        resumed_after = time.monotonic() - killed_at
        assert resumed_after < 15, f"writes resumed only after {resumed_after:.1f}s"
        new_leader = await c.wait_leader()
        assert new_leader != leader or c.members[leader].restarts >= 1

        for i in range(3):  # kill all three at once; the supervisors restart them
            c.kill(i)
        await asyncio.sleep(0.5)
        await c.wait_leader(within=60)
        listing = await store.list("/w/")
        assert {kv.key: kv.value for kv in listing.kvs} == acked
        await store.close()


async def test_bootstrap_join_promote_remove(tmp_path: Path, pki: TestPki) -> None:
    async with SupervisedCluster(tmp_path / "seed", pki, 1) as c:
        store = c.client()
        ident = ClusterIdentity("c-1", "cloudless.test", 1.0)
        assert await ensure_identity(store, ident) == ident
        assert await ensure_identity(store, ClusterIdentity("c-2", "x", 2.0)) == ident
        admin = EtcdAdmin(store)
        p1, p2 = free_ports(2)
        cfg = dataclasses.replace(
            c.configs[0],
            name="j1",
            data_dir=tmp_path / "j1.etcd",
            client_port=p1,
            peer_port=p2,
            tls=pki.member("j1"),
        )
        member, member_id = await join(admin, cfg)
        try:
            members = await admin.members()
            assert sorted((m.name, m.is_learner) for m in members) == [
                ("j1", False),
                ("m0", False),
            ]
            await store.put("/after-join", b"x")
            await remove(admin, member_id, member)
            assert [m.name for m in await admin.members()] == ["m0"]
            assert not cfg.data_dir.exists()  # never reused
            await store.put("/after-remove", b"x")
        finally:
            await member.stop()
        await store.close()


async def test_snapshot_save_and_restore(tmp_path: Path, pki: TestPki) -> None:
    async with SupervisedCluster(tmp_path / "orig", pki, 1) as c:
        store = c.client()
        for i in range(20):
            await store.put(f"/b/{i}", b"%d" % i)
        info = await save_snapshot(store, tmp_path / "snap.db")
        assert info.size > 0 and len(info.sha256) == 64
        await store.close()
    (cfg,) = member_configs(tmp_path / "restored", pki, 1)
    await restore_snapshot(info.path, cfg)
    member = EtcdMember(cfg)
    await member.start()
    try:
        from cloudless.store.etcd import EtcdStore

        restored = EtcdStore([cfg.endpoint], pki.client())
        listing = await restored.list("/b/")
        assert len(listing.kvs) == 20
        await restored.close()
    finally:
        await member.stop()


async def test_removed_member_is_not_restarted(tmp_path: Path, pki: TestPki) -> None:
    """Removing a running member makes etcd exit; its supervisor must report MemberRemoved
    (a removed member's data dir must never be reused), not restart it forever."""
    with pytest.raises(ExceptionGroup) as info:
        async with SupervisedCluster(tmp_path, pki, 3) as c:
            store = c.client()
            admin = EtcdAdmin(store)
            victim = next(m for m in await admin.members() if m.name == "m2")
            await admin.remove_member(victim.id)
            try:
                await asyncio.sleep(20)  # cancelled when m2's supervisor raises
            finally:
                await store.close()
    assert info.group_contains(MemberRemoved)
    assert c.members[2].restarts == 0


async def test_large_listing_and_watch_batches(tmp_path: Path, pki: TestPki) -> None:
    """300 values of 20 KB: one page / watch catch-up batch is ~6 MB, over gRPC's 4 MiB
    default receive limit."""
    async with SupervisedCluster(tmp_path, pki, 1) as c:
        store = c.client()
        start = await store.revision() + 1
        for i in range(300):
            await store.put(f"/big/{i:04d}", b"x" * 20_000)
        assert len((await store.list("/big/")).kvs) == 300
        seen = 0
        async with contextlib.aclosing(store.watch("/big/", start_revision=start)) as w:
            async for batch in w:
                seen += len(batch.events)
                if seen >= 300:
                    break
        assert seen == 300
        await store.close()


async def test_failed_join_leaves_no_learner_behind(tmp_path: Path, pki: TestPki) -> None:
    async with SupervisedCluster(tmp_path / "seed", pki, 1) as c:
        store = c.client()
        admin = EtcdAdmin(store)
        p1, p2 = free_ports(2)
        broken = dataclasses.replace(
            c.configs[0],
            name="j1",
            data_dir=tmp_path / "j1.etcd",
            client_port=p1,
            peer_port=p2,
            tls=pki.member("j1"),
            binary="/bin/false",  # "etcd" exits at once
        )
        with pytest.raises(EtcdStartFailed, match="j1 exited"):
            await join(admin, broken)
        assert [m.name for m in await admin.members()] == ["m0"]
        await store.put("/still-writable", b"x")  # quorum is still 1 of 1
        await store.close()
