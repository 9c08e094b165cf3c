"""Bootstrap, join and remove coordinators' etcd members.

* **Bootstrap**: the first coordinator starts a one-member cluster (``MemberConfig`` with the
  defaults ``cluster_state="new"``, no ``initial_cluster``) and writes the cluster identity
  once with ``ensure_identity`` (create-if-absent; a second bootstrap gets the existing one).
* **Join**: ``join`` adds the new member as a *learner* through an existing member, starts
  it with ``--initial-cluster-state=existing``, and promotes it once it has caught up
  (promotion and membership changes are retried: etcd refuses them for a few seconds after a
  restart, and refuses promotion until the learner is in sync). Spending the coordinator-join
  token is the caller's job and must happen first.
* **Remove**: ``remove`` removes the member from the cluster, stops its etcd and deletes its
  data dir; a removed member's data dir is never reused (``join`` refuses a non-empty one).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging

from cloudless.lib.errors import Conflict
from cloudless.store.errors import StoreError
from cloudless.store.etcd_admin import EtcdAdmin, Member
from cloudless.store.etcd_process import EtcdMember, MemberConfig, wipe_data_dir
from cloudless.store.protocol import Store
from cloudless.store.tables.config import CLUSTER, IDENTITY, ClusterIdentity

log = logging.getLogger(__name__)


async def ensure_identity(store: Store, identity: ClusterIdentity) -> ClusterIdentity:
    """Write ``identity`` if the cluster has none; return the identity the cluster has."""
    table = CLUSTER.bind(store)
    try:
        await table.create(IDENTITY, identity)
        return identity
    except Conflict:
        existing = await table.get(IDENTITY)
        if existing is None:  # deleted between the two calls: an operator error
            raise StoreError("cluster identity vanished during bootstrap; retry") from None
        return existing.value


def joining_config(config: MemberConfig, members: list[Member]) -> MemberConfig:
    """``config`` for a member that was just added: the cluster it joins, state existing."""
    cluster: list[tuple[str, str]] = []
    for m in members:
        name = m.name or (config.name if config.peer_url in m.peer_urls else "")
        if not name:
            raise StoreError(
                f"etcd member {m.id:x} ({', '.join(m.peer_urls)}) was added but never "
                "started; remove it before adding another"
            )
        cluster += [(name, url) for url in m.peer_urls]
    return dataclasses.replace(config, initial_cluster=tuple(cluster), cluster_state="existing")


async def join(
    admin: EtcdAdmin,
    config: MemberConfig,
    *,
    promote_within: float = 120.0,
) -> tuple[EtcdMember, int]:
    """Add ``config`` as a learner, start it, promote it. Returns the running member (start
    supervising it with ``member.run()``) and its etcd member id. On failure the learner is
    removed again (and its data dir wiped) before the error is raised."""
    if config.data_dir.exists() and any(config.data_dir.iterdir()):
        raise StoreError(
            f"data dir {config.data_dir} is not empty: a member joins with a fresh data dir "
            "(a removed member's data is never reused); delete it or choose another"
        )
    added, members = await admin.add_member(config.peer_url, learner=True)
    member = EtcdMember(joining_config(config, members))
    try:
        await member.start()
        await admin.promote_member(added.id, within=promote_within)
    except BaseException:
        # Leave no half-joined learner behind: undo, then report the original failure.
        log.warning("etcd member %s failed to join; removing it again", config.name)
        with contextlib.suppress(Exception):
            await asyncio.shield(remove(admin, added.id, member))
        raise
    log.info("etcd member %s (%x) joined and promoted", config.name, added.id)
    return member, added.id


async def remove(admin: EtcdAdmin, member_id: int, member: EtcdMember | None = None) -> None:
    """Remove a member from the cluster; if it runs here, stop it and wipe its data dir."""
    await admin.remove_member(member_id)
    if member is not None:
        await member.stop()
        wipe_data_dir(member.config)
