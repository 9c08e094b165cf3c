"""Leader election over any ``Store``, with fencing.

The leader is whoever created ``/cloudless/election/<name>`` (create-if-absent) under its
lease; the value is the leader's API address. The key vanishes when the lease ends (crash,
partition longer than the TTL, resignation) and the others race to create it again.

Safety does not rest on ``is_leader()`` (a local belief, dropped conservatively when
keepalives stop succeeding) but on the **fence**: every leader-only write carries
``Compare.lease(key) == our lease`` and ``Compare.create_revision(key) == our term's
revision`` in the same transaction, so a deposed leader's writes are refused by the store.

A follower that *observes* the leader's death (see ``cloudless.coordinator.loops.leader_watch``)
need not wait out the dead leader's lease: ``depose(term)`` deletes the election key if, and
only if, it still belongs to that term, and the campaign starts at once. A wrong deposition
(the leader was alive) costs one election, never a split brain: the deposed leader's fence
names a term that no longer exists, so the store refuses its writes from that revision on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncGenerator, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cloudless.lib.backoff import Backoff
from cloudless.lib.clock import Clock, SystemClock
from cloudless.store.errors import Compacted, Fenced, LeaseNotFound, StoreError
from cloudless.store.fence import Fence
from cloudless.store.protocol import Store
from cloudless.store.tables import ROOT
from cloudless.store.types import Compare, Delete, EventType, Get, GetResult, KeyValue, Lease, Put

if TYPE_CHECKING:
    from cloudless.store.lease_keeper import LeaseKeeper

log = logging.getLogger(__name__)

ELECTION_PREFIX = ROOT + "election/"


@dataclass(frozen=True)
class Leadership:
    """Who leads, as last observed. ``leader`` is the leader's API address, ``None`` if
    nobody does. ``term`` is the election key's create revision (0 if no leader)."""

    leader: str | None
    is_me: bool
    term: int


NO_LEADER = Leadership(None, False, 0)


class _TermOver(Exception):
    pass


def _honour_cancellation() -> None:
    """Raise ``CancelledError`` if our task was asked to stop. A cancellation can be lost
    below us (3.11's ``wait_for`` returns a result that raced with it); a retry loop that
    did not check would then outlive its owner and hang its shutdown."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class Election:
    def __init__(
        self,
        store: Store,
        value: str,
        *,
        name: str = "coordinator",
        ttl: int = 5,
        clock: Clock | None = None,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.value = value
        self.key = ELECTION_PREFIX + name
        self.ttl = ttl
        self._clock = clock or SystemClock()
        self._backoff = backoff or Backoff(base=0.2, cap=2.0)
        self._rng = rng or random.Random()
        self._state = NO_LEADER
        self._lease: Lease | None = None
        self._valid_until = 0.0
        self._subscribers: list[asyncio.Queue[Leadership]] = []
        self.deposed: list[int] = []  # terms this elector ended with ``depose``
        # Set by ``depose``: the campaign re-reads the key now instead of waiting on its watch.
        self._recheck = asyncio.Event()

    # ---- queries ---------------------------------------------------------------------------

    def is_leader(self) -> bool:
        """We hold the election and our lease was renewed recently enough to still be alive."""
        return self._state.is_me and self._clock.monotonic() < self._valid_until

    def leader(self) -> str | None:
        """The current leader's API address as last observed (ours if we lead)."""
        if self._state.is_me and not self.is_leader():
            return None
        return self._state.leader

    def fence(self) -> Fence:
        """Compares proving our leadership, for every leader-only write. Raises ``Fenced`` if
        we do not (believe we) lead."""
        if not self.is_leader() or self._lease is None:
            raise Fenced(
                f"not the leader (leader is {self._state.leader or 'unknown'}); "
                "leader-only writes must go through the leader"
            )
        return Fence(
            (
                Compare.lease(self.key, "==", self._lease.id),
                Compare.create_revision(self.key, "==", self._state.term),
            ),
            self.value,
        )

    async def changes(self) -> AsyncGenerator[Leadership, None]:
        """The current leadership, then every change to it, until cancelled."""
        q: asyncio.Queue[Leadership] = asyncio.Queue()
        q.put_nowait(self._state)
        self._subscribers.append(q)
        try:
            while True:
                yield await q.get()
        finally:
            self._subscribers.remove(q)

    def _publish(self, state: Leadership) -> None:
        if state != self._state:
            self._state = state
            log.info(
                "election %s (%s): leader=%s me=%s", self.key, self.value, state.leader, state.is_me
            )
            for q in self._subscribers:
                q.put_nowait(state)

    # ---- deposing a dead leader -------------------------------------------------------------

    async def depose(self, term: int, why: str) -> bool:
        """End another coordinator's term ``term`` now, because its death was observed.

        Deletes the election key in one transaction guarded by ``create_revision == term``:
        a newer term (or our own) is never touched, and calling it twice is harmless. Returns
        whether this call ended the term (``False`` with the reason logged: not that term any
        more, or it is ours). Safety does not depend on ``why`` being right: a live leader that
        is deposed loses its fence with the key and campaigns again like everyone else.
        Raises ``StoreError`` if the store did not answer (the caller may retry).
        """
        if self._state.is_me or self._state.term != term:
            log.info(
                "election %s (%s): not deposing term %d: the current term is %d%s",
                self.key,
                self.value,
                term,
                self._state.term,
                " (ours)" if self._state.is_me else "",
            )
            return False
        leader = self._state.leader
        res = await self.store.txn(
            [Compare.create_revision(self.key, "==", term)], [Delete(self.key)], [Get(self.key)]
        )
        if res.succeeded:
            self.deposed.append(term)
        else:
            self._learn(res.results[0])
        # Either way the campaign must not wait for its watch to show the term's end: the
        # watch may sit on the etcd member cut off with the old leader and deliver nothing.
        self._recheck.set()
        log.warning(
            "election %s (%s): %s term %d of %s: %s",
            self.key,
            self.value,
            "deposed" if res.succeeded else "term already over, not deposing",
            term,
            leader,
            why,
        )
        return res.succeeded

    def _learn(self, got: object) -> None:
        """Publish who holds the key now, read by ``depose`` when the term it meant to end
        was already over: our watch has not shown that (it may sit on an etcd member cut
        off with the old leader), and until it does we would name a dead leader and
        redirect every agent that asks to it. The campaign loop re-reads the key in any case
        once its watch moves."""
        if isinstance(got, GetResult):
            self._publish(self._holder(got.kvs[0]) if got.kvs else NO_LEADER)

    def _holder(self, kv: KeyValue) -> Leadership:
        """The leadership the election key ``kv`` names (ours if it holds our lease)."""
        mine = self._lease is not None and kv.lease == self._lease.id
        return Leadership(kv.value.decode(), mine, kv.create_revision)

    # ---- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Campaign, lead or follow, forever; on cancellation resign so others take over."""
        attempt = 0
        try:
            while True:
                try:
                    await self._unless_cancelled_under_us(self._term())
                    attempt = 0
                except* (StoreError, _TermOver) as group:
                    log.warning(
                        "election %s (%s): term ended: %r",
                        self.key,
                        self.value,
                        group.exceptions[0],
                    )
                self._publish(NO_LEADER if self._state.is_me else self._state)
                await self._clock.sleep(self._backoff.delay(attempt, self._rng))
                attempt = min(attempt + 1, 6)
        finally:
            await asyncio.shield(self._resign())

    @staticmethod
    async def _unless_cancelled_under_us(term: Coroutine[Any, Any, None]) -> None:
        """Run ``term``; a ``CancelledError`` that our task was not asked for (a store call
        cancelled beneath us) ends the term like a store error. Let through, it would end
        the election without a word: the coordinator's ``TaskGroup`` ignores a child that
        ends cancelled, and nobody would campaign from this coordinator again."""
        try:
            await term
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise
            raise _TermOver("a store call was cancelled beneath the election") from None

    async def _term(self) -> None:
        lease = await self.store.grant_lease(self.ttl)
        self._lease = lease
        self._valid_until = self._clock.monotonic() + lease.ttl * 0.8
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._keepalive(lease))
                await self._campaign(lease)
        finally:
            # Step down now rather than at lease expiry, so a successor need not wait a TTL.
            self._publish(NO_LEADER if self._state.is_me else self._state)
            await asyncio.shield(self._resign())

    async def _campaign(self, lease: Lease) -> None:
        while True:
            self._recheck.clear()  # this transaction reads the key: any later news counts
            res = await self.store.txn(
                [Compare.absent(self.key)],
                [Put(self.key, self.value.encode(), lease.id)],
                [Get(self.key)],
            )
            if res.succeeded:
                self._publish(Leadership(self.value, True, res.revision))
                since = res.revision
                if not self.is_leader():
                    await self._confirm(lease)
            else:
                got = res.results[0]
                assert isinstance(got, GetResult)
                if not got.kvs:
                    continue
                kv = got.kvs[0]
                self._publish(self._holder(kv))
                since = kv.mod_revision
            await self._until_vacant(since)

    async def _until_vacant(self, since: int) -> None:
        """Return when the election key is deleted (watching from ``since + 1``), when
        ``depose`` asks for a re-read, or after ``ttl`` seconds at the latest; the campaign's
        transaction then reads the key again through any member.

        The watch alone is not enough: etcd streams a watch from one member, and a member cut
        off from the quorum delivers nothing, and, behind a dropped link, not even the error
        that would move the watch elsewhere. Without the bound, a follower whose watch sat
        there never saw the old term end and never campaigned (chaos: no new leader 30 s
        after the leader's host was cut off). A vacancy is therefore seen within one lease
        TTL whatever the watch does, at the cost of one read per TTL per follower. The leader
        does not re-read: its own key ends only with its lease, which its keepalive watches,
        and a read that timed out under load would end its term for nothing."""
        waits = {
            asyncio.ensure_future(self._watch_vacancy(since)),
            asyncio.ensure_future(self._recheck.wait()),
        }
        if not self._state.is_me:
            waits.add(asyncio.ensure_future(self._clock.sleep(self.ttl)))
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Not awaited: the campaign goes on at once (a deposition's takeover is measured
            # in loop turns); the cancelled waits finish on their own.
            for w in waits:
                w.cancel()
        for w in done:
            w.result()  # a failed watch ends the term like any store error

    async def _watch_vacancy(self, since: int) -> None:
        try:
            async with contextlib.aclosing(
                self.store.watch(self.key, start_revision=since + 1)
            ) as batches:
                async for batch in batches:
                    for e in batch.events:
                        if e.key == self.key and e.type is EventType.DELETE:
                            self._publish(NO_LEADER)
                            return
        except Compacted:
            return  # re-campaign: the txn re-reads the key

    async def _keepalive(self, lease: Lease) -> None:
        """Renew every ttl/3. A store that can renew from a thread of its own
        (``lease_keeper``: etcd) does, so a lagging event loop cannot lose the lease; this
        loop then only follows the keeper. Otherwise a renewal may take until our claim
        would lapse, and a failed one is retried at once."""
        interval = max(0.2, lease.ttl / 3)
        make_keeper = getattr(self.store, "lease_keeper", None)
        if make_keeper is not None:
            await self._follow_keeper(lease, make_keeper(lease.id, interval), interval)
            return
        while True:
            await self._clock.sleep(interval)
            while True:
                _honour_cancellation()
                sent = self._clock.monotonic()
                budget = max(interval, self._valid_until - sent)
                try:
                    async with asyncio.timeout(budget):
                        await self.store.keepalive(lease.id)
                except LeaseNotFound:
                    raise _TermOver(f"lease {lease.id:x} expired") from None
                except (TimeoutError, StoreError) as e:
                    log.warning(
                        "election %s (%s): keepalive failed: %s %s",
                        self.key,
                        self.value,
                        type(e).__name__,
                        e,
                    )
                    await self._clock.sleep(0.05)
                    continue
                self._valid_until = max(self._valid_until, sent + lease.ttl * 0.8)
                break

    async def _follow_keeper(self, lease: Lease, keeper: LeaseKeeper, interval: float) -> None:
        """Turn the keeper thread's renewals into our belief in the lease, until it expires
        (or we are cancelled: the keeper stops with us)."""
        try:
            while True:
                await self._clock.sleep(min(interval, 0.2))
                if keeper.expired:
                    raise _TermOver(f"lease {lease.id:x} expired")
                if keeper.last_ok is not None:
                    self._valid_until = max(self._valid_until, keeper.last_ok + lease.ttl * 0.8)
        finally:
            keeper.stop()

    async def _confirm(self, lease: Lease, attempts: int = 5, each: float = 0.3) -> None:
        """We won while our belief in the lease had lapsed (its keepalives failed, e.g.
        during an etcd election, and the keepalive loop may be waiting on a request that
        will never be answered): renew now with short attempts so that we can lead at once
        rather than when the loop's next renewal gets through. Gives up quietly."""
        for _ in range(attempts):
            _honour_cancellation()
            sent = self._clock.monotonic()
            try:
                async with asyncio.timeout(each):
                    await self.store.keepalive(lease.id)
            except LeaseNotFound:
                raise _TermOver(f"lease {lease.id:x} expired") from None
            except (TimeoutError, StoreError):
                continue
            self._valid_until = max(self._valid_until, sent + lease.ttl * 0.8)
            return

    async def _resign(self) -> None:
        lease, self._lease = self._lease, None
        self._publish(NO_LEADER if self._state.is_me else self._state)
        if lease is not None:
            with contextlib.suppress(StoreError, TimeoutError):
                async with asyncio.timeout(2.0):
                    await self.store.revoke_lease(lease.id)
