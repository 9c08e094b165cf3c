"""What a test sees: the store's cluster state plus each host's containers, and the
invariants of a settled cluster."""

from __future__ import annotations

from dataclasses import dataclass, field

from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.model.node import Node, NodeState
from cloudless.model.replica import DesiredState, Replica, ReplicaState
from cloudless.model.resources import Resources


@dataclass(frozen=True)
class SimView:
    """The store's cluster state at one revision, plus what each host really runs."""

    nodes: dict[str, Node]
    workloads: dict[str, WorkloadRecord]
    replicas: dict[str, Replica]
    containers: dict[str, dict[str, str]]  # node id -> {running container id: workload}
    at: float  # simulated seconds since start
    cut_off: dict[str, str] = field(default_factory=dict)  # node id -> "down" | "partitioned"
    unconnected: frozenset[str] = frozenset()  # agents up but without a session
    leader: str | None = None  # the leading coordinator's name

    def of(self, workload: str) -> list[Replica]:
        return sorted(
            (r for r in self.replicas.values() if r.workload == workload), key=lambda r: r.id
        )

    def running(self, workload: str) -> list[Replica]:
        """Replicas of ``workload`` that should run and are reported running."""
        return [
            r
            for r in self.of(workload)
            if r.desired is DesiredState.RUNNING and r.observed is ReplicaState.RUNNING
        ]

    def on_node(self, node_id: str) -> list[Replica]:
        return sorted(
            (r for r in self.replicas.values() if r.node_id == node_id), key=lambda r: r.id
        )

    def state(self, node_id: str) -> NodeState:
        return self.nodes[node_id].state

    def containers_of(self, workload: str) -> list[str]:
        """Running containers of ``workload`` on all hosts (duplicates count)."""
        return sorted(
            c
            for n, cs in self.containers.items()
            if n not in self.cut_off
            for c, w in cs.items()
            if w == workload
        )

    def dump(self, limit: int = 60) -> str:
        lines = [f"cluster at t={self.at:.2f}s, leader {self.leader or 'none'}:"]
        for name, rec in sorted(self.workloads.items()):
            reps = self.of(name)
            lines.append(
                f"  workload {name} v{rec.version} wants {rec.spec.replicas}"
                f"{' (deleted)' if rec.deleted else ''}: {len(reps)} replicas, "
                f"{len(self.running(name))} running, {len(self.containers_of(name))} containers"
                + (f", unplaced {rec.unplaced}: {rec.unplaced_reason}" if rec.unplaced else "")
            )
        for i, (nid, n) in enumerate(sorted(self.nodes.items())):
            if i >= limit:
                lines.append(f"  ... {len(self.nodes) - limit} more nodes")
                break
            held = " ".join(
                f"{r.id}[{r.desired.value[:4]}/{r.observed.value} v{r.spec_version}]"
                for r in self.on_node(nid)
            )
            ctrs = ",".join(self.containers.get(nid, {})) or "-"
            agent = f" (agent {self.cut_off[nid]})" if nid in self.cut_off else ""
            agent += " (not connected)" if nid in self.unconnected else ""
            lines.append(
                f"  {nid} {n.state.value:9} {n.zone or '-':6} {held or '-'} | run: {ctrs}{agent}"
            )
        return "\n".join(lines)


def problems(view: SimView) -> list[str]:
    """Invariants of a settled cluster; each problem is a sentence naming what is wrong."""
    out: list[str] = []
    if view.leader is None:
        out.append("no coordinator leads")
    out.extend(f"agent of {n} is up but not connected" for n in sorted(view.unconnected))
    specs = {n: r.spec for n, r in view.workloads.items()}
    for name, rec in sorted(view.workloads.items()):
        if rec.deleted:
            continue
        want = rec.spec.replicas
        ready = [
            r for r in view.running(name) if view.nodes[r.node_id].state is not NodeState.FAILED
        ]
        if len(ready) != want:
            out.append(f"{name}: {len(ready)} replicas running, wants {want}")
        stale = [r.id for r in ready if r.spec_version != rec.version]
        if stale:
            out.append(f"{name}: {len(stale)} running replicas not on spec v{rec.version}")
        ctrs = view.containers_of(name)
        if len(ctrs) != want:
            out.append(f"{name}: {len(ctrs)} containers run on reachable hosts, wants {want}")
    used: dict[str, Resources] = {}
    for r in view.replicas.values():
        node = view.nodes.get(r.node_id)
        if r.desired is not DesiredState.RUNNING:
            continue
        if node is None or node.state in (NodeState.FAILED, NodeState.REMOVED):
            state = node.state.value if node else "gone"
            out.append(f"replica {r.id} is assigned to {r.node_id}, which is {state}")
        if r.workload in specs:
            used[r.node_id] = used.get(r.node_id, Resources()) + specs[r.workload].resources
    for nid, u in sorted(used.items()):
        node = view.nodes.get(nid)
        if node is not None and not u.fits(node.allocatable):
            out.append(
                f"node {nid} is over-committed: {u} assigned, {node.allocatable} allocatable"
            )
    for nid, cs in sorted(view.containers.items()):
        if nid in view.cut_off:
            continue  # nobody can tell that host to stop anything
        for c in cs:
            rep = view.replicas.get(c)
            if rep is None or rep.node_id != nid or rep.desired is not DesiredState.RUNNING:
                out.append(f"container {c} runs on {nid} but no replica there wants it")
    return out
