"""Workload life cycle in the simulated cluster: placement, spread, scaling, deletion, rolling
updates, drain and cordon, agent restarts, restart policies and slow pulls."""

from __future__ import annotations

from collections import Counter

import pytest

from cloudless.model.node import NodeState
from cloudless.model.replica import DesiredState, ReplicaState
from cloudless.model.workload import (
    Placement,
    RestartMode,
    RestartPolicy,
    SpreadConstraint,
)
from cloudless.runtime.fake import FakeBehavior
from cloudless.testing.sim import SimCluster, SimView, spec

S = NodeState
R = ReplicaState
SPREAD = Placement(spread=(SpreadConstraint("zone"),))


def zones(v: SimView, workload: str) -> Counter[str]:
    return Counter(v.nodes[r.node_id].zone for r in v.running(workload))


async def test_apply_places_and_runs_spread_over_zones() -> None:
    async with SimCluster() as sim:
        agents = await sim.add_agents(9)  # zones a, b, c dealt round-robin: 3 nodes each
        await sim.apply(spec("web", 6, placement=SPREAD))
        took = await sim.until(lambda v: len(v.running("web")) == 6, within=5, what="6 running")
        assert took <= 0.5  # one reconcile round, a push, an instant pull and start
        v = await sim.view()
        assert zones(v, "web") == {"zone-a": 2, "zone-b": 2, "zone-c": 2}  # 6 / 3 zones
        # What the store says runs is what the hosts run.
        assert sorted(r.id for r in v.running("web")) == v.containers_of("web")
        assert sum(a.starts for a in agents) == 6
        await sim.check()


async def test_scale_up_and_down_keeps_running_replicas() -> None:
    async with SimCluster() as sim:
        agents = await sim.add_agents(6)
        await sim.apply(spec("web", 3))
        await sim.until(lambda v: len(v.running("web")) == 3, within=5, what="3 running")
        first = {r.id for r in (await sim.view()).running("web")}
        await sim.scale("web", 8)
        await sim.until(lambda v: len(v.running("web")) == 8, within=5, what="8 running")
        assert first <= {r.id for r in (await sim.view()).running("web")}  # none replaced
        await sim.scale("web", 2)
        await sim.until(
            lambda v: len(v.running("web")) == 2 and len(v.containers_of("web")) == 2,
            within=5,
            what="scaled down to 2",
        )
        assert sum(a.starts for a in agents) == 8  # 3 + 5 starts, the 6 extras only stopped
        await sim.check()


async def test_delete_stops_every_container() -> None:
    async with SimCluster() as sim:
        await sim.add_agents(4)
        await sim.apply(spec("web", 5))
        await sim.apply(spec("db", 2))
        await sim.until(
            lambda v: len(v.running("web")) == 5 and len(v.running("db")) == 2,
            within=5,
            what="all running",
        )
        await sim.delete("web")
        took = await sim.until(
            lambda v: (
                not v.containers_of("web")
                and all(r.desired is DesiredState.STOPPED for r in v.of("web"))
            ),
            within=5,
            what="web stopped",
        )
        assert took <= 1
        v = await sim.view()
        assert len(v.running("db")) == 2  # the other workload is untouched
        await sim.check()


async def test_rolling_update_goes_in_batches_of_a_quarter() -> None:
    async with SimCluster() as sim:
        agents = await sim.add_agents(8)
        await sim.apply(spec("web", 8, image="web:v1"))
        await sim.until(lambda v: len(v.running("web")) == 8, within=5, what="8 running")
        for a in agents:  # the new image takes 2 s to pull: each batch is visible
            a.set_behavior(FakeBehavior(pull_delay=2.0), image="web:v2")
        rec = await sim.apply(spec("web", 8, image="web:v2"))
        assert rec.version == 2
        most_in_flight = 0
        least_running = 8

        def done(v: SimView) -> bool:
            nonlocal most_in_flight, least_running
            new = [r for r in v.of("web") if r.spec_version == 2]
            in_flight = [r for r in new if r.observed is not R.RUNNING]
            most_in_flight = max(most_in_flight, len(in_flight))
            least_running = min(least_running, len(v.running("web")))
            return len(new) == 8 and not in_flight

        took = await sim.until(done, within=60, what="rolled out", every=0.1)
        # batch = max(1, 8 // 4) = 2 replicas at a time; each batch pulls for 2 s and must
        # then run (ready, no readiness check) min_ready = 10 s before the next goes:
        # 3 x (2 + 10) + 2 = 38 s
        assert most_in_flight == 2
        assert least_running >= 6
        assert 36.0 <= took <= 42.0
        await sim.check()


async def test_drain_replaces_first_then_stops() -> None:
    async with SimCluster() as sim:
        agents = await sim.add_agents(4)
        await sim.apply(spec("web", 4, placement=Placement(max_per_node=2)))
        await sim.until(lambda v: len(v.running("web")) == 4, within=5, what="4 running")
        v = await sim.view()
        target = v.running("web")[0].node_id
        drained = {r.id for r in v.on_node(target)}
        for a in agents:  # replacements take 1 s to pull, so the order is visible
            a.set_behavior(FakeBehavior(pull_delay=1.0), image="busybox:latest")
            a.host.images.clear()
        await sim.set_node_state(target, S.DRAINING)
        fewest = 99

        def drained_out(v: SimView) -> bool:
            nonlocal fewest
            fewest = min(fewest, len(v.containers_of("web")))
            return not v.containers[target] and len(v.running("web")) == 4

        took = await sim.until(drained_out, within=10, what="drained", every=0)
        assert fewest >= 4  # never fewer than 4 running: replacements came first
        assert took >= 1.0  # the replacements' 1 s pull came before the stop
        v = await sim.view()
        assert all(v.replicas[r].desired is DesiredState.STOPPED for r in drained)
        await sim.scale("web", 6)
        await sim.until(lambda v: len(v.running("web")) == 6, within=5, what="6 running")
        assert not [r for r in (await sim.view()).on_node(target) if r.id not in drained]
        await sim.check()


async def test_cordon_takes_no_new_placements_but_keeps_running() -> None:
    async with SimCluster() as sim:
        await sim.add_agents(3)
        await sim.apply(spec("web", 3, placement=Placement(max_per_node=2)))
        await sim.until(lambda v: len(v.running("web")) == 3, within=5, what="3 running")
        v = await sim.view()
        target = v.running("web")[0].node_id
        before = {r.id for r in v.on_node(target)}
        await sim.set_node_state(target, S.CORDONED)
        await sim.scale("web", 5)  # 5 replicas, 2 per node max, one node cordoned
        await sim.until(lambda v: len(v.running("web")) == 5, within=5, what="5 running")
        v = await sim.view()
        assert {r.id for r in v.on_node(target)} == before  # kept, nothing added
        await sim.run_for(5)  # cordon is not an alarm either
        v = await sim.view()
        assert v.state(target) is S.CORDONED
        await sim.check()


async def test_agent_restart_adopts_containers() -> None:
    async with SimCluster() as sim:
        agents = await sim.add_agents(3)
        await sim.apply(spec("web", 6))
        await sim.until(lambda v: len(v.running("web")) == 6, within=5, what="6 running")
        starts = sum(a.starts for a in agents)
        for a in agents:
            await a.restart()  # stream breaks; the new process reconnects at once
        await sim.run_for(5)
        v = await sim.view()
        assert all(n.state is S.READY for n in v.nodes.values()), v.dump()
        assert sum(a.starts for a in agents) == starts  # adopted, not restarted
        assert len(v.running("web")) == 6
        await sim.check()


async def test_on_failure_restarts_with_backoff() -> None:
    policy = RestartPolicy(RestartMode.ON_FAILURE, backoff_base_s=1.0, backoff_cap_s=8.0)
    async with SimCluster() as sim:
        (agent,) = await sim.add_agents(1)
        agent.set_behavior(FakeBehavior(run_for=1.0, exit_code=3), image="crashy")
        await sim.apply(spec("crashy", 1, image="crashy", restart=policy))
        await sim.until(lambda v: len(v.of("crashy")) == 1, within=2, what="placed")
        t0 = sim.now
        await sim.run_for(20)
        (r,) = (await sim.view()).of("crashy")
        # Each incarnation runs 1 s; delays 1, 2, 4, 8, 8 s (base 1 s doubling, cap 8 s):
        # starts at 0, 2, 5, 10, 19 -> 5 starts and 4 restarts within 20 s.
        assert agent.starts == 5, (agent.starts, sim.now - t0)
        assert r.restarts == 4
        assert r.exit_code == 3 or r.observed is R.RUNNING
        assert len((await sim.view()).of("crashy")) == 1  # restarted in place, not replaced


async def test_on_failure_does_not_restart_a_clean_exit() -> None:
    policy = RestartPolicy(RestartMode.ON_FAILURE)
    async with SimCluster() as sim:
        (agent,) = await sim.add_agents(1)
        agent.set_behavior(FakeBehavior(run_for=1.0, exit_code=0), image="job")
        await sim.apply(spec("job", 1, image="job", restart=policy))
        await sim.until(
            lambda v: [r.observed for r in v.of("job")] == [R.EXITED], within=5, what="exited"
        )
        await sim.run_for(10)
        (r,) = (await sim.view()).of("job")
        assert (r.observed, r.exit_code, agent.starts) == (R.EXITED, 0, 1)


async def test_never_stays_failed_and_is_not_replaced() -> None:
    policy = RestartPolicy(RestartMode.NEVER)
    async with SimCluster() as sim:
        agents = await sim.add_agents(2)
        for a in agents:
            a.set_behavior(FakeBehavior(run_for=1.0, exit_code=2), image="once")
        await sim.apply(spec("once", 1, image="once", restart=policy))
        await sim.until(
            lambda v: [r.observed for r in v.of("once")] == [R.FAILED], within=5, what="failed"
        )
        await sim.run_for(20)
        v = await sim.view()
        (r,) = v.of("once")
        assert (r.observed, r.exit_code, r.desired) == (R.FAILED, 2, DesiredState.RUNNING)
        assert sum(a.starts for a in agents) == 1


async def test_slow_pull_reports_pulling_then_running() -> None:
    async with SimCluster() as sim:
        (agent,) = await sim.add_agents(1)
        agent.set_behavior(FakeBehavior(pull_delay=5.0), image="big")
        await sim.apply(spec("big", 1, image="big"))
        await sim.until(
            lambda v: [r.observed for r in v.of("big")] == [R.PULLING], within=2, what="pulling"
        )
        took = await sim.until(lambda v: len(v.running("big")) == 1, within=8, what="running")
        assert 4.5 <= took <= 5.5  # the 5 s pull
        await sim.run_for(10)  # a slow pull is not a failure: no second copy
        assert len((await sim.view()).of("big")) == 1


@pytest.mark.parametrize("flow", ["scale-down", "delete", "drain"])
async def test_stopped_replica_records_are_removed(flow: str) -> None:
    async with SimCluster() as sim:
        await sim.add_agents(4)
        await sim.apply(spec("web", 4))
        await sim.until(lambda v: len(v.running("web")) == 4, within=5, what="4 running")
        if flow == "scale-down":
            await sim.scale("web", 1)
            done = lambda v: len(v.of("web")) == 1  # noqa: E731
        elif flow == "delete":
            await sim.delete("web")
            done = lambda v: "web" not in v.workloads and not v.of("web")  # noqa: E731
        else:
            target = (await sim.view()).running("web")[0].node_id
            await sim.set_node_state(target, S.DRAINING)
            done = lambda v: not v.on_node(target) and len(v.of("web")) == 4  # noqa: E731
        await sim.until(done, within=10, what=f"{flow}: stopped replicas' records removed")


async def test_lost_replica_does_not_block_its_replacement_by_spread() -> None:
    # Zones: a = {n0}, b = {n1, n2, n3}, c = {n4}; 4 replicas, max_skew 1, max 1 per node:
    # the only layout is a:1, b:2, c:1. Lose a b node: the replacement must go to the free
    # b node (a:1, b:2, c:1 again). Counting the lost replica, b would hold 3 -> skew 2.
    async with SimCluster() as sim:
        await sim.add_agents(5, zones=("zone-a", "zone-b", "zone-b", "zone-b", "zone-c"))
        placement = Placement(spread=(SpreadConstraint("zone"),), max_per_node=1)
        await sim.apply(spec("web", 4, placement=placement))
        await sim.until(lambda v: len(v.running("web")) == 4, within=5, what="4 running")
        v = await sim.view()
        victim = next(r.node_id for r in v.running("web") if v.nodes[r.node_id].zone == "zone-b")
        await sim.agents[victim].crash_host()
        await sim.until(
            lambda v: len([r for r in v.running("web") if r.node_id != victim]) == 4,
            within=10,
            what="replacement on the free zone-b node",
        )


async def test_broken_rollout_rolls_back_after_the_first_batch() -> None:
    async with SimCluster() as sim:
        agents = await sim.add_agents(8)
        await sim.apply(spec("web", 8, image="web:v1"))
        await sim.until(lambda v: len(v.running("web")) == 8, within=5, what="8 running")
        first = {cid for a in agents for cid in a.running()}
        starts = sum(a.starts for a in agents)
        for a in agents:  # v2 dies 0.5 s after every start
            a.set_behavior(FakeBehavior(run_for=0.5, exit_code=1), image="web:v2")
        await sim.apply(spec("web", 8, image="web:v2"))
        # batch = max(1, 8 // 4) = 2: the first batch fails (exit 1, then restarts), the
        # roll-out rolls back: version 3 runs web:v1 again, in 4 batches of 2, each waiting
        # min_ready = 10 s (no readiness check): about 4 x 10 s.
        took = await sim.until(
            lambda v: (
                v.workloads["web"].version == 3
                and len([r for r in v.running("web") if r.spec_version == 3 and r.ready]) == 8
            ),
            within=60,
            what="rolled back to web:v1",
        )
        assert took <= 50.0
        v = await sim.view()
        rec = v.workloads["web"]
        assert rec.spec.image == "web:v1" and rec.rollout.rollback_of == 2
        assert rec.history[-1].version == 2 and rec.history[-1].spec.image == "web:v2"
        # Only the 2 replicas of the failed batch ran web:v2; the other 6 were relabelled to
        # version 3 in place (same spec: no restart), the 2 restarted once more on web:v1.
        assert len(first & {cid for a in agents for cid in a.running()}) == 8  # same ids
        v2_starts = sum(a.starts for a in agents) - starts
        assert 2 + 2 <= v2_starts <= 2 * 4, v2_starts  # 2 on v2 (+ their restarts), 2 on v1
        events = await sim.events("rollout")
        assert any("roll-out of web version 2 failed (web-" in e for e in events), events


async def test_scale_to_zero_stops_everything() -> None:
    async with SimCluster() as sim:
        await sim.add_agents(3)
        await sim.apply(spec("web", 5))
        await sim.until(lambda v: len(v.running("web")) == 5, within=5, what="5 running")
        await sim.scale("web", 0)
        await sim.until(lambda v: not v.containers_of("web"), within=3, what="all stopped")
        await sim.check()


async def test_removed_node_is_refused_and_its_replicas_replaced() -> None:
    async with SimCluster() as sim:
        await sim.add_agents(4)
        await sim.apply(spec("web", 4))
        await sim.until(lambda v: len(v.running("web")) == 4, within=5, what="4 running")
        v = await sim.view()
        victim = v.running("web")[0].node_id
        await sim.set_node_state(victim, S.REMOVED)
        took = await sim.until(
            lambda v: not v.on_node(victim) and len(v.running("web")) == 4,
            within=5,
            what="replaced off the removed node",
        )
        assert took <= 1.0  # no grace for a removal: the next reconcile round
        await sim.run_for(2)
        agent = sim.agents[victim]
        assert not agent.connected
        assert "not a member of this cluster" in agent.stats.refused
        # The hub sends a removed node an empty assignment before closing its stream:
        # it stops its containers rather than leaving them unmanaged.
        assert len(agent.running()) == 0


async def test_drained_node_becomes_cordoned() -> None:
    async with SimCluster() as sim:
        await sim.add_agents(3)
        await sim.apply(spec("web", 3))
        await sim.until(lambda v: len(v.running("web")) == 3, within=5, what="3 running")
        target = (await sim.view()).running("web")[0].node_id
        await sim.set_node_state(target, S.DRAINING)
        await sim.until(lambda v: not v.containers[target], within=5, what="drained")
        await sim.until(lambda v: v.state(target) is S.CORDONED, within=10, what="cordoned")
