"""``AgentPlane``: the leader's agent-facing parts, built and run as one term's work.

One ``NodeView`` (the nodes watch) feeds ``Liveness`` and the ``Dispatcher``. The three start
and stop together with this coordinator's term (``lead``) because their order matters: the
nodes are listed and judged before any loop starts, and the dispatcher serves no agent
before the workloads and then the replicas are loaded. Each loop restarts alone after a
store error (``keep``): ending the term's work instead would drop every agent's session, and
at thousands of nodes their reconnects are a storm that keeps the store slow. Only a broken
fence (another leader) ends it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from cloudless.coordinator.deciders.membership import MembershipConfig
from cloudless.coordinator.dispatcher.dispatcher import Dispatcher, NotLeader
from cloudless.coordinator.eventlog.recorder import EventRecorder
from cloudless.coordinator.loops.liveness import Liveness
from cloudless.coordinator.state.cluster import ClusterState
from cloudless.coordinator.state.node_view import NodeView
from cloudless.lib.clock import Clock
from cloudless.store.errors import Fenced, StoreError
from cloudless.store.fence import Fence

log = logging.getLogger("cloudless.coordinator.wiring.agent_plane")


class AgentPlane:
    # How long a loop that failed on a store error waits before it starts again.
    LOOP_RESTART_S = 1.0

    def __init__(
        self,
        state: ClusterState,
        clock: Clock,
        events: EventRecorder,
        config: MembershipConfig | None = None,
        tick_s: float = 0.1,
    ) -> None:
        self.clock = clock
        self.nodes = NodeView(state)
        self.liveness = Liveness(state, clock, self.nodes, events, config, tick_s)
        self.dispatcher = Dispatcher(state, clock, self.nodes, self.liveness, events)
        self.nodes.listen(self.liveness)
        self.nodes.listen(self.dispatcher)

    async def lead(self, fence: Fence) -> None:
        """Serve agents until cancelled (run while this coordinator is the leader)."""
        self.dispatcher.start(fence)
        try:
            self.liveness.start(fence, await self.nodes.load())
            async with asyncio.TaskGroup() as tg:
                for loop in (
                    self.dispatcher.watch_replicas,
                    self.dispatcher.watch_workloads,
                    self.nodes.follow,
                    self.liveness.tick_loop,
                    self.dispatcher.push_loop,
                    self.liveness.reliability_loop,
                    self.liveness.usage_loop,
                ):
                    tg.create_task(self.keep(loop))
        finally:
            self.liveness.stop()
            self.nodes.stop()
            self.dispatcher.stop()

    async def keep(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Run one leader loop; a store error (a slow or briefly unavailable etcd) restarts
        that loop alone. Only a broken fence (another leader) ends it."""
        while True:
            try:
                await loop()
                return
            except (Fenced, NotLeader):
                raise
            except StoreError as e:
                log.warning("leader loop %s failed (%s); restarting it", loop.__name__, e)
                await self.clock.sleep(self.LOOP_RESTART_S)
