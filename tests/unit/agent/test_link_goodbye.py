"""A clean stop's goodbye is the link's last word: nothing the agent does while it stops (a
replica status changing, say) sends a heartbeat after it, which would tell the coordinator
the node is back and end the hold it just asked for."""

from __future__ import annotations

import asyncio
import contextlib
import random

from cloudless.agent.identity import AgentIdentity
from cloudless.agent.link import Link, Sample
from cloudless.agent.supervisor import Supervisor
from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.lib.clock import SystemClock
from cloudless.model.node import NodeConditions
from cloudless.model.resources import Resources
from cloudless.runtime.fake import FakeRuntime
from cloudless.testing.sim.agent import MemoryAssignmentFile
from cloudless.transport.channel import ChannelError, CoordinatorEnd
from cloudless.transport.memory import MemoryNetwork


async def test_no_heartbeat_follows_the_goodbye(tmp_path) -> None:  # type: ignore[no-untyped-def]
    clock = SystemClock()
    net = MemoryNetwork(clock)
    got: list[str] = []
    link_box: list[Link] = []

    async def coordinator(node_id: str, end: CoordinatorEnd) -> None:
        with contextlib.suppress(ChannelError):
            while True:
                msg = await end.receive()
                kind = msg.WhichOneof("kind")
                got.append(kind)
                if kind == "heartbeat":
                    await end.send(
                        pb.CoordinatorMessage(ack=pb.HeartbeatAck(seq=msg.heartbeat.seq))
                    )
                if kind == "goodbye":
                    # the agent's state changes while it stops (its replicas' tasks end)
                    link_box[0].on_change()

    runtime = FakeRuntime(clock=clock)
    supervisor = Supervisor(runtime, clock, lambda: None, volumes_root=tmp_path / "volumes")
    link = Link(
        AgentIdentity("n1", b"", b"", b"", coordinators=["c1"]),
        supervisor,
        runtime,
        pb.NodeFacts,
        lambda: Sample(Resources(), NodeConditions()),
        clock,
        random.Random(1),
        MemoryAssignmentFile(),
        dialer=net.dialer("n1"),
        goodbye_hold_s=20.0,
    )
    link_box.append(link)
    async with asyncio.TaskGroup() as tg:
        listening = tg.create_task(net.listener("c1", coordinator).run())
        running = tg.create_task(link.run())
        await asyncio.wait_for(link.connected.wait(), 5)
        running.cancel()  # what SIGTERM does
        await asyncio.gather(running, return_exceptions=True)
        await asyncio.sleep(0.2)  # anything sent after the goodbye has arrived by now
        listening.cancel()
    assert "goodbye" in got
    assert got[got.index("goodbye") + 1 :] == []
