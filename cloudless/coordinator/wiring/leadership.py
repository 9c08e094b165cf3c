"""The leader's loops, run while the election names this coordinator.

``Leadership.run`` follows the election: when it names us, every leader loop starts (each is
``lead(fence)``: the agent hub, the reconciler, the event compactor, the network
controller...), each in its own task and restarted on its own after a failure, so a
reconciler failing on a slow store does not drop every agent's session; when it stops naming
us, they are all cancelled. While our belief in the lease has lapsed (keepalives not getting
through, e.g. during an etcd election right after we won) a loop waits for it to come back
rather than give up: nothing else would start it again while the election still names us.
The coordinator process and the simulator's brains run this same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from cloudless.lib.clock import Clock
from cloudless.lib.errors import CloudlessError
from cloudless.observability.metrics import IS_LEADER, LEADER_CHANGES
from cloudless.store.election import Election
from cloudless.store.errors import StoreError
from cloudless.store.fence import Fence

log = logging.getLogger("cloudless.coordinator")

LeaderLoop = Callable[[Fence], Awaitable[None]]


class Leadership:
    RESTART_S = 0.2  # between a leader loop's failure and its restart
    LAPSED_POLL_S = 0.05  # how often a loop checks whether a lapsed lease came back

    def __init__(
        self,
        election: Election,
        clock: Clock,
        loops: Sequence[tuple[str, LeaderLoop]],
        *,
        name: str = "",
    ) -> None:
        self.election = election
        self.clock = clock
        self.loops = list(loops)
        self.name = name
        self.terms = 0  # terms this coordinator has led

    async def run(self) -> None:
        task: asyncio.Task[None] | None = None
        term = 0
        async with asyncio.TaskGroup() as tg:  # the term's work: one task, ended with the term
            try:
                async with contextlib.aclosing(self.election.changes()) as changes:
                    async for lead in changes:
                        if lead.term and lead.term != term:
                            term = lead.term
                            LEADER_CHANGES.inc()
                        IS_LEADER.set(1 if lead.is_me else 0)
                        if lead.is_me and task is None:
                            log.info("coordinator %s is the leader (term %d)", self.name, lead.term)
                            self.terms += 1
                            task = tg.create_task(self._leading())
                        elif not lead.is_me and task is not None:
                            log.info("coordinator %s is no longer the leader", self.name)
                            task.cancel()
                            # until it ends; raises only if we are cancelled (suppressing the
                            # task's CancelledError around ``await task`` would swallow ours too)
                            await asyncio.wait([task])
                            task = None
            finally:
                if task is not None:
                    task.cancel()

    async def _leading(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for what, loop in self.loops:
                tg.create_task(self._keep(what, loop))

    async def _keep(self, what: str, lead: LeaderLoop) -> None:
        """Run ``lead`` while we lead; restart it after any failure."""
        while True:
            if not self.election.is_leader():
                await self.clock.sleep(self.LAPSED_POLL_S)
                continue
            try:
                await lead(self.election.fence())
            except* (StoreError, CloudlessError) as eg:
                log.warning("%s stopped (%s); restarting it", what, _first_leaf(eg))
            except* Exception as eg:
                log.error("%s failed; restarting it", what, exc_info=_first_leaf(eg))
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # a TaskGroup that was cancelled while a child failed raises the failure,
                # not CancelledError: honour the cancellation ourselves
                raise asyncio.CancelledError
            await self.clock.sleep(self.RESTART_S)


def _first_leaf(eg: BaseExceptionGroup[BaseException]) -> BaseException:
    e: BaseException = eg
    while isinstance(e, BaseExceptionGroup):
        e = e.exceptions[0]
    return e
