"""What Debian's etcd (3.4) re-reads, checked on real members; what ``etcd_tls`` relies on:

* its certificate and key files are read again for each new handshake (no restart);
* its trusted-CA file is read only at start: ``EtcdMember.restart`` makes it read it;
* ``EtcdStore.reload_tls`` moves a client to new credentials, and a watch and an election
  open across reloads carry on (gRPC cancels the calls on the channels a reload closes);
* restarting the members of a three-member cluster one at a time keeps a quorum: every
  write made meanwhile through a client of all three succeeds, and a watch open across the
  restarts sees every one of them (it resumes on another member when its own goes away).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import grpc
import pytest

from cloudless.store.election import Election
from cloudless.store.errors import OutcomeUnknown, StoreError
from cloudless.store.etcd import EtcdStore
from cloudless.store.etcd_admin import endpoint_status
from cloudless.store.pki import member_tls
from cloudless.store.tls import ClientTls
from cloudless.testing.etcd import SupervisedCluster, TestPki


async def _answers(endpoint: str, tls: ClientTls) -> bool:
    """One fresh connection (a new TLS handshake) and a status call."""
    try:
        await endpoint_status(endpoint, tls, rpc_timeout=2.0)
    except StoreError:
        return False
    return True


async def test_cert_files_are_reread_per_connection_the_ca_file_only_at_start(
    tmp_path: Path, pki: TestPki
) -> None:
    other = TestPki(tmp_path / "pki2")  # the "new root"
    old_client, new_client = pki.client(), other.client()
    both = pki.ca_pem + other.ca_pem
    # trusts both roots for the server; presents a certificate from the new root
    new_cert_client = ClientTls(both, new_client.cert_pem, new_client.key_pem)
    async with SupervisedCluster(tmp_path / "etcd", pki, 1) as cluster:
        cfg, member = cluster.configs[0], cluster.members[0]
        store = EtcdStore([cfg.endpoint], old_client, retry_for=2.0)
        try:
            await store.put("/k", b"1")
            assert await _answers(cfg.endpoint, old_client)
            # the member trusts only the old root: a new-root client certificate is refused
            assert not await _answers(cfg.endpoint, new_cert_client)

            # 1. new serving certificate files (from the new root), no restart: the next
            #    handshake gets them -- a client trusting only the new root now gets in
            #    (with an old-root client certificate, which the member still trusts) ...
            new_files = member_tls(other.ca, cfg.name, cfg.host, tmp_path / "new-member")
            shutil.copyfile(new_files.key_file, cfg.tls.key_file)
            shutil.copyfile(new_files.cert_file, cfg.tls.cert_file)
            only_new_server = ClientTls(other.ca_pem, old_client.cert_pem, old_client.key_pem)
            assert await _answers(cfg.endpoint, only_new_server)
            # ... and a client trusting only the old root does not
            assert not await _answers(cfg.endpoint, old_client)
            # the store's open connection was verified at its handshake: it keeps working
            assert (await store.get("/k")) is not None

            # 2. a trusted-CA file with both roots: not read until a restart
            cfg.tls.ca_file.write_bytes(both)
            assert not await _answers(cfg.endpoint, new_cert_client)
            before = member.restarts
            t0 = time.monotonic()
            await member.restart()
            restart_s = time.monotonic() - t0
            assert member.restarts == before  # a planned restart is not a failure
            assert await _answers(cfg.endpoint, new_cert_client)
            print(f"single-member restart until it answers with a leader: {restart_s:.2f}s")

            # 3. the store's connection died with the restart, and its credentials trust
            #    only the old root (the member now serves a new-root certificate): refused
            #    until the store is moved to credentials that trust the new root
            with pytest.raises(StoreError):
                await store.get("/k")
            await store.reload_tls(new_cert_client)
            got = await store.get("/k")
            assert got is not None and got.value == b"1"
            await store.put("/k", b"2")
        finally:
            await store.close()


async def test_a_watch_and_an_election_outlive_tls_reloads(tmp_path: Path, pki: TestPki) -> None:
    """Each reload closes the channels it replaces (after a short grace: a channel kept open
    keeps its old credentials and reconnects with them whenever a member restarts), and gRPC
    cancels what is still open on them. Before the store took such a cancellation for a lost
    connection, the watch ended (its task cancelled, though nobody had cancelled it) and so
    did the leader's election, whose watch on its own key lasts its whole term: its lease was
    revoked and nobody from this process campaigned again (the rotation test's "no leader
    elected" for minutes)."""
    async with SupervisedCluster(tmp_path / "etcd", pki, 1) as cluster:
        store = EtcdStore(cluster.endpoints, pki.client(), retry_for=5.0)
        election = Election(store, "me", ttl=2)
        seen: list[str] = []

        async def watcher() -> None:
            async for batch in store.watch("/w/"):
                seen.extend(e.kv.key for e in batch.events)

        async with asyncio.TaskGroup() as tg:
            running = tg.create_task(election.run())
            watching = tg.create_task(watcher())
            for _ in range(100):
                if election.is_leader():
                    break
                await asyncio.sleep(0.05)
            assert election.is_leader()
            term = election.fence().compares[1].operand
            await store.put("/w/a", b"1")
            first = (store.channel, store._watch_channel)
            for _ in range(3):
                await store.reload_tls(pki.client())
                await asyncio.sleep(0.2)
            await store.put("/w/b", b"2")
            for _ in range(50):
                if len(seen) == 2:
                    break
                await asyncio.sleep(0.05)
            assert not watching.done() and not running.done()
            assert all(ch.get_state() is grpc.ChannelConnectivity.SHUTDOWN for ch in first)
            assert seen == ["/w/a", "/w/b"]
            assert election.is_leader() and election.fence().compares[1].operand == term
            running.cancel()
            watching.cancel()
        await store.close()


async def test_rolling_restart_keeps_quorum(tmp_path: Path, pki: TestPki) -> None:
    async with SupervisedCluster(tmp_path / "etcd", pki, 3) as cluster:
        store = cluster.client(retry_for=10.0)
        writes: list[float] = []
        failures: list[str] = []
        unknown: list[str] = []
        """Writes whose member stopped with the call open (at most one per restart)."""
        stop = asyncio.Event()

        async def writer() -> None:
            i = 0
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    await store.put(f"/w/{i}", b"x")
                    writes.append(time.monotonic() - t0)
                except OutcomeUnknown as e:
                    unknown.append(str(e))
                except StoreError as e:
                    failures.append(str(e))
                i += 1
                await asyncio.sleep(0.05)

        seen: list[str] = []

        async def watcher() -> None:
            async for batch in store.watch("/w/"):
                seen.extend(e.kv.key for e in batch.events)

        try:
            watching = asyncio.create_task(watcher())
            await asyncio.sleep(0.2)
            task = asyncio.create_task(writer())
            for member in cluster.members:
                # writes under way before each restart (a fast restart would otherwise leave
                # too few writes to show anything)
                had = len(writes)
                for _ in range(100):
                    if len(writes) >= had + 4:
                        break
                    await asyncio.sleep(0.05)
                await member.restart()
                statuses = await cluster.statuses()
                assert all(s is not None and s.leader for s in statuses), statuses
            stop.set()
            await task
            for _ in range(50):  # the watch delivers the last writes
                if len(seen) >= len(writes):
                    break
                await asyncio.sleep(0.1)
            assert not watching.done(), watching  # it never failed
            watching.cancel()
        finally:
            await store.close()
        assert failures == []
        assert len(unknown) <= len(cluster.members), unknown
        assert len(writes) > 10
        # a write whose outcome was unknown may have landed
        assert len(writes) <= len(set(seen)) <= len(writes) + len(unknown), (seen, writes)
        print(
            f"{len(writes)} writes during three member restarts; slowest "
            f"{max(writes):.2f}s, median {sorted(writes)[len(writes) // 2] * 1000:.1f}ms"
        )
