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


class StuckWatches(MemoryStore):
    """Watches opened while ``stuck`` is set deliver nothing, ever (a watch stream that sits
    on an etcd member cut off with the old leader)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.stuck = False

    async def watch(self, prefix: str, *, start_revision: int = 0, prev_kv: bool = False):  # type: ignore[no-untyped-def, override]
        if self.stuck:
            await asyncio.Event().wait()
        async for batch in super().watch(prefix, start_revision=start_revision, prev_kv=prev_kv):
            yield batch


async def test_a_follower_whose_watch_is_stuck_learns_the_new_leader_when_it_deposes() -> None:
    """b's watch never shows a's term ending; c deposes a and takes over. When b then tries to
    depose a itself and finds that term already over, it re-reads the key at once and names
    c, instead of naming (and redirecting agents to) the dead a until its watch recovers."""
    clock = FakeClock()
    store = StuckWatches(clock)
    a = Election(store, "a:1", ttl=6, clock=clock)
    b = Election(store, "b:1", ttl=6, clock=clock)
    c = Election(store, "c:1", ttl=6, clock=clock)
    async with asyncio.TaskGroup() as tg:
        a_task = tg.create_task(a.run())
        tasks = [tg.create_task(store.run(tick=0.1))]
        await clock.run_for(0.5)
        assert a.is_leader()
        term = a._state.term
        store.stuck = True  # b's watch, opened now, will never deliver
        tasks.append(tg.create_task(b.run()))
        await clock.run_for(0.5)
        store.stuck = False
        tasks.append(tg.create_task(c.run()))
        await clock.run_for(0.5)
        assert b.leader() == "a:1" and c.leader() == "a:1"
        a_task.cancel()  # a's term ends (it resigns: its key is deleted)
        await clock.run_for(0.5)
        assert c.is_leader()
        assert b.leader() == "a:1"  # b's watch still shows nothing
        assert not await b.depose(term, "a's host is gone")  # already over
        await clock.run_for(0.2, step=0.01)  # no timer involved: a few turns of the loop
        assert b.leader() == "c:1" and not b.is_leader()
        for t in tasks:
            t.cancel()


class StuckWatchesCrashes(StuckWatches):
    """Also: revoking a lease in ``crashed`` fails, as when its holder's host went away
    (its key then lives until the lease expires)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.crashed: set[int] = set()

    async def revoke_lease(self, lease_id: int) -> None:
        if lease_id in self.crashed:
            raise Unavailable("the holder is gone")
        await super().revoke_lease(lease_id)


async def test_followers_whose_watches_are_stuck_still_elect_a_leader_after_a_deposition() -> None:
    """Chaos 'cut the leader coordinator off': both followers' election watches sit on the
    cut-off member and never deliver. c deposes a's term, b then finds it over. Neither may
    wait for its watch: the deposition makes each re-read the key at once, so one of them
    leads a few loop turns later (no timer involved) instead of never."""
    clock = FakeClock()
    store = StuckWatchesCrashes(clock)
    a = Election(store, "a:1", ttl=6, clock=clock)
    b = Election(store, "b:1", ttl=6, clock=clock)
    c = Election(store, "c:1", ttl=6, clock=clock)
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(store.run(tick=0.1))]
        a_task = tg.create_task(a.run())
        await clock.run_for(0.5)
        assert a.is_leader() and a._lease is not None
        term = a._state.term
        store.stuck = True  # every watch opened from now on delivers nothing
        tasks += [tg.create_task(b.run()), tg.create_task(c.run())]
        await clock.run_for(0.5)
        assert b.leader() == "a:1" and c.leader() == "a:1"
        store.crashed.add(a._lease.id)
        a_task.cancel()  # a is cut off: its key stays until its lease expires (t=6)
        await clock.run_for(0.1)
        assert await c.depose(term, "a's link is down")  # t=1.0: the key is deleted now
        await clock.run_for(0.2, step=0.01)
        assert c.is_leader(), "c's campaign waited on its stuck watch"
        assert not await b.depose(term, "a's link is down")
        await clock.run_for(0.2, step=0.01)
        assert b.leader() == "c:1" and not b.is_leader()
        for t in tasks:
            t.cancel()


async def test_a_vacancy_is_seen_within_one_ttl_whatever_the_watch_does() -> None:
    """Nobody deposes (no follower was connected to the leader) and every watch is stuck:
    the leader's key vanishes with its lease, and the follower sees the vacancy at its next
    re-read, one TTL after it last read the key at the latest. Without that bound it never
    campaigns.

    ttl = 6 s: a's lease is granted at t=0 and renewed every 2 s; a dies at t=1.0, so its
    last renewal is the grant and its key expires at t=6. b read the key at t=0.5, so it
    re-reads at t=0.5 + 6 = 6.5 and wins."""
    clock = FakeClock()
    store = StuckWatchesCrashes(clock)
    a = Election(store, "a:1", ttl=6, clock=clock)
    b = Election(store, "b:1", ttl=6, clock=clock)
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(store.run(tick=0.1))]
        a_task = tg.create_task(a.run())
        await clock.run_for(0.5)
        assert a.is_leader() and a._lease is not None
        store.stuck = True
        tasks.append(tg.create_task(b.run()))
        await clock.run_for(0.5)
        assert b.leader() == "a:1"
        store.crashed.add(a._lease.id)
        a_task.cancel()  # t=1.0: a is gone; its key stays until its lease expires
        await clock.run_for(5.2)  # t=6.2: the key has expired; b has not re-read yet
        assert b.leader() == "a:1" and not b.is_leader()
        await clock.run_for(0.8)  # t=7.0: b re-read at t=6.5
        assert b.is_leader(), "b never noticed the vacancy through its stuck watch"
        for t in tasks:
            t.cancel()


class CancelsWatchesUnderneath(MemoryStore):
    """The next watch opened while ``cancel_next`` is set ends in a ``CancelledError`` that
    the watching task never asked for: what gRPC raises when the channel under a call is
    closed (``EtcdStore.reload_tls`` closes the channels of the reload before it)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.cancel_next = False

    async def watch(self, prefix: str, *, start_revision: int = 0, prev_kv: bool = False):  # type: ignore[no-untyped-def, override]
        if self.cancel_next:
            self.cancel_next = False
            await asyncio.sleep(0)
            raise asyncio.CancelledError
        async for batch in super().watch(prefix, start_revision=start_revision, prev_kv=prev_kv):
            yield batch


async def test_a_call_cancelled_beneath_the_leader_ends_its_term_not_its_election() -> None:
    """The leader's watch on its own key ends in a cancellation it did not ask for. Its term
    ends (it resigns: b takes over), and it campaigns again as a follower, instead of its
    election task ending silently (then nobody would ever be elected from it again)."""
    clock = FakeClock()
    store = CancelsWatchesUnderneath(clock)
    a = Election(store, "a:1", ttl=6, clock=clock)
    b = Election(store, "b:1", ttl=6, clock=clock)
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(store.run(tick=0.1)), tg.create_task(a.run())]
        await clock.run_for(0.5)
        assert a.is_leader()
        tasks.append(tg.create_task(b.run()))
        await clock.run_for(0.5)
        store.cancel_next = True
        a._recheck.set()  # a re-reads the key and opens a new watch: the cancelled one
        await clock.run_for(3.0)
        assert not tasks[1].done(), "a's election ended"
        assert b.is_leader() and a.leader() == "b:1" and not a.is_leader()
        store.cancel_next = True  # a follower's watch too: it keeps following
        await clock.run_for(7.0)
        assert not tasks[1].done() and a.leader() == "b:1"
        for t in tasks:
            t.cancel()
