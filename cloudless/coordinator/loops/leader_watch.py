"""Leader-death detection: a follower holds a connection to the leader and, when it breaks
and cannot be made again within a short grace, ends the dead leader's term at once.

Without this a follower learns of the leader's death from the store only when the dead
leader's election lease runs out: its TTL, plus a full TTL more if the dead coordinator took
its etcd member with it and that member was the raft leader (a new etcd leader renews every
lease, "lessor promotion"). A process that dies (kill -9, crash, OOM) has its sockets closed
by the kernel, so a follower holding an HTTP/2 connection to the leader's agent port sees it
break within milliseconds; it then tries to reconnect for ``grace`` seconds (a listening
socket that is gone is refused at once; a restarting server is given the grace) and, failing
that, calls ``Election.depose(term)``.

Contract:

* **Only an observed death deposes.** A follower deposes a term only after it was connected
  to that term's leader and lost the connection for ``grace``; a leader it never reached
  (a partition between the two, a leader still starting) is left to its lease. So a
  follower cut off from a healthy leader deposes it at most once, not in a loop.
* **A wrong deposition costs an election, never a split brain.** Leader-only writes are
  fenced on the election key's create revision (``cloudless.store.fence``); deposing deletes
  that key only if it still belongs to the same term, so the deposed leader's writes are
  refused from then on, and it campaigns again like everyone else.
* Deaths without a closed socket (power loss, a cut link, a frozen process) are caught by the
  link's keepalive pings when they are (cut link ~1 s, frozen process ``frozen_limit_ms``)
  and otherwise by the lease, as before.

``Sighting`` decides (pure, no I/O); ``LeaderWatch`` acts; ``Link`` is the seam to the
network (``GrpcLink`` for real, a fake in the tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import grpc.aio

from cloudless.lib.clock import Clock, SystemClock
from cloudless.lib.first import first_of
from cloudless.lib.keepalive import Keepalive
from cloudless.lib.waits import ended
from cloudless.store.election import Election, Leadership
from cloudless.store.errors import StoreError

log = logging.getLogger(__name__)


def _honour_cancellation() -> None:
    """Raise ``CancelledError`` if our task was asked to stop (a cancellation lost below us
    must not leave a retry loop running past its owner's shutdown)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


# ---- decide ---------------------------------------------------------------------------------


@dataclass
class Sighting:
    """What one follower has seen of one leader term's connection.

    ``observe(up, now)`` records each change; ``depose_at()`` is when the term should be
    ended (``None``: not now), and ``reason()`` says why or why not.
    """

    grace: float
    seen: bool = False  # connected to this term's leader at least once
    lost_at: float | None = None  # when the connection went down (after having been up)

    def observe(self, up: bool, now: float) -> None:
        if up:
            self.seen, self.lost_at = True, None
        elif self.seen and self.lost_at is None:
            self.lost_at = now

    def depose_at(self) -> float | None:
        return None if self.lost_at is None else self.lost_at + self.grace

    def reason(self, now: float) -> str:
        if not self.seen:
            return "never connected to this leader: its death is left to its lease"
        if self.lost_at is None:
            return "connected to the leader"
        down = now - self.lost_at
        if down < self.grace:
            return f"connection lost {down:.3f}s ago, reconnecting (grace {self.grace}s)"
        return f"connection to the leader lost and not re-made within {self.grace}s"


# ---- the network seam -----------------------------------------------------------------------


class Link(Protocol):
    def states(self, address: str) -> AsyncGenerator[bool, None]:
        """Keep a connection to ``address`` and tell whether it is up: the first state, then
        every change (``False`` when an established connection broke and while attempts to
        make it again fail). Ends only when closed; reconnects by itself."""
        ...


def leader_link_options(k: Keepalive) -> list[tuple[str, Any]]:
    """Channel options for a follower's link to the leader: pings every ``ping_every_ms``
    (the leader's server accepts that rate), a cut link noticed after ``unacked_limit_ms``
    (TCP_USER_TIMEOUT), a frozen leader after ``frozen_limit_ms``; reconnect attempts every
    0.1-1 s so a broken connection is re-tried within the grace."""
    return [
        ("grpc.keepalive_time_ms", k.ping_every_ms),
        ("grpc.keepalive_timeout_ms", k.unacked_limit_ms),
        ("grpc.http2.ping_timeout_ms", k.frozen_limit_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1_000),
    ]


class GrpcLink:
    """An idle HTTP/2 connection (mutual TLS) to the leader's agent port; no RPC is made.
    gRPC's C core owns the socket and its pings, so detection does not wait on our loop."""

    def __init__(
        self,
        credentials: grpc.ChannelCredentials | Callable[[], grpc.ChannelCredentials],
        options: list[tuple[str, Any]],
    ):
        self._credentials = credentials
        self._options = options

    async def states(self, address: str) -> AsyncGenerator[bool, None]:
        ready = grpc.ChannelConnectivity.READY
        creds = self._credentials() if callable(self._credentials) else self._credentials
        async with grpc.aio.secure_channel(address, creds, self._options) as ch:
            state = ch.get_state(try_to_connect=True)
            last: bool | None = None
            while True:
                if (state is ready) != last:
                    last = state is ready
                    yield last
                await ch.wait_for_state_change(state)
                state = ch.get_state(try_to_connect=True)


# ---- act ------------------------------------------------------------------------------------


class LeaderWatch:
    """While another coordinator leads, hold a ``Link`` to it; depose its term when the
    ``Sighting`` says so. ``address_of`` maps the election value to the leader's agent
    endpoint (``None``: nothing to watch)."""

    def __init__(
        self,
        election: Election,
        link: Link,
        address_of: Callable[[str], str | None],
        *,
        grace: float = 0.3,
        clock: Clock | None = None,
    ) -> None:
        self.election = election
        self.link = link
        self.address_of = address_of
        self.grace = grace
        self.clock = clock or SystemClock()

    async def run(self) -> None:
        task: asyncio.Task[None] | None = None
        watched = 0
        async with asyncio.TaskGroup() as tg:
            try:
                async with contextlib.aclosing(self.election.changes()) as changes:
                    async for lead in changes:
                        if lead.term == watched:
                            continue
                        if task is not None:
                            task.cancel()
                            # until it ends; raises only if we are cancelled (suppressing the task's
                            # CancelledError around ``await task`` would swallow ours too)
                            await asyncio.wait([task])
                            task = None
                        watched = 0
                        address = self._address(lead)
                        if address is not None:
                            watched = lead.term
                            task = tg.create_task(self._watch(lead, address))
            finally:
                if task is not None:
                    task.cancel()

    def _address(self, lead: Leadership) -> str | None:
        if lead.is_me or lead.leader is None or lead.term == 0:
            return None
        return self.address_of(lead.leader)

    async def _watch(self, lead: Leadership, address: str) -> None:
        try:
            await self._follow(lead, address)
        except Exception as e:  # never take the coordinator down: the lease still works
            log.warning(
                "watching leader %s (term %d) failed (%s); its death is left to its lease",
                address,
                lead.term,
                e,
            )

    async def _follow(self, lead: Leadership, address: str) -> None:
        sighting = Sighting(self.grace)
        async with contextlib.aclosing(self.link.states(address)) as states:
            nxt: asyncio.Task[bool] | None = None
            try:
                while True:
                    _honour_cancellation()
                    at = sighting.depose_at()
                    if nxt is None:
                        nxt = asyncio.ensure_future(anext(states))
                    if at is None:
                        up = await nxt
                    else:
                        # the next sighting before the timer when both come in one turn
                        which, up = await first_of(
                            nxt, self.clock.sleep(at - self.clock.monotonic())
                        )
                        if which == 1:
                            nxt = None  # cancelled and awaited by first_of
                            break
                    nxt = None
                    sighting.observe(up, self.clock.monotonic())
            finally:
                if nxt is not None:
                    with contextlib.suppress(StopAsyncIteration):
                        await ended(nxt)
        await self._depose(lead, sighting.reason(self.clock.monotonic()))

    async def _depose(self, lead: Leadership, why: str) -> None:
        """Retry until the store answers. If the leader's etcd member died with it, the
        survivors first need an etcd election, and a request sent meanwhile is forwarded to
        the dead raft leader and lost (it would hang for the store's whole request timeout):
        so each attempt is abandoned after ``ATTEMPT_S`` and sent again (safe: the delete
        is guarded by the term). The task is cancelled if the leadership changes meanwhile."""
        attempt = 0
        while True:
            _honour_cancellation()
            budget = self.ATTEMPT_S if attempt < self.SHORT_ATTEMPTS else 2.0
            attempt += 1
            try:
                done = await self._within(budget, self.election.depose(lead.term, why))
            except StoreError as e:
                log.info("deposing term %d: the store did not answer (%s); retrying", lead.term, e)
                await self.clock.sleep(0.05)
                continue
            if done is None:
                log.info("deposing term %d: no answer within %.1fs; retrying", lead.term, budget)
                continue
            return

    ATTEMPT_S = 0.3  # an etcd write takes milliseconds here; an election 1-2 s
    SHORT_ATTEMPTS = 20

    async def _within(self, seconds: float, aw: Coroutine[Any, Any, bool]) -> bool | None:
        """``aw``'s result, or ``None`` (and ``aw`` cancelled) after ``seconds`` on our clock."""
        which, value = await first_of(aw, self.clock.sleep(seconds))
        return bool(value) if which == 0 else None
