"""Leader-death detection on a fake clock and a fake link: a follower that saw the leader's
connection break deposes its term within the grace instead of waiting out the lease; one that
never reached the leader leaves it to the lease; a wrong deposition costs an election only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from cloudless.coordinator.loops.leader_watch import LeaderWatch, Sighting
from cloudless.lib.clock import FakeClock
from cloudless.store import Election, MemoryStore, Unavailable
from cloudless.store.errors import Fenced
from cloudless.store.fence import fenced_txn
from cloudless.store.types import Put

GRACE = 0.3
TTL = 6  # long, so that a takeover before it can only be a deposition

# ---- Sighting: the decision, as a table ------------------------------------------------------

# (observations (up, at), when to depose): the grace is 0.3 s.
SIGHTINGS: list[tuple[list[tuple[bool, float]], float | None]] = [
    ([], None),  # nothing seen yet
    ([(False, 0.0), (False, 5.0)], None),  # never connected: left to the lease
    ([(True, 0.0)], None),  # connected
    ([(True, 0.0), (False, 1.0)], 1.3),  # lost at 1.0: 1.0 + 0.3
    ([(True, 0.0), (False, 1.0), (True, 1.1)], None),  # re-made within the grace
    ([(True, 0.0), (False, 1.0), (False, 1.2)], 1.3),  # a failed retry keeps the first loss
    ([(True, 0.0), (False, 1.0), (True, 1.1), (False, 2.0)], 2.3),  # lost again at 2.0
]


@pytest.mark.parametrize(("observed", "depose_at"), SIGHTINGS)
def test_sighting(observed: list[tuple[bool, float]], depose_at: float | None) -> None:
    s = Sighting(GRACE)
    for up, at in observed:
        s.observe(up, at)
    got = s.depose_at()
    assert got == pytest.approx(depose_at) if depose_at is not None else got is None


def test_sighting_reasons() -> None:
    s = Sighting(GRACE)
    assert "never connected" in s.reason(0.0)
    s.observe(True, 0.0)
    s.observe(False, 1.0)
    assert "reconnecting" in s.reason(1.1)
    assert "not re-made within 0.3s" in s.reason(1.3)


# ---- LeaderWatch against a MemoryStore -------------------------------------------------------


class FakeLink:
    """Connections whose state the test sets; every address starts down."""

    def __init__(self) -> None:
        self.up: dict[str, bool] = {}
        self._changed = asyncio.Event()
        self.opened: list[str] = []

    def set(self, address: str, up: bool) -> None:
        self.up[address] = up
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def states(self, address: str) -> AsyncGenerator[bool, None]:
        self.opened.append(address)
        last: bool | None = None
        while True:
            changed = self._changed
            now = self.up.get(address, False)
            if now != last:
                last = now
                yield now
            await changed.wait()


class Mortal(MemoryStore):
    """A shared store in which one elector's process can die: after ``kill(lease)`` its
    keepalives and its resignation never arrive, so its lease lives out its TTL."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.dead: set[int] = set()
        self.lost_writes = 0  # the next n transactions are never answered

    async def txn(self, *args: Any, **kw: Any) -> Any:
        if self.lost_writes:
            self.lost_writes -= 1
            await asyncio.Event().wait()  # forwarded to a dead raft leader: no answer ever
        return await super().txn(*args, **kw)

    async def keepalive(self, lease_id: int) -> int:
        if lease_id in self.dead:
            raise Unavailable("the process is dead")
        return await super().keepalive(lease_id)

    async def revoke_lease(self, lease_id: int) -> None:
        if lease_id not in self.dead:
            await super().revoke_lease(lease_id)


def addr(value: str) -> str | None:
    return value  # the election value is the agent address in these tests


class Cluster:
    def __init__(self, tg: asyncio.TaskGroup) -> None:
        self.clock = FakeClock()
        self.store = Mortal(self.clock)
        self.link = FakeLink()
        self.tg = tg
        self.tasks = [tg.create_task(self.store.run(tick=0.1))]
        self.runs: dict[str, asyncio.Task[None]] = {}

    def start(self, who: str) -> Election:
        e = Election(self.store, who, ttl=TTL, clock=self.clock)
        w = LeaderWatch(e, self.link, addr, grace=GRACE, clock=self.clock)
        self.runs[who] = self.tg.create_task(e.run())
        self.tasks += [self.runs[who], self.tg.create_task(w.run())]
        return e

    def kill(self, e: Election) -> None:
        """kill -9: no more keepalives, no resignation."""
        assert e._lease is not None
        self.store.dead.add(e._lease.id)
        self.runs[e.value].cancel()

    def stop(self) -> None:
        for t in self.tasks:
            t.cancel()


async def started(c: Cluster) -> tuple[Election, Election]:
    """a leads; b follows and is connected to a. t = 1.0 s afterwards."""
    a = c.start("a:7443")
    await c.clock.run_for(0.5)
    assert a.is_leader()
    b = c.start("b:7443")
    c.link.set("a:7443", True)
    await c.clock.run_for(0.5)
    assert b.leader() == "a:7443" and c.link.opened == ["a:7443"]
    return a, b


async def test_observed_death_deposes_within_the_grace() -> None:
    async with asyncio.TaskGroup() as tg:
        c = Cluster(tg)
        a, b = await started(c)
        assert a._lease is not None
        dead_lease = a._lease.id
        c.kill(a)
        c.link.set("a:7443", False)  # the kernel closed a's sockets
        await c.clock.run_for(0.2)  # 0.2 < grace 0.3: still a's term
        assert b.leader() == "a:7443" and not b.is_leader()
        await c.clock.run_for(0.3)  # 0.5 > 0.3: deposed; b campaigns at once
        assert b.is_leader()
        assert len(b.deposed) == 1
        # a's lease has not run out (TTL 6 s): the takeover came from the deposition
        assert await c.store.lease_ttl(dead_lease) > 0
        c.stop()


async def test_a_leader_never_reached_is_left_to_its_lease() -> None:
    async with asyncio.TaskGroup() as tg:
        c = Cluster(tg)
        a = c.start("a:7443")
        await c.clock.run_for(0.5)
        b = c.start("b:7443")  # the link to a never comes up (a partition, say)
        await c.clock.run_for(0.5)
        c.kill(a)  # t = 1.0; a's last renewal was at t = 0 + 2 (every TTL/3)... at most
        await c.clock.run_for(2.0)
        assert not b.is_leader() and b.deposed == []
        await c.clock.run_for(TTL + 1.0)  # the lease runs out
        assert b.is_leader() and b.deposed == []
        c.stop()


async def test_reconnected_within_the_grace_is_not_deposed() -> None:
    async with asyncio.TaskGroup() as tg:
        c = Cluster(tg)
        a, b = await started(c)
        c.link.set("a:7443", False)
        await c.clock.run_for(0.1)
        c.link.set("a:7443", True)  # 0.1 < 0.3
        await c.clock.run_for(2.0)
        assert a.is_leader() and b.leader() == "a:7443" and b.deposed == []
        c.stop()


async def test_a_wrong_deposition_costs_an_election_not_a_split_brain() -> None:
    """a is alive but b's link to it breaks for good: b deposes a. a's writes under its old
    fence are refused from then on; one leader remains; b does not depose again (it never
    reaches the new term's leader if that is a)."""
    key = "/t/owned"
    async with asyncio.TaskGroup() as tg:
        c = Cluster(tg)
        a, b = await started(c)
        stale = a.fence()
        await fenced_txn(c.store, stale, (), [Put(key, b"a-1")])
        c.link.set("a:7443", False)
        await c.clock.run_for(1.0)
        assert len(b.deposed) == 1
        with pytest.raises(Fenced, match="no longer the leader"):
            await fenced_txn(c.store, stale, (), [Put(key, b"a-2")])
        leaders = [e for e in (a, b) if e.is_leader()]
        assert len(leaders) == 1
        await fenced_txn(c.store, leaders[0].fence(), (), [Put(key, b"new")])
        await c.clock.run_for(5.0)  # link to a still down: no second deposition
        assert len(b.deposed) == 1
        assert [e for e in (a, b) if e.is_leader()] == leaders
        c.stop()
    kv = await c.store.get(key)
    assert kv is not None and kv.value == b"new"


async def test_a_lost_deposition_is_sent_again() -> None:
    """The leader's etcd member died with it: the first two attempts go to the dead raft
    leader and are never answered. Each is abandoned after 0.3 s: lost at t, deposed at
    t + 0.3 (grace) + 0.3 + 0.3 (two lost attempts) = t + 0.9."""
    async with asyncio.TaskGroup() as tg:
        c = Cluster(tg)
        a, b = await started(c)
        c.kill(a)
        c.store.lost_writes = 2
        c.link.set("a:7443", False)
        await c.clock.run_for(0.85, step=0.01)
        assert b.deposed == [] and not b.is_leader()
        await c.clock.run_for(0.1, step=0.01)
        assert len(b.deposed) == 1 and b.is_leader()
        c.stop()
