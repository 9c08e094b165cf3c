"""Election on a fake clock: the local belief in leadership is dropped before the lease can
have expired when keepalives stop getting through."""

from __future__ import annotations

import asyncio

from cloudless.lib.clock import FakeClock
from cloudless.store import Election, MemoryStore, Unavailable


class Partitionable(MemoryStore):
    """Keepalives from ``cut`` fail as if the network to the store were down."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.cut: set[int] = set()

    async def keepalive(self, lease_id: int) -> int:
        if lease_id in self.cut:
            raise Unavailable("partitioned")
        return await super().keepalive(lease_id)


async def test_partitioned_leader_steps_down_before_its_lease_ends() -> None:
    clock = FakeClock()
    store = Partitionable(clock)
    a = Election(store, "a:1", ttl=6, clock=clock)
    b = Election(store, "b:1", ttl=6, clock=clock)
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(store.run(tick=0.1)), tg.create_task(a.run())]
        await clock.run_for(0.5)
        assert a.is_leader()
        tasks.append(tg.create_task(b.run()))
        await clock.run_for(0.5)
        assert b.leader() == "a:1"
        assert a._lease is not None
        store.cut.add(a._lease.id)  # t=1.0: a's keepalives stop getting through
        # a's last successful renewal was sent at t=0 (grant): belief lasts 0.8 x 6 = 4.8 s,
        # while the lease lives 6 s after its last renewal. So at t=5.5 a no longer claims
        # leadership although nobody else can have it yet.
        await clock.run_for(4.5)
        assert not a.is_leader()
        assert b.leader() == "a:1" and not b.is_leader()
        # t=6: the lease expires, the key is deleted, b wins
        await clock.run_for(2.0)
        assert b.is_leader() and not a.is_leader()
        for t in tasks:
            t.cancel()


class LosesOneKeepalive(MemoryStore):
    """The first keepalive sent for a lease in ``lose`` is never answered (it went to a dead
    etcd leader); later ones get through."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.lose: set[int] = set()

    async def keepalive(self, lease_id: int) -> int:
        if lease_id in self.lose:
            self.lose.discard(lease_id)
            await asyncio.Event().wait()
        return await super().keepalive(lease_id)


async def test_a_winner_whose_belief_lapsed_renews_at_once() -> None:
    """b's keepalive loop is stuck on a lost request when b wins: b renews at once and
    leads, instead of when the stuck request times out (``interval`` of real time)."""
    clock = FakeClock()
    store = LosesOneKeepalive(clock)
    a = Election(store, "a:1", ttl=6, clock=clock)
    b = Election(store, "b:1", ttl=6, clock=clock)
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(store.run(tick=0.1)), tg.create_task(a.run())]
        await clock.run_for(0.5)
        tasks.append(tg.create_task(b.run()))  # t=0.5: b's lease granted, lives to 6.5
        await clock.run_for(0.1)
        assert b._lease is not None
        store.lose.add(b._lease.id)  # b's first renewal (t=2.5) is lost
        # b's belief: 0.5 + 0.8 x 6 = 5.3; its lease in the store: 0.5 + 6 = 6.5
        await clock.run_for(4.9)  # t=5.5
        tasks[1].cancel()  # a resigns: b wins with a lapsed belief but a live lease
        await clock.run_for(0.3)
        assert b.leader() == "b:1" and b.is_leader()
        for t in tasks:
            t.cancel()
