"""etcd administration: member status, membership changes, snapshots.

Membership changes are refused by etcd for a few seconds after a member (re)starts
("unhealthy cluster") and promotion is refused until the learner has caught up: those
refusals are retried with backoff until ``within`` seconds pass. ``add_member`` is made safe to
retry by first looking for a member with the same peer URL.
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc.aio
from etcd3aio import EtcdError
from etcd3aio.cluster import ClusterService
from etcd3aio.connections import ConnectionManager
from etcd3aio.maintenance import MaintenanceService

from cloudless.lib.backoff import Backoff
from cloudless.store.errors import StoreError, Unavailable
from cloudless.store.etcd import EtcdStore, _rpc_error
from cloudless.store.etcd_process import MemberConfig
from cloudless.store.tls import ClientTls

_RETRYABLE = (
    "unhealthy cluster",
    "not enough started members",
    "in sync with leader",
    "too many learner",
    "leader changed",
    "no leader",
    "request timed out",
    "failed to connect",
    "connection refused",
)


@dataclass(frozen=True)
class MemberStatus:
    member_id: int
    leader: int
    raft_index: int
    raft_term: int
    is_learner: bool
    db_size: int

    @property
    def is_leader(self) -> bool:
        return self.member_id != 0 and self.member_id == self.leader


@dataclass(frozen=True)
class Member:
    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool


def _member(pb: Any) -> Member:
    return Member(int(pb.ID), pb.name, tuple(pb.peerURLs), tuple(pb.clientURLs), bool(pb.isLearner))


async def endpoint_status(
    endpoint: str, tls: ClientTls, *, rpc_timeout: float = 2.0
) -> MemberStatus:
    """Maintenance.Status of exactly one member (answers without quorum, also as learner)."""
    channel = ConnectionManager([endpoint]).get_channel(
        ca_cert=tls.ca_pem,
        cert_key=tls.key_pem,
        cert_chain=tls.cert_pem,
        tls_server_name=tls.server_name,
    )
    try:
        resp = await MaintenanceService(channel, max_attempts=1).status(timeout=rpc_timeout)
    except (EtcdError, grpc.aio.AioRpcError, TimeoutError) as e:
        raise Unavailable(f"etcd member {endpoint} did not answer a status call: {e}") from None
    finally:
        await channel.close()
    return MemberStatus(
        int(resp.header.member_id),
        int(resp.leader),
        int(resp.raftIndex),
        int(resp.raftTerm),
        bool(getattr(resp, "isLearner", False)),
        int(resp.dbSize),
    )


async def member_status(config: MemberConfig, *, rpc_timeout: float = 2.0) -> MemberStatus:
    """Status of the member described by ``config``, authenticating with its own certificate."""
    t = config.tls
    tls = await asyncio.to_thread(ClientTls.from_files, t.ca_file, t.cert_file, t.key_file)
    return await endpoint_status(config.endpoint, tls, rpc_timeout=rpc_timeout)


class EtcdAdmin:
    """Membership and maintenance over an ``EtcdStore``'s connection."""

    def __init__(
        self,
        store: EtcdStore,
        *,
        timeout: float = 5.0,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._cluster = ClusterService(store.channel, max_attempts=1)
        self._maint = MaintenanceService(store.channel, max_attempts=1)
        self._timeout = timeout
        self._backoff = backoff or Backoff(base=0.25, cap=2.0)
        self._rng = rng or random.Random()

    async def _retry(self, what: str, within: float, fn: Any) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        attempt = 0
        while True:
            try:
                return await fn()
            except (EtcdError, grpc.aio.AioRpcError, TimeoutError) as exc:
                err = _rpc_error(exc)
                text = ((err.details() if err else None) or str(exc)).lower()
                retryable = isinstance(exc, TimeoutError) or any(m in text for m in _RETRYABLE)
                if not retryable:
                    raise StoreError(f"etcd {what} refused: {text}") from None
                if loop.time() >= deadline:
                    raise Unavailable(
                        f"etcd {what} still refused after {within:.0f}s: {text}"
                    ) from None
            await asyncio.sleep(self._backoff.delay(attempt, self._rng))
            attempt += 1

    async def members(self) -> list[Member]:
        resp = await self._retry(
            "member list", 10.0, lambda: self._cluster.member_list(timeout=self._timeout)
        )
        return [_member(m) for m in resp.members]

    async def add_member(
        self, peer_url: str, *, learner: bool = True, within: float = 60.0
    ) -> tuple[Member, list[Member]]:
        """Add a member (a learner by default); returns it and the full member list."""

        async def once() -> tuple[Member, list[Member]]:
            current = await self.members()
            for m in current:
                if peer_url in m.peer_urls:
                    return m, current
            resp = await self._cluster.member_add(
                [peer_url], is_learner=learner, timeout=self._timeout
            )
            return _member(resp.member), [_member(m) for m in resp.members]

        result: tuple[Member, list[Member]] = await self._retry("member add", within, once)
        return result

    async def promote_member(self, member_id: int, *, within: float = 120.0) -> None:
        """Make a caught-up learner a voter (retried until it has caught up)."""

        async def once() -> None:
            for m in await self.members():
                if m.id == member_id and not m.is_learner:
                    return
            await self._cluster.member_promote(member_id, timeout=self._timeout)

        await self._retry("member promote", within, once)

    async def remove_member(self, member_id: int, *, within: float = 60.0) -> None:
        async def once() -> None:
            if all(m.id != member_id for m in await self.members()):
                return
            await self._cluster.member_remove(member_id, timeout=self._timeout)

        await self._retry("member remove", within, once)

    async def snapshot(self, dest: Path, *, rpc_timeout: float = 300.0) -> int:
        """Stream a consistent backend snapshot from one member into ``dest`` (written to a
        temporary file, fsynced, then renamed). Returns its size in bytes."""
        tmp = dest.with_name(dest.name + ".part")
        size = 0
        try:
            with tmp.open("wb") as f:
                async for chunk in self._maint.snapshot(timeout=rpc_timeout, max_attempts=1):
                    await asyncio.to_thread(f.write, chunk)
                    size += len(chunk)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(dest)
        except (EtcdError, grpc.aio.AioRpcError, TimeoutError) as e:
            tmp.unlink(missing_ok=True)
            raise Unavailable(f"etcd snapshot to {dest} failed: {e}; nothing was written") from None
        return size
