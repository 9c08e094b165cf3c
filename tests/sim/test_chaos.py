"""Random fault sequences on a dozen agents and two coordinators, seeded so that every run
repeats: after the faults are healed and the cluster has settled, the invariants hold
(``cloudless.testing.sim.problems``): every workload runs exactly its replica count (in
the store and on the reachable hosts), no node is over-committed, no replica is assigned to a
failed or removed node, and no host runs a container no replica wants."""

from __future__ import annotations

import os
import random
from dataclasses import replace
from types import MappingProxyType

import pytest

from cloudless.model.node import NodeState
from cloudless.model.workload import Placement, SpreadConstraint
from cloudless.runtime.fake import FakeBehavior
from cloudless.testing.sim import SimCluster, SimError, spec

SEEDS = list(
    range(int(os.environ.get("SIM_SEEDS_FROM", "0")), int(os.environ.get("SIM_SEEDS_TO", "8")))
)


async def _scenario(seed: int) -> tuple[float, list[str]]:
    rng = random.Random(seed)
    journal: list[str] = []
    sim = SimCluster(coordinators=2, seed=seed)
    async with sim:
        agents = await sim.add_agents(rng.randint(10, 16))
        workloads = {
            "web": spec("web", 6, placement=Placement(spread=(SpreadConstraint("zone"),))),
            "api": spec("api", 4, cpu=500, memory=512 << 20),
            "db": spec("db", 2, placement=Placement(max_per_node=1)),
        }
        for w in workloads.values():
            await sim.apply(w)
        await sim.until(
            lambda v: all(len(v.running(n)) == w.replicas for n, w in workloads.items()),
            within=10,
            what="initial placement",
        )

        def note(what: str) -> None:
            journal.append(f"t={sim.now:7.2f} {what}")

        for _ in range(rng.randint(6, 14)):
            a = rng.choice(agents)
            fault = rng.choice(
                ["kill", "crash_host", "restart", "freeze", "partition", "heal", "container",
                 "scale", "drain", "uncordon", "leader", "slow_pull", "update"]
            )  # fmt: skip
            if fault == "kill" and a.up:
                await a.kill()
            elif fault == "crash_host" and a.up:
                await a.crash_host()
            elif fault == "restart":
                await a.restart() if a.up else a.start()
            elif fault == "freeze":
                a.freeze(rng.uniform(0.5, 6.0))
            elif fault == "partition":
                a.partition()
            elif fault == "heal":
                a.heal()
            elif fault == "container" and a.up and a.running() and a.runtime is not None:
                a.runtime.kill_externally(rng.choice(sorted(a.running())), exit_code=1)
            elif fault == "scale" and sim.leader() is not None:
                name = rng.choice(sorted(workloads))
                n = rng.randint(1, 8 if name != "db" else 3)
                await sim.scale(name, n)
                workloads[name] = spec_with(workloads[name], n)
            elif fault in ("drain", "uncordon") and sim.leader() is not None:
                target = NodeState.DRAINING if fault == "drain" else NodeState.READY
                try:
                    await sim.set_node_state(a.node_id, target)
                except SimError:
                    continue  # not a legal move from the node's current state
            elif fault == "leader" and sim.leader() is not None:
                old = sim.leader()
                assert old is not None
                await sim.crash_brain(old)
                note(f"leader {old.name} crashed")
                await sim.run_for(rng.uniform(0.0, 3.0))
                sim.replace_brain(old)
                note(f"{old.name} restarted")
                continue
            elif fault == "update" and sim.leader() is not None:
                name = rng.choice(sorted(workloads))
                w = workloads[name]
                workloads[name] = replace(w, env=MappingProxyType({"V": str(sim.now)}))
                await sim.apply(workloads[name])
                note(f"update {name}")
                await sim.run_for(rng.choice([0.2, 1.0, 3.0]))
                continue
            elif fault == "slow_pull":
                a.set_behavior(FakeBehavior(pull_delay=rng.uniform(1, 8)))
                a.host.images.clear()
            else:
                continue
            note(f"{fault} {a.node_id}")
            await sim.run_for(rng.choice([0.2, 1.0, 3.0, 8.0, 70.0]))

        note("heal everything")
        for a in agents:
            a.heal()
            a.frozen_until = -1.0
            if not a.up:
                a.start()
        await sim.until(lambda v: v.leader is not None, within=15, what="a leader after the faults")
        for nid, n in (await sim.view()).nodes.items():
            if n.state in (NodeState.DRAINING, NodeState.CORDONED):
                await sim.set_node_state(nid, NodeState.READY)
        try:
            took = await sim.until(lambda v: not _problems(v), within=90, what="settled", every=0.5)
            await sim.run_for(5)  # and stays settled
            await sim.check(f"seed {seed}")
        except SimError as e:
            raise SimError(f"seed {seed}, faults:\n" + "\n".join(journal) + f"\n{e}") from None
        note(f"settled after {took:.1f}s")
    return took, journal


def _problems(v):  # type: ignore[no-untyped-def]
    from cloudless.testing.sim import problems

    return problems(v)


def spec_with(w, replicas: int):  # type: ignore[no-untyped-def]
    return replace(w, replicas=replicas)


@pytest.mark.parametrize("seed", SEEDS)
async def test_random_faults_heal_to_a_consistent_cluster(seed: int) -> None:
    took, journal = await _scenario(seed)
    print(f"seed {seed}: {len(journal) - 2} faults; settled {took:.1f}s after healing")
