"""Agents' overlay reports on the real agent stream (``Link`` -> the leader's dispatcher): sent
with a heartbeat when they change and every 30 s otherwise, refused by field when malformed,
forgotten with the session."""

from __future__ import annotations

from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.network.overlay_state import OverlayReport, Tunnel
from cloudless.testing.sim import SimCluster

LH = "100.127.255.254"


def report(*peers: tuple[str, str]) -> pb.OverlayReport:
    return pb.OverlayReport(
        tunnels=[pb.OverlayTunnel(peer=p, remote=r, relays=[] if r else [LH]) for p, r in peers]
    )


async def test_reports_reach_the_leader_and_go_with_the_session() -> None:
    async with SimCluster() as sim:
        [a] = await sim.add_agents(1, start=False)
        current: list[pb.OverlayReport | None] = [report((LH, "192.168.1.1:4242"))]
        a.start()
        assert a.link is not None
        a.link.overlay = lambda: current[0]
        leader = sim.leader()
        assert leader is not None
        reports = leader.dispatcher.overlay_reports

        await sim.until(lambda v: a.node_id in reports, within=5, what="the first report")
        assert reports[a.node_id] == OverlayReport((Tunnel(LH, "192.168.1.1:4242"),))

        current[0] = report((LH, "192.168.1.1:4242"), ("100.64.0.2", ""))  # a relayed peer
        await sim.run_for(2.1)  # the next heartbeat (every 2 s) carries the change
        assert reports[a.node_id].tunnels[1] == Tunnel("100.64.0.2", "", (LH,))

        current[0] = report(("not-an-ip", ""))  # a malformed report is dropped, not kept
        await sim.run_for(2.1)
        assert a.node_id not in reports

        current[0] = report((LH, "192.168.1.1:4242"))
        await sim.run_for(2.1)
        assert a.node_id in reports
        await a.kill()  # the session ends: the leader forgets what it reported
        await sim.run_for(2)
        assert a.node_id not in reports
