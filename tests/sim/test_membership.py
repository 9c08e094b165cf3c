"""Membership in the simulated cluster: enrollment, detection, false alarms, leader change.

Timings follow the ``MembershipConfig`` and ``Keepalive`` defaults (at <= 1,000 nodes):
heartbeats every 2 s; a stream that ends makes a node offline after ``disconnect_grace_s`` =
0.5 s. The transport ends the stream of a cut link when the coordinator's next keepalive PING
(1 s after the last read) goes unacknowledged for 0.6 s, and the stream of a frozen process
when that PING stays unanswered for 5 s. Silence on a stream the transport keeps open (a hung
agent whose gRPC core still answers PINGs) counts after ``offline_after_s`` = 10 s; offline ->
failed after ``failed_after_s`` = 60 s. The hub ticks every 0.1 s and the harness steps the
clock exactly to each timer, so a deadline is acted on at most 0.1 s late.
"""

from __future__ import annotations

import pytest

from cloudless.coordinator.deciders.membership import MembershipConfig
from cloudless.lib.keepalive import Keepalive
from cloudless.model.node import NodeState
from cloudless.model.replica import ReplicaState
from cloudless.store.errors import Unavailable
from cloudless.testing.sim import SimCluster, SimView, spec

S = NodeState
LATE = 0.1 + 1e-6  # one hub tick


def _sessions(sim: SimCluster) -> set[str]:
    """The nodes with a session on the leader's dispatcher."""
    leader = sim.leader()
    return set() if leader is None else set(leader.dispatcher.sessions)


def all_ready(v: SimView) -> bool:
    return bool(v.nodes) and all(n.state is S.READY for n in v.nodes.values())


async def test_enrolled_nodes_become_ready_on_first_heartbeat() -> None:
    async with SimCluster() as sim:
        agents = await sim.add_agents(5, start=False)
        v = await sim.view()
        assert {n.state for n in v.nodes.values()} == {S.ENROLLING}
        await sim.run_for(10)  # no agent talks: enrolling nodes are never declared offline
        assert {n.state for n in (await sim.view()).nodes.values()} == {S.ENROLLING}
        for a in agents:
            a.start()
        took = await sim.until(all_ready, within=1, what="5 ready nodes", every=0)
        assert took <= 0.1 + 1e-6  # the Hello + first heartbeat go out at once
        assert all(a.stats.intervals == [2.0] for a in agents)
        assert sum("enrolling -> ready (first heartbeat)" in e for e in await sim.events()) == 5


@pytest.mark.parametrize(
    ("max_hb_per_s", "nodes", "interval", "offline_after"),
    [
        # interval = max(0.5, nodes / rate); offline after 2.5 s * interval / 0.5
        (2500.0, 12, 0.5, 2.5),  # 12 / 2500 = 0.005 -> floor 0.5 s
        (10.0, 5, 0.5, 2.5),  # 5 / 10 = 0.5
        (10.0, 12, 1.2, 6.0),  # 12 / 10 = 1.2 s; 2.5 * 1.2 / 0.5 = 6.0 s
        (4.0, 12, 3.0, 15.0),  # 12 / 4 = 3.0 s; 2.5 * 3.0 / 0.5 = 15 s
    ],
)
async def test_heartbeat_interval_stretches_with_cluster_size(
    max_hb_per_s: float, nodes: int, interval: float, offline_after: float
) -> None:
    cfg = MembershipConfig(
        heartbeat_interval_s=0.5, offline_after_s=2.5, max_heartbeats_per_s=max_hb_per_s
    )
    # A hung agent: its gRPC core answers PINGs, so only the heartbeat backstop sees it.
    hung = Keepalive(frozen_limit_ms=10**7)
    async with SimCluster(membership=cfg, keepalive=hung) as sim:
        agents = await sim.add_agents(nodes)
        await sim.until(all_ready, within=2, what="all ready")
        await sim.run_for(2 * interval)
        assert [a.stats.intervals[-1] for a in agents] == [pytest.approx(interval)] * nodes
        # Heartbeats per second at the leader stay under the configured rate (or the floor).
        hb0 = sum(a.stats.heartbeats for a in agents)
        await sim.run_for(10)
        rate = (sum(a.stats.heartbeats for a in agents) - hb0) / 10
        assert rate <= max(max_hb_per_s, nodes / 0.5) * 1.1
        # Detection stretches with the interval: silence longer than the stretched limit.
        victim = agents[0]
        victim.freeze(offline_after + 5)
        took = await sim.until(
            lambda v: v.state(victim.node_id) is S.OFFLINE,
            within=offline_after + 2,
            what="victim offline",
            every=0,
        )
        # The last heartbeat went out up to one interval before the freeze.
        assert offline_after - interval <= took <= offline_after + LATE


async def test_default_interval_at_two_thousand_nodes() -> None:
    """2,000 enrolled nodes (records only) and one live agent: 2,000 / 500 = 4 s."""
    async with SimCluster() as sim:
        await sim.add_agents(1999, start=False, zones=())
        (agent,) = await sim.add_agents(1)
        await sim.until(lambda v: v.state(agent.node_id) is S.READY, within=2, what="ready")
        await sim.run_for(1)
        assert agent.stats.intervals[-1] == pytest.approx(4.0)


async def test_killed_agent_goes_offline_then_failed_and_is_replaced() -> None:
    async with SimCluster() as sim:
        await sim.add_agents(6)
        await sim.apply(spec("web", 6, placement=_spread()))
        await sim.until(lambda v: len(v.running("web")) == 6, within=5, what="6 running")
        v = await sim.view()
        victim = v.running("web")[0].node_id
        lost_id = v.on_node(victim)[0].id
        t0 = sim.now
        await sim.agents[victim].kill()  # stream breaks: disconnect grace applies

        offline = await sim.until(
            lambda v: v.state(victim) is S.OFFLINE, within=3, what="offline", every=0
        )
        assert 0.5 <= offline <= 0.5 + LATE  # disconnect_grace_s

        def replaced(v: SimView) -> bool:
            return len([r for r in v.running("web") if r.node_id != victim]) == 6

        await sim.until(replaced, within=5, what="replacement running", every=0)
        replace_s = sim.now - t0
        assert replace_s <= 0.5 + LATE + 0.5  # offline + one reconcile round + start
        v = await sim.view()
        assert v.replicas[lost_id].observed is ReplicaState.LOST

        failed = await sim.until(
            lambda v: v.state(victim) is S.FAILED, within=62, what="failed", every=0
        )
        assert 60.0 - LATE <= failed <= 60.0 + LATE  # failed_after_s after going offline
        await sim.until(lambda v: lost_id not in v.replicas, within=1, what="lost replica deleted")
        await sim.check()
        print(f"kill: offline {offline:.2f}s, replaced {replace_s:.2f}s, failed +{failed:.2f}s")


async def test_freeze_shorter_than_limit_is_not_an_alarm() -> None:
    async with SimCluster() as sim:
        agents = await sim.add_agents(4)
        await sim.apply(spec("web", 4))
        await sim.until(lambda v: len(v.running("web")) == 4, within=5, what="4 running")
        await sim.run_for(1)
        starts = sum(a.starts for a in agents)
        # The transport keeps a frozen process's stream for 5 s after an unanswered PING;
        # the heartbeat backstop is 10 s: a 1.9 s freeze is invisible.
        agents[1].freeze(1.9)
        for _ in range(40):  # 4 s, checked every 0.1 s
            await sim.run_for(0.1)
            v = await sim.view()
            assert all(n.state is S.READY for n in v.nodes.values()), v.dump()
            assert len(v.of("web")) == 4, v.dump()
        assert sum(a.starts for a in agents) == starts
        assert not [e for e in await sim.events("node") if "offline" in e]


async def test_freeze_longer_than_limit_flaps_without_duplicates() -> None:
    async with SimCluster() as sim:
        agents = await sim.add_agents(4)
        await sim.apply(spec("web", 4))
        await sim.until(lambda v: len(v.running("web")) == 4, within=5, what="4 running")
        starts = sum(a.starts for a in agents)
        victim = agents[2]
        victim.freeze(8.0)
        took = await sim.until(
            lambda v: v.state(victim.node_id) is S.OFFLINE, within=8, what="offline", every=0
        )
        # The PING goes out 0..1 s after the freeze (1 s after the last read), the stream is
        # closed 5 s later, and the node is offline 0.5 s after that.
        assert 5.5 <= took <= 6.5 + LATE
        await sim.until(
            lambda v: v.state(victim.node_id) is S.READY, within=3, what="back", every=0
        )
        await sim.run_for(3)
        await sim.check()
        # One replacement started; the extra replica was stopped, nothing else restarted.
        assert sum(a.starts for a in agents) == starts + 1


async def test_partition_then_heal_leaves_no_duplicates_and_no_mass_restart() -> None:
    async with SimCluster() as sim:
        agents = await sim.add_agents(6)
        await sim.apply(spec("web", 6))
        await sim.until(lambda v: len(v.running("web")) == 6, within=5, what="6 running")
        starts = sum(a.starts for a in agents)
        cut = agents[:2]
        held = {r.id for a in cut for r in (await sim.view()).on_node(a.node_id)}
        for a in cut:
            a.partition()
        took = await sim.until(
            lambda v: all(v.state(a.node_id) is S.OFFLINE for a in cut),
            within=4,
            what="partitioned nodes offline",
            every=0,
        )
        # No FIN arrives: the next PING (0..1 s) goes unacknowledged, the kernel gives up
        # 0.6 s later, and the node is offline 0.5 s after that.
        assert 1.1 <= took <= 2.1 + LATE
        await sim.until(lambda v: len(v.running("web")) == 6, within=3, what="replacements running")
        # The partitioned side kept its containers running all along.
        assert all(a.running() for a in cut)
        await sim.run_for(10)
        for a in cut:
            a.heal()
        await sim.until(lambda v: all_ready(v), within=6, what="healed nodes ready")
        await sim.run_for(3)
        await sim.check("after heal")
        v = await sim.view()
        assert len(v.containers_of("web")) == 6
        # Exactly the len(held) replacements were started; the extras were stopped, not
        # restarted, and no survivor was restarted.
        assert sum(a.starts for a in agents) == starts + len(held)


async def test_partition_longer_than_failed_limit_stops_stale_containers() -> None:
    async with SimCluster() as sim:
        agents = await sim.add_agents(4)
        await sim.apply(spec("web", 4))
        await sim.until(lambda v: len(v.running("web")) == 4, within=5, what="4 running")
        victim = agents[0]
        victim.partition()
        await sim.until(
            lambda v: v.state(victim.node_id) is S.FAILED, within=65, what="failed", every=0.5
        )
        await sim.run_for(1)
        assert victim.running()  # still running its (now deleted) replica's container
        victim.heal()
        await sim.until(
            lambda v: v.state(victim.node_id) is S.READY, within=6, what="back from failed"
        )
        await sim.run_for(2)
        assert not victim.running()  # its empty assignment stopped the stale container
        await sim.check()


async def test_leader_change_gives_grace_and_scheduling_resumes() -> None:
    async with SimCluster(coordinators=2) as sim:
        agents = await sim.add_agents(8)
        await sim.apply(spec("web", 8))
        await sim.until(lambda v: len(v.running("web")) == 8, within=5, what="8 running")
        starts = sum(a.starts for a in agents)
        old = sim.leader()
        assert old is not None
        await sim.crash_brain(old)  # no resignation: its 5 s lease must lapse
        t0 = sim.now
        await sim.until(lambda v: sim.leader() not in (None, old), within=10, what="new leader")
        takeover = sim.now - t0
        assert takeover <= 5.0 + LATE  # the election TTL
        new = sim.leader()
        assert new is not None and new is not old
        await sim.until(
            lambda v: all(a.connected for a in agents),
            within=6,
            what="agents reconnected",
        )
        # Requests to the leader (renewals, workload identities) follow the open stream,
        # not a redirect's hint that named the dead coordinator.
        assert {a.link.coordinator() for a in agents if a.link} == {new.name}
        assert any(a.leader_hint == old.name for a in agents)  # the stale hint the fix skips
        await sim.run_for(8)  # past the 5 s leader grace
        assert not [e for e in await sim.events("node") if "offline" in e]
        assert sum(a.starts for a in agents) == starts  # nothing restarted
        await sim.apply(spec("api", 4))  # scheduling resumes under the new leader
        await sim.until(lambda v: len(v.running("api")) == 4, within=3, what="api running")
        await sim.check()
        print(f"leader change: new leader after {takeover:.2f}s")


def _spread():  # type: ignore[no-untyped-def]
    from cloudless.model.workload import Placement, SpreadConstraint

    return Placement(spread=(SpreadConstraint("zone"),))


async def test_leader_cut_from_store_hands_agents_over_without_alarms() -> None:
    """The leader loses the store (not the agents): its loops fail on the next store call
    (the reconciler's 1 s round at the latest) and drop every session; agents try the other
    coordinator, which leads once the old lease lapses (<= 5 s) and grants 5 s of grace."""
    async with SimCluster(coordinators=2) as sim:
        agents = await sim.add_agents(8)
        await sim.apply(spec("web", 8))
        await sim.until(lambda v: len(v.running("web")) == 8, within=5, what="8 running")
        starts = sum(a.starts for a in agents)
        old = sim.leader()
        assert old is not None
        sim.isolate_brain(old)
        took = await sim.until(
            lambda v: v.leader not in (None, old.name), within=10, what="new leader"
        )
        assert took <= 5.0 + LATE
        assert not old.dispatcher.sessions  # the isolated coordinator serves nobody
        await sim.until(
            lambda v: all(a.connected and a.node_id in _sessions(sim) for a in agents),
            within=6,
            what="agents on the new leader",
        )
        await sim.run_for(10)
        assert not [e for e in await sim.events("node") if "offline" in e]
        assert sum(a.starts for a in agents) == starts
        old.link.cut = False  # the store comes back: the old coordinator follows
        await sim.run_for(5)
        assert sim.leader() is not old
        await sim.check()


async def test_usage_refreshes_are_written_in_batches_and_keep_user_changes() -> None:
    """Every node's usage is refreshed every ``USAGE_REFRESH_S`` = 10 s; the refreshes due
    together go to the store in one transaction (one revision), compared against the revision
    the leader last saw, so a cordon written meanwhile is kept."""
    async with SimCluster() as sim:
        await sim.add_agents(12)
        await sim.until(all_ready, within=1, what="12 ready nodes", every=0)
        await sim.set_node_state("node-0003", S.CORDONED)
        before = {r.name: r.value.last_heartbeat for r in (await sim.state.nodes.list()).records}
        await sim.run_for(11.0)  # one refresh of every node
        after = (await sim.state.nodes.list()).records
        assert all(r.value.last_heartbeat > before[r.name] for r in after)
        # 12 nodes refreshed by at most 2 transactions (the agents started together)
        assert len({r.mod_revision for r in after if r.name != "node-0003"}) <= 2
        assert {r.name: r.value.state for r in after}["node-0003"] is S.CORDONED


async def test_a_broken_store_watch_restarts_one_leader_loop_not_every_session() -> None:
    """The hub's nodes and replicas watches break (etcd overloaded): each loop starts again
    on its own after ``LOOP_RESTART_S`` = 1 s. No agent loses its session (at thousands of
    nodes, dropping them all is a reconnect storm), and changes made meanwhile still arrive:
    a cordon reaches membership, a new workload reaches the agents."""
    async with SimCluster() as sim:
        agents = await sim.add_agents(4)
        await sim.until(all_ready, within=1, what="4 ready nodes", every=0)
        leader = sim.leader()
        assert leader is not None
        sessions = [a.stats.sessions for a in agents]
        broke = sim.store.break_watches("/cloudless/nodes/", Unavailable("watch broken"))
        broke += sim.store.break_watches("/cloudless/replicas/", Unavailable("watch broken"))
        assert broke >= 2
        await sim.set_node_state("node-0001", S.CORDONED)  # while the nodes watch is down
        await sim.apply(spec("web", 3))
        await sim.until(lambda v: len(v.running("web")) == 3, within=5, what="3 running")
        await sim.run_for(2.0)
        assert leader.agents.liveness.membership.state("node-0001") is S.CORDONED
        assert [a.stats.sessions for a in agents] == sessions
        assert sim.leader() is leader


async def test_a_transition_and_its_event_are_one_transaction() -> None:
    """The leader writes a node's new state and its event together, compared against the
    record its nodes watch last saw: one round trip on the way to a replacement."""
    async with SimCluster() as sim:
        agents = await sim.add_agents(3)
        await sim.until(all_ready, within=1, what="3 ready nodes", every=0)
        victim = agents[0].node_id
        await agents[0].kill()
        await sim.until(
            lambda v: v.nodes[victim].state is S.OFFLINE, within=2, what="victim offline"
        )
        rec = await sim.state.nodes.get(victim)
        assert rec is not None
        offline = [
            e
            for e in (await sim.state.events.list()).records
            if e.value.get("node") == victim and e.value.get("state") == "offline"
        ]
        assert len(offline) == 1 and offline[0].mod_revision == rec.mod_revision
