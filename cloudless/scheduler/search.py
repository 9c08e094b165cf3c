"""Bounded search over whole plans: the greedy placement made once, then tried again in a few
other ways when it falls short, keeping the best. Shared by the engine and the reference
(it only orders groups and chooses among plans; every placement is theirs).

Rules:

* groups are placed largest first, by the sum of their cpu, memory and disk shares of the
  largest node (``sum_size``); ties keep the input order;
* the packers (``first_fit``, ``best_fit``) also try the dominant-share order
  (``dominant_size``) and keep the plan with fewer unplaced replicas, then fewer nodes;
* a plan that leaves replicas unplaced is repaired, at most ``MAX_REPAIRS`` attempts: the
  unplaced groups placed first (all of them, then each alone), and a group with required
  affinity to itself pinned, in turn, to each of its ``PIN_DOMAINS`` roomiest domains (so
  its first replica cannot trap the rest on a small device). A repair is adopted only when
  it places every replica, so reasons for what stays unplaced are always the first plan's;
* ``score`` plans that are complete are returned as made (no extra work).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from cloudless.model.node import Node, NodeState
from cloudless.model.workload import WorkloadSpec
from cloudless.scheduler.config import Strategy
from cloudless.scheduler.plan import Plan

Pin = tuple[str, str]  # (topology key, value): the group may only use nodes in that domain
Pins = Mapping[int, Pin]  # group index (in the caller's list) -> its pin
Attempt = Callable[[Sequence[int], Pins], Plan]

MAX_REPAIRS = 8
PIN_DOMAINS = 3


def _tops(nodes: Sequence[Node]) -> list[float]:
    return [max((float(v) for v in (_dims(x)[d] for x in nodes)), default=0.0) for d in range(3)]


def _dims(x: Node) -> tuple[int, int, int]:
    a = x.allocatable
    return (a.cpu_millis, a.memory_bytes, a.disk_bytes)


def sum_size(tops: Sequence[float], spec: WorkloadSpec) -> float:
    r = spec.resources
    out = 0.0
    for d, v in enumerate((r.cpu_millis, r.memory_bytes, r.disk_bytes)):
        if v > 0 and tops[d] > 0:
            out = out + v / tops[d]
    return out


def dominant_size(tops: Sequence[float], spec: WorkloadSpec) -> float:
    r = spec.resources
    out = 0.0
    for d, v in enumerate((r.cpu_millis, r.memory_bytes, r.disk_bytes)):
        if v > 0 and tops[d] > 0:
            out = max(out, v / tops[d])
    return out


def orders(
    nodes: Sequence[Node], groups: Sequence[tuple[WorkloadSpec, int]]
) -> tuple[list[int], list[int]]:
    """Group indices largest first by ``sum_size``, and by ``dominant_size``."""
    tops = _tops(nodes)
    idx = range(len(groups))
    by_sum = sorted(idx, key=lambda i: -sum_size(tops, groups[i][0]))
    by_dom = sorted(idx, key=lambda i: -dominant_size(tops, groups[i][0]))
    return by_sum, by_dom


def self_affinity_keys(spec: WorkloadSpec) -> list[str]:
    return [
        t.topology_key
        for t in spec.placement.required_workload_affinity
        if t.workload == spec.name and not t.anti
    ]


def pin_domains(nodes: Sequence[Node], spec: WorkloadSpec, key: str) -> list[str]:
    """The ``PIN_DOMAINS`` domains of ``key`` whose ready nodes could hold the most replicas
    of ``spec`` by allocatable (ignoring load), roomiest first, ties by name."""
    want = (spec.resources.cpu_millis, spec.resources.memory_bytes, spec.resources.disk_bytes)
    room: dict[str, int] = {}
    for x in nodes:
        v = x.label(key)
        if v is None or x.state is not NodeState.READY:
            continue
        have = _dims(x)
        fits = min((have[d] // want[d] for d in range(3) if want[d] > 0), default=1_000_000)
        room[v] = room.get(v, 0) + fits
    ranked = sorted(room, key=lambda v: (-room[v], v))
    return [v for v in ranked if room[v] > 0][:PIN_DOMAINS]


def _unplaced(plan: Plan) -> int:
    return sum(u.count for u in plan.unplaced)


def search(
    nodes: Sequence[Node],
    groups: Sequence[tuple[WorkloadSpec, int]],
    strategy: Strategy,
    attempt: Attempt,
) -> Plan:
    """The best plan found (see the module rules); ``attempt(order, pins)`` makes one."""
    by_sum, by_dom = orders(nodes, groups)
    best = attempt(by_sum, {})
    packer = strategy is not Strategy.SCORE
    if packer and by_dom != by_sum:
        alt = attempt(by_dom, {})
        if (_unplaced(alt), len(alt.nodes_used())) < (_unplaced(best), len(best.nodes_used())):
            best = alt
    if best.complete:
        return best
    failed = {u.workload for u in best.unplaced}
    stuck = [i for i in by_sum if groups[i][0].name in failed]
    rest = [i for i in by_sum if i not in stuck]
    tries: list[tuple[list[int], dict[int, Pin]]] = []
    if rest:
        tries.append((stuck + rest, {}))
        if len(stuck) > 1:
            tries += [([i] + [k for k in by_sum if k != i], {}) for i in stuck]
    for i in stuck:
        spec = groups[i][0]
        for key in self_affinity_keys(spec):
            for v in pin_domains(nodes, spec, key):
                tries.append((stuck + rest, {i: (key, v)}))
    for order, pins in tries[:MAX_REPAIRS]:
        plan = attempt(order, pins)
        if plan.complete:
            return plan
    return best
