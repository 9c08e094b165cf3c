"""One coordinator brain: the real leader machinery, serving agents on the in-memory
transport at its name."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from cloudless.coordinator.agentapi.sessions import AgentSessions
from cloudless.coordinator.deciders.membership import MembershipConfig
from cloudless.coordinator.deciders.placer import SchedulerPlacer
from cloudless.coordinator.eventlog import EventBounds, EventCompactor
from cloudless.coordinator.eventlog.recorder import EventRecorder
from cloudless.coordinator.loops.reconcile_loop import Reconciler
from cloudless.coordinator.state.cluster import EVENTS_PREFIX, ClusterState
from cloudless.coordinator.wiring.agent_plane import AgentPlane
from cloudless.coordinator.wiring.leadership import Leadership
from cloudless.lib.ids import RandomIds
from cloudless.store.election import Election
from cloudless.store.fence import Fence
from cloudless.store.memory import MemoryStore
from cloudless.testing.sim.base import GatedStore, SimClock
from cloudless.transport.memory import MemoryNetwork

log = logging.getLogger("cloudless.sim")


class Brain:
    """One coordinator: the real election, ``Leadership`` (agent plane, reconciler, event compactor)
    and ``AgentSessions``, over the shared store through a ``GatedStore`` a test can cut."""

    def __init__(
        self,
        name: str,
        store: MemoryStore,
        clock: SimClock,
        membership: MembershipConfig,
        rng: random.Random,
        election_ttl: int,
        network: MemoryNetwork,
        peers: Callable[[], list[str]],
    ) -> None:
        """``peers()``: every coordinator's agent address (this one's is ``name``)."""
        self.name = name
        self.clock = clock
        self.link = GatedStore(store)
        self.state = ClusterState(self.link)
        self.election = Election(self.link, name, ttl=election_ttl, clock=clock, rng=rng)
        self.events = EventRecorder(self.state, clock)
        self.agents = AgentPlane(self.state, clock, self.events, membership)
        self.dispatcher = self.agents.dispatcher
        self.reconciler = Reconciler(self.state, SchedulerPlacer(), RandomIds(rng), clock)
        self.sessions = AgentSessions(
            dispatcher=self.dispatcher,
            clock=clock,
            leader_address=self.election.leader,
            agent_endpoints=lambda: [name, *(p for p in peers() if p != name)],
            refused=self._refused,
        )
        self.listener = network.listener(name, self.sessions.serve)
        self.leadership = Leadership(
            self.election,
            clock,
            [
                ("agent plane", self.agents.lead),
                ("reconciler", self.reconciler.lead),
                ("event compactor", self._compact_events),
            ],
            name=name,
        )
        self.task: asyncio.Task[None] | None = None

    async def _refused(self, message: str) -> None:
        log.warning(message)
        await self.events.emit("security", message)

    @property
    def leading(self) -> bool:
        return self.dispatcher.active and self.election.is_leader()

    @property
    def terms(self) -> int:
        return self.leadership.terms

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.election.run())
            tg.create_task(self.leadership.run())
            tg.create_task(self.listener.run())

    async def _compact_events(self, fence: Fence) -> None:
        await EventCompactor(self.link, EVENTS_PREFIX, EventBounds(), self.clock, fence=fence).run()
