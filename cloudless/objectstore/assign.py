"""The layout decider: which storage nodes hold each of the 256 partitions.

``assign(roles, replication, previous)`` is pure (no I/O, clock or randomness) and returns a
``Plan``. Rules, in order of precedence:

1. every partition gets ``replication`` distinct storage nodes (capacity > 0);
2. every partition spans ``zone_redundancy = min(replication, zones)`` distinct zones, and one
   zone holds at most ``replication - zone_redundancy + 1`` copies of a partition;
3. each node's share is its capacity's share of the total (water-filled under the caps of
   rule 2 and "a node holds a partition once"), rounded to integers that sum exactly, and
   rounded towards the node's previous count when either rounding is as close (a joining
   node takes the rounding slack);
4. as few copies as possible move, given those counts (exact): a first assignment keeps the
   previous copies greedily and routes the rest along augmenting paths, then
   ``_mincost.fewest_moves`` cancels negative cycles of the min-cost flow (cost 1 per copy
   the previous layout did not have) until none is left.

A first layout (no previous copy on a current node) starts from a capacity-weighted hash
draw per partition (``_dispersed``), so each node shares partitions with every other zone's
nodes in proportion; without that spread, a later change can be forced to move copies
between old nodes (a node paired only with one zone cannot hand its copies to a node
joining that zone).

The flow network follows Garage's layout design (deuxfleurs-org/garage, ``src/rpc/layout``):
source -> partition "up" (capacity ``zone_redundancy``, at most one copy per zone) and
partition "down" (the remaining ``replication - zone_redundancy`` copies) -> partition x zone
-> node (capacity 1) -> sink (the node's quota). A full flow is a valid assignment.
If the rounded quotas cannot be met together with rule 2 (possible only for
``replication > 3``), quotas are relaxed to "at most one copy per partition" and the plan says
so (``relaxed``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from fractions import Fraction

from cloudless.objectstore._flow import FlowGraph
from cloudless.objectstore._mincost import fewest_moves
from cloudless.objectstore.layout import (
    MAX_REPLICATION,
    PARTITIONS,
    LayoutError,
    NodeRole,
    Plan,
    check_role,
)


def waterfill(
    weights: Mapping[str, int], caps: Mapping[str, int], total: int | Fraction
) -> dict[str, Fraction]:
    """Split ``total`` in proportion to ``weights``, no key above its cap (excess is
    re-split among the rest). Callers ensure ``sum(caps) >= total``."""
    out: dict[str, Fraction] = {}
    active = {k: w for k, w in weights.items() if w > 0}
    remaining = Fraction(total)
    while active:
        scale = remaining / sum(active.values())
        capped = [k for k, w in active.items() if scale * w >= caps[k]]
        if not capped:
            out.update({k: scale * w for k, w in active.items()})
            break
        for k in capped:
            out[k] = Fraction(caps[k])
            remaining -= caps[k]
            del active[k]
    for k in weights:
        out.setdefault(k, Fraction(0))
    return out


def round_sticky(
    ideal: Mapping[str, Fraction], total: int, previous: Mapping[str, int]
) -> dict[str, int]:
    """Integers within 1 of ``ideal`` summing to ``total`` (= sum of ideal), each as close to
    its ``previous`` value as that allows. What is left to add goes first to keys that held
    nothing before (a joining node takes the rounding slack: its copies are sent anyway,
    where an old node rounded up would be sent one more), then by largest remainder; what is
    left to take away by smallest remainder; ties by name."""
    lo = {k: math.floor(x) for k, x in ideal.items()}
    hi = {k: math.ceil(x) for k, x in ideal.items()}
    q = {k: min(max(previous.get(k, 0), lo[k]), hi[k]) for k in ideal}
    excess = sum(q.values()) - total
    if excess < 0:
        up = sorted(
            (k for k in q if q[k] < hi[k]),
            key=lambda k: (previous.get(k, 0) > 0, lo[k] - ideal[k], k),
        )
        for k in up[:-excess]:
            q[k] += 1
    elif excess > 0:
        down = sorted((k for k in q if q[k] > lo[k]), key=lambda k: (hi[k] - ideal[k], k))
        for k in down[:excess]:
            q[k] -= 1
    return q


def _dispersed(
    roles: Mapping[str, NodeRole], storage: list[str], zone_of: dict[str, int], replication: int
) -> set[tuple[int, str]]:
    """A valid starting point for a first layout: each partition takes the first nodes of an
    exponential race (node ``n`` draws ``-ln(u) / capacity`` with ``u`` from a hash of the
    partition and name, so it comes first with probability proportional to its capacity)
    that keep the zone rules. Shares are near, not at, the quotas; ``assign`` corrects them."""
    zones = len(set(zone_of.values()))
    redundancy = min(replication, zones)
    per_zone = replication - redundancy + 1
    out: set[tuple[int, str]] = set()
    for p in range(PARTITIONS):
        race = sorted(storage, key=lambda n: (-math.log(_uniform(p, n)) / roles[n].capacity, n))
        per: dict[int, int] = {}
        for n in race:
            taken = sum(per.values())
            if taken == replication:
                break
            k = zone_of[n]
            spread_after = len(per) + (k not in per)
            if per.get(k, 0) >= per_zone or replication - taken - 1 < redundancy - spread_after:
                continue
            per[k] = per.get(k, 0) + 1
            out.add((p, n))
    return out


def _uniform(p: int, node: str) -> float:
    """A deterministic draw in (0, 1) for partition ``p`` and ``node``."""
    digest = hashlib.blake2b(f"{p}/{node}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2.0**64


def _spread(p: int, node: str) -> int:
    """A deterministic tie-breaker that spreads dropped copies over partitions."""
    h = 2166136261
    for ch in f"{p}/{node}".encode():
        h = ((h ^ ch) * 16777619) & 0xFFFFFFFF
    return h


class _Network:
    """The flow network of one decision, with helpers to place and move single copies
    greedily before falling back to augmenting paths.

    Vertex 0 is a super-source feeding the partition source (vertex 2) and every node that
    holds more than its quota (its surplus must leave through other nodes); vertex 1 is the
    sink. The super-source's edges are bookkeeping only: the flow between the partition
    source and the sink is the assignment.
    """

    def __init__(
        self,
        storage: list[str],
        zone_of: dict[str, int],
        zones: int,
        replication: int,
        redundancy: int,
        previous: set[tuple[int, str]],
    ) -> None:
        self.storage = storage
        self.zone_of = zone_of
        self.stride = 2 + zones
        base = 3 + PARTITIONS * self.stride
        self.g = FlowGraph(base + len(storage), 0, 1)
        g = self.g
        self.feed = g.add_edge(0, 2, 0)
        self.up: list[int] = []
        self.down: list[int] = []
        self.up_z: list[list[int]] = []
        self.down_z: list[list[int]] = []
        self.edge: dict[tuple[int, str], int] = {}
        self.new_edges: list[int] = []
        self.to_sink: dict[str, int] = {}
        self.surplus: dict[str, int] = {}
        spare = replication - redundancy
        for p in range(PARTITIONS):
            pup, pdown, pz = 3 + p * self.stride, 4 + p * self.stride, 5 + p * self.stride
            self.up.append(g.add_edge(2, pup, redundancy))
            self.down.append(g.add_edge(2, pdown, spare))
            self.up_z.append([g.add_edge(pup, pz + k, 1) for k in range(zones)])
            self.down_z.append([g.add_edge(pdown, pz + k, spare) for k in range(zones)])
        for i, n in enumerate(storage):
            for p in range(PARTITIONS):
                kept = (p, n) in previous
                e = g.add_edge(5 + p * self.stride + zone_of[n], base + i, int(kept), costly=kept)
                self.edge[(p, n)] = e
                if not kept:
                    self.new_edges.append(e)
            self.to_sink[n] = g.add_edge(base + i, 1, PARTITIONS)
            self.surplus[n] = g.add_edge(0, base + i, 0)

    def try_push(self, p: int, n: str) -> bool:
        """Assign copy ``(p, n)`` along a direct path if one has room."""
        g, k = self.g, self.zone_of[n]
        e, sink = self.edge[(p, n)], self.to_sink[n]
        if g.cap[e] <= 0 or g.cap[sink] <= 0:
            return False
        for head, mid in ((self.up[p], self.up_z[p][k]), (self.down[p], self.down_z[p][k])):
            if g.cap[head] > 0 and g.cap[mid] > 0:
                g.push([head, mid, e, sink])
                return True
        return False

    def _undo(self, p: int, n: str) -> tuple[int, int]:
        """Take copy ``(p, n)`` back to the partition source (its sink share stays with
        ``n``'s surplus accounting); returns the (head, mid) edges it used."""
        g, k = self.g, self.zone_of[n]
        for head, mid in ((self.down[p], self.down_z[p][k]), (self.up[p], self.up_z[p][k])):
            if g.flow(mid) > 0:
                g.push([mid ^ 1, head ^ 1, self.edge[(p, n)] ^ 1])
                return head, mid
        raise AssertionError(f"copy ({p}, {n}) carries no flow")

    def move(self, p: int, n: str, m: str) -> bool:
        """Move copy ``(p, n)`` to ``m`` directly if ``m`` has room; n keeps its sink flow
        (it was surplus, fed by the super-source)."""
        g = self.g
        if g.cap[self.edge[(p, m)]] <= 0 or g.cap[self.to_sink[m]] <= 0:
            return False
        head, mid = self._undo(p, n)
        if self.try_push(p, m):
            return True
        g.push([head, mid, self.edge[(p, n)]])
        return False

    def set_quotas(self, quota: dict[str, int]) -> dict[str, int]:
        """Cap each node at its quota; a node holding more gets the excess as surplus to
        route elsewhere. Returns the surplus per node."""
        g = self.g
        out = {}
        for n, e in self.to_sink.items():
            f = g.flow(e)
            g.cap[e] = max(0, quota[n] - f)
            if f > quota[n]:
                g.cap[e ^ 1] = quota[n]
                out[n] = f - quota[n]
        return out

    def enable_new_edges(self) -> None:
        for e in self.new_edges:
            self.g.cap[e] = 1

    def open_sources(self, surplus: dict[str, int]) -> None:
        self.g.cap[self.feed] = PARTITIONS * len(self.storage)
        for n, s in surplus.items():
            self.g.cap[self.surplus[n]] = s

    def relax(self) -> None:
        for e in self.to_sink.values():
            self.g.cap[e] = PARTITIONS - self.g.flow(e)

    def filled(self, p: int) -> int:
        return self.g.flow(self.up[p]) + self.g.flow(self.down[p])

    def remaining(self, n: str) -> int:
        return self.g.cap[self.to_sink[n]]

    def holders(self, p: int) -> set[str]:
        return {n for n in self.storage if self.g.flow(self.edge[(p, n)]) > 0}

    def unrouted(self) -> int:
        """Surplus copies still waiting for a home."""
        return sum(self.g.cap[e] for e in self.surplus.values())

    def held(self, n: str) -> list[int]:
        return [p for p in range(PARTITIONS) if self.g.flow(self.edge[(p, n)]) > 0]


def assign(
    roles: Mapping[str, NodeRole],
    replication: int,
    previous: Sequence[Sequence[str]] | None = None,
) -> Plan:
    """Decide the partitions for ``roles`` at ``replication``, close to ``previous`` (the old
    partitions, or None for a first layout). Raises ``LayoutError`` naming what is wrong."""
    problems = [p for n, r in sorted(roles.items()) for p in check_role(n, r)]
    if not 1 <= replication <= MAX_REPLICATION:
        problems.append(f"replication {replication}: must be 1..{MAX_REPLICATION}")
    if previous is not None and len(previous) != PARTITIONS:
        problems.append(f"previous layout: {len(previous)} partitions, expected {PARTITIONS}")
    if problems:
        raise LayoutError(problems)
    storage = sorted(n for n, r in roles.items() if r.stores)
    if len(storage) < replication:
        raise LayoutError(
            f"replication {replication} needs {replication} storage nodes, have "
            f"{len(storage)}: give more nodes a capacity or lower the replication"
        )
    zone_names = sorted({roles[n].zone for n in storage})
    zone_of = {n: zone_names.index(roles[n].zone) for n in storage}
    redundancy = min(replication, len(zone_names))
    per_zone = replication - redundancy + 1
    members = {z: [n for n in storage if roles[n].zone == z] for z in zone_names}
    zone_cap = {z: PARTITIONS * min(per_zone, len(ms)) for z, ms in members.items()}
    zone_weight = {z: sum(roles[n].capacity for n in ms) for z, ms in members.items()}
    slots = PARTITIONS * replication

    prev_pairs: set[tuple[int, str]] = set()
    for p, nodes in enumerate(previous or ()):
        for n in nodes:
            if n in zone_of:
                prev_pairs.add((p, n))
    prev_count = {n: 0 for n in storage}
    for _, n in prev_pairs:
        prev_count[n] += 1
    prev_zone = {z: sum(prev_count[n] for n in ms) for z, ms in members.items()}

    zone_ideal = waterfill(zone_weight, zone_cap, slots)
    zone_quota = round_sticky(zone_ideal, slots, prev_zone)
    ideal: dict[str, Fraction] = {}
    quota: dict[str, int] = {}
    for z, ms in members.items():
        weights = {n: roles[n].capacity for n in ms}
        caps = dict.fromkeys(ms, PARTITIONS)
        ideal.update(waterfill(weights, caps, zone_ideal[z]))
        quota.update(
            round_sticky(waterfill(weights, caps, zone_quota[z]), zone_quota[z], prev_count)
        )

    # A first layout (or one whose old nodes are all gone) starts from a capacity-weighted
    # hash draw, so every node's copies share partitions with every other zone's nodes in
    # proportion; a later change can then take a joining node's share from every node
    # without moves between old nodes.
    start = prev_pairs or _dispersed(roles, storage, zone_of, replication)
    net = _Network(storage, zone_of, len(zone_names), replication, redundancy, start)
    for p, n in sorted(start):
        net.try_push(p, n)
    surplus = net.set_quotas(quota)
    net.enable_new_edges()
    # A node above its quota hands copies to nodes below theirs that lack that partition.
    for n, excess in sorted(surplus.items()):
        for p in sorted(net.held(n), key=lambda p: _spread(p, n)):
            if excess == 0:
                break
            order = sorted(storage, key=lambda m: (-net.remaining(m), m))
            if any(m != n and net.move(p, n, m) for m in order):
                excess -= 1
        surplus[n] = excess
    for p in range(PARTITIONS):
        while net.filled(p) < replication:
            have = net.holders(p)
            order = sorted(storage, key=lambda n: (-net.remaining(n), n))
            if not any(n not in have and net.try_push(p, n) for n in order):
                break
    net.open_sources(surplus)
    net.g.max_flow()
    notes: list[str] = []
    relaxed = net.unrouted() > 0 or any(net.filled(p) < replication for p in range(PARTITIONS))
    if relaxed:
        notes.append(
            "capacity shares could not be met together with zone spreading; some nodes hold "
            "more than their share"
        )
        net.relax()
        net.g.max_flow()
    if any(net.filled(p) < replication for p in range(PARTITIONS)):
        raise LayoutError(
            f"cannot place {slots} partition copies on {len(storage)} nodes in "
            f"{len(zone_names)} zones: add storage nodes or lower the replication"
        )

    held = [net.holders(p) for p in range(PARTITIONS)]
    if prev_pairs:
        held = fewest_moves(
            held, storage, zone_of, len(zone_names), replication, redundancy, prev_pairs
        )
    partitions: list[tuple[str, ...]] = []
    moves: list[tuple[int, str]] = []
    for p in range(PARTITIONS):
        have = held[p]
        old = [n for n in (previous[p] if previous else ()) if n in have]
        new = sorted(have - set(old))
        moves += [(p, n) for n in new]
        partitions.append((*old, *new))
    final = {n: 0 for n in storage}
    for nodes in partitions:
        for n in nodes:
            final[n] += 1
    return Plan(
        replication=replication,
        zone_redundancy=redundancy,
        partitions=tuple(partitions),
        ideal={n: float(x) for n, x in ideal.items()},
        quota=final,
        moves=tuple(moves),
        relaxed=relaxed,
        notes=tuple(notes),
    )
