"""One coordinator brain: the real leader machinery, without servers."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from cloudless.coordinator.deciders.membership import MembershipConfig
from cloudless.coordinator.deciders.placer import SchedulerPlacer
from cloudless.coordinator.eventlog import EventBounds, EventCompactor
from cloudless.coordinator.eventlog.recorder import EventRecorder
from cloudless.coordinator.loops.reconcile_loop import Reconciler
from cloudless.coordinator.sim.base import GatedStore, SimClock
from cloudless.coordinator.state.cluster import EVENTS_PREFIX, ClusterState
from cloudless.coordinator.wiring.agent_plane import AgentPlane
from cloudless.lib.errors import CloudlessError
from cloudless.lib.ids import RandomIds
from cloudless.store.election import Election
from cloudless.store.errors import StoreError
from cloudless.store.fence import Fence
from cloudless.store.memory import MemoryStore

log = logging.getLogger("cloudless.sim")


class Brain:
    """One coordinator's leader machinery, wired as ``Coordinator`` wires it (no servers)."""

    def __init__(
        self,
        name: str,
        store: MemoryStore,
        clock: SimClock,
        membership: MembershipConfig,
        rng: random.Random,
        election_ttl: int,
    ) -> None:
        self.name = name
        self.clock = clock
        self.link = GatedStore(store)
        self.state = ClusterState(self.link)
        self.election = Election(self.link, name, ttl=election_ttl, clock=clock, rng=rng)
        self.agents = AgentPlane(self.state, clock, EventRecorder(self.state, clock), membership)
        self.dispatcher = self.agents.dispatcher
        self.reconciler = Reconciler(self.state, SchedulerPlacer(), RandomIds(rng), clock)
        self.task: asyncio.Task[None] | None = None
        self.terms = 0

    @property
    def leading(self) -> bool:
        return self.dispatcher.active and self.election.is_leader()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.election.run())
            tg.create_task(self._follow())

    async def _follow(self) -> None:
        task: asyncio.Task[None] | None = None
        async with asyncio.TaskGroup() as tg:
            try:
                async for lead in self.election.changes():
                    if lead.is_me and task is None:
                        self.terms += 1
                        task = tg.create_task(self._leading())
                    elif not lead.is_me and task is not None:
                        task.cancel()
                        # until it ends; raises only if we are cancelled (suppressing the task's
                        # CancelledError around ``await task`` would swallow ours too)
                        await asyncio.wait([task])
                        task = None
            finally:
                if task is not None:
                    task.cancel()

    async def _leading(self) -> None:
        """As ``Coordinator._leading``: the agent plane, the reconciler and the event compactor
        restart each on its own."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._keep_leading(self.agents.lead))
            tg.create_task(self._keep_leading(self.reconciler.lead))
            tg.create_task(self._keep_leading(self._compact_events))

    async def _compact_events(self, fence: Fence) -> None:
        await EventCompactor(self.link, EVENTS_PREFIX, EventBounds(), self.clock, fence=fence).run()

    async def _keep_leading(self, lead: Callable[[Fence], Awaitable[None]]) -> None:
        while self.election.is_leader():
            try:
                await lead(self.election.fence())
            except* (StoreError, CloudlessError) as eg:
                log.info("%s: leader loop stopped (%s)", self.name, eg.exceptions[0])
            await self.clock.sleep(0.2)
