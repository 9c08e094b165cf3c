"""Bounded search over whole plans: the greedy placement made once, then tried again in a few
other ways when it falls short, keeping the best. Shared by the engine and the reference
(it only orders groups and chooses among plans; every placement is theirs).

Rules:

* groups are placed largest first, by the sum of their cpu, memory and disk shares of the
  largest node (``sum_size``); ties keep the input order;
* a plan that leaves replicas unplaced is repaired, at most ``MAX_REPAIRS`` attempts, in
  rounds (each round repairs the previous round's attempt with the fewest unplaced
  replicas, keeping its pins, so a repair that moves the trap elsewhere is repaired in
  turn). A round tries: the unplaced groups first (all of them, then each alone); the most
  constrained groups first (fewest nodes matching their selector and arch, ``eligible``);
  each unplaced group first, pinned in turn to each of its ``PIN_DOMAINS`` roomiest domains
  of every key it has required affinity to itself on (so its first replica cannot trap the
  rest on a small device) or required anti-affinity with another group on (so it leaves
  the other domains to that group instead of touching them all); then each of those
  anti-affinity partners, placed first and pinned the same way (so the unplaced group gets
  the other domains). When a round has nothing new to try, the rounds go on from the best
  attempt not yet repaired. A repair is adopted only when it places every replica, so the
  reasons for what stays unplaced are the first plan's;
* ``FALLBACK_SHARE`` attempts per fallback (another engine's node choice, given by the
  caller) are kept out of ``MAX_REPAIRS``; when the repair falls short, each fallback makes
  the plan in the greedy order and repairs it with its share of what is left (a plan that
  every order spreads too thin for the score strategy is often complete when packed);
* a complete plan is returned as made (no extra work).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from cloudless.model.node import Node, NodeState
from cloudless.model.workload import WorkloadSpec
from cloudless.scheduler.plan import Plan

Pin = tuple[str, str]  # (topology key, value): the group may only use nodes in that domain
Pins = Mapping[int, Pin]  # group index (in the caller's list) -> its pin
Attempt = Callable[[Sequence[int], Pins], Plan]

MAX_REPAIRS = 24
PIN_DOMAINS = 3
FALLBACK_SHARE = 4  # attempts kept for each fallback engine out of MAX_REPAIRS


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


def order(
    nodes: Sequence[Node],
    groups: Sequence[tuple[WorkloadSpec, int]],
    tops: Sequence[float] | None = None,
) -> list[int]:
    """Group indices largest first by ``sum_size`` (stable). ``tops``: the largest
    allocatable cpu, memory and disk, if the caller has them at hand."""
    if len(groups) <= 1:
        return list(range(len(groups)))
    if tops is None:
        tops = _tops(nodes)
    return sorted(range(len(groups)), key=lambda i: -sum_size(tops, groups[i][0]))


def pin_keys(groups: Sequence[tuple[WorkloadSpec, int]], i: int) -> list[str]:
    """Topology keys worth pinning group ``i`` on: its required affinity to itself, and every
    required anti-affinity between it and another group of the plan (either side's term)."""
    me = groups[i][0]
    names = {s.name for s, _ in groups}
    keys = [
        t.topology_key
        for t in me.placement.required_workload_affinity
        if t.workload == me.name and not t.anti
    ]
    keys += [
        t.topology_key
        for t in me.placement.required_workload_affinity
        if t.anti and t.workload != me.name and t.workload in names
    ]
    for s, _ in groups:
        if s.name != me.name:
            keys += [
                t.topology_key
                for t in s.placement.required_workload_affinity
                if t.anti and t.workload == me.name
            ]
    return list(dict.fromkeys(keys))


def partners(groups: Sequence[tuple[WorkloadSpec, int]], i: int) -> list[tuple[int, str]]:
    """``(j, key)`` for every other group ``j`` of the plan in a required anti-affinity with
    group ``i`` on ``key`` (either side's term), in plan order."""
    me = groups[i][0]
    out = []
    for j, (s, _) in enumerate(groups):
        if s.name == me.name:
            continue
        for t in me.placement.required_workload_affinity:
            if t.anti and t.workload == s.name:
                out.append((j, t.topology_key))
        for t in s.placement.required_workload_affinity:
            if t.anti and t.workload == me.name:
                out.append((j, t.topology_key))
    return list(dict.fromkeys(out))


def pin_domains(nodes: Sequence[Node], spec: WorkloadSpec, key: str) -> list[str]:
    """The ``PIN_DOMAINS`` domains of ``key`` whose ready nodes matching the node selector
    could hold the most replicas of ``spec`` by allocatable (ignoring load), roomiest first,
    ties by name."""
    want = (spec.resources.cpu_millis, spec.resources.memory_bytes, spec.resources.disk_bytes)
    room: dict[str, int] = {}
    for x in nodes:
        v = x.label(key)
        if v is None or x.state is not NodeState.READY:
            continue
        if not all(e.matches(x) for e in spec.placement.node_selector):
            continue
        have = _dims(x)
        fits = min((have[d] // want[d] for d in range(3) if want[d] > 0), default=1_000_000)
        room[v] = room.get(v, 0) + fits
    ranked = sorted(room, key=lambda v: (-room[v], v))
    return [v for v in ranked if room[v] > 0][:PIN_DOMAINS]


def eligible(nodes: Sequence[Node], spec: WorkloadSpec) -> int:
    """How many ready nodes match ``spec``'s node selector and arch (the "most constrained
    first" order of the repair)."""
    p = spec.placement
    return sum(
        1
        for x in nodes
        if x.state is NodeState.READY
        and (not p.arch or x.label("arch") in p.arch)
        and all(e.matches(x) for e in p.node_selector)
    )


def _unplaced(plan: Plan) -> int:
    return sum(u.count for u in plan.unplaced)


Try = tuple[list[int], dict[int, Pin]]


def _tries(
    nodes: Sequence[Node],
    groups: Sequence[tuple[WorkloadSpec, int]],
    base: Try,
    plan: Plan,
    room: Sequence[int],
) -> list[Try]:
    """The repairs of ``plan`` (made by ``base``), in the order they are tried."""
    order, pins = base
    failed = {u.workload for u in plan.unplaced}
    stuck = [i for i in order if groups[i][0].name in failed and i not in pins]
    rest = [i for i in order if i not in stuck]
    tight = sorted(order, key=lambda i: room[i])  # stable: ties keep the current order
    out: list[Try] = []
    if stuck and rest:
        out.append((stuck + rest, pins))
        if len(stuck) > 1:
            out += [([i] + [k for k in order if k != i], pins) for i in stuck]
    if tight != order:
        out.append((tight, pins))
    for i in stuck:
        first = [i] + [k for k in tight if k != i]
        for key in pin_keys(groups, i):
            for v in pin_domains(nodes, groups[i][0], key):
                out.append((first, {**pins, i: (key, v)}))
    for i in stuck:
        for j, key in partners(groups, i):
            if j in pins:
                continue
            first = [j] + [k for k in tight if k != j]
            for v in pin_domains(nodes, groups[j][0], key):
                out.append((first, {**pins, j: (key, v)}))
    return out


def _repair(
    nodes: Sequence[Node],
    groups: Sequence[tuple[WorkloadSpec, int]],
    attempt: Attempt,
    first: Try,
    plan: Plan,
    budget: int,
) -> tuple[Plan | None, int]:
    """Repair rounds from ``plan`` (made by ``first``) with at most ``budget`` attempts: the
    complete plan found, or None; and the attempts used."""
    room = [eligible(nodes, s) for s, _ in groups]
    seen: set[tuple[tuple[int, ...], tuple[tuple[int, Pin], ...]]] = {(tuple(first[0]), ())}
    base = first
    waiting: list[tuple[int, int, Try, Plan]] = []  # attempts not yet repaired, in made order
    used = 0
    while used < budget:
        made: list[tuple[int, int, Try, Plan]] = []
        for t in _tries(nodes, groups, base, plan, room):
            key = (tuple(t[0]), tuple(sorted(t[1].items())))
            if key in seen:
                continue
            if used == budget:
                break
            seen.add(key)
            used += 1
            got = attempt(*t)
            if got.complete:
                return got, used
            made.append((_unplaced(got), used, t, got))
        waiting += made
        pool = made or waiting
        if not pool:
            break
        nxt = min(pool, key=lambda m: (m[0], m[1]))
        waiting.remove(nxt)
        _, _, base, plan = nxt
    return None, used


def search(
    nodes: Sequence[Node],
    groups: Sequence[tuple[WorkloadSpec, int]],
    attempt: Attempt,
    tops: Sequence[float] | None = None,
    fallbacks: Sequence[Attempt] = (),
) -> Plan:
    """The best plan found (see the module rules); ``attempt(order, pins)`` makes one;
    ``fallbacks``: other ways to make one (another engine's node choice), tried in turn with
    what is left of the budget when the repair of ``attempt``'s plan falls short."""
    by_sum = order(nodes, groups, tops)
    best = attempt(by_sum, {})
    if best.complete:
        return best
    left = MAX_REPAIRS
    reserve = min(FALLBACK_SHARE * len(fallbacks), left)
    got, used = _repair(nodes, groups, attempt, (by_sum, {}), best, left - reserve)
    left -= used
    for k, other in enumerate(fallbacks):
        share = left // (len(fallbacks) - k)
        if got is not None or share == 0:
            break
        plan = other(by_sum, {})
        if plan.complete:
            return plan
        got, used = _repair(nodes, groups, other, (by_sum, {}), plan, share - 1)
        left -= used + 1
    return got if got is not None else best
