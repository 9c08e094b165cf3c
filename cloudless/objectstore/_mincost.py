"""Make a valid layout assignment move as few copies as possible, keeping every node's count.

``fewest_moves`` takes an assignment that already meets the layout rules (``assign.py``: R
distinct nodes per partition, zones spread, each node at its quota) and returns one that
meets the same rules with the same per-node counts and the fewest copies not held before. It
is exact: the assignment is a flow in the decider's network (partition "up" and "down" ->
partition x zone -> node), the cost of a flow is the number of (partition, node) edges it
uses that the previous layout did not, and a flow is of least cost exactly when its residual
graph has no negative cycle (the classical optimality condition of min-cost flow). So the
function cancels negative cycles until none is left; each cancellation swaps copies along a
chain of nodes (a hand-off chain of any length), keeps every count and every partition valid,
and saves at least one move.

Garage (``src/rpc/layout``) optimizes its flow the same way; here the Bellman-Ford passes are
vectorized with numpy: each pass relaxes every residual arc at once, and after each pass the
predecessor graph is searched for cycles (a cycle there always has negative cost). A search
stops at the first cycle or as soon as no distance changes (a few passes on layouts of up to
100 nodes); ``vertices + 1`` passes bound it (within that many, a negative cycle always shows
in the predecessor graph). Each cancellation starts a new search.

Pure: no I/O, clock or randomness; ties are broken by vertex and arc order, so equal inputs
give equal outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]


def fewest_moves(
    held: Sequence[set[str]],
    storage: Sequence[str],
    zone_of: dict[str, int],
    zones: int,
    replication: int,
    redundancy: int,
    previous: set[tuple[int, str]],
) -> list[set[str]]:
    """The assignment closest to ``previous`` among those with ``held``'s per-node counts.

    ``held[p]`` is the set of nodes holding partition ``p``; it must satisfy the rules
    (``replication`` nodes, at least ``redundancy`` zones, at most ``replication -
    redundancy + 1`` copies in one zone). ``previous`` holds the ``(partition, node)`` pairs
    of the old layout.
    """
    parts, nodes = len(held), len(storage)
    if parts == 0 or nodes == 0:
        return [set(h) for h in held]
    index = {n: i for i, n in enumerate(storage)}
    zone = np.array([zone_of[n] for n in storage], dtype=np.int64)
    spare = replication - redundancy
    stride = 2 + zones

    x = np.zeros((parts, nodes), dtype=np.int64)
    for p, have in enumerate(held):
        for n in have:
            x[p, index[n]] = 1
    cost = np.ones((parts, nodes), dtype=np.int64)
    for p, n in previous:
        if n in index and p < parts:
            cost[p, index[n]] = 0

    per_zone = x @ (zone[:, None] == np.arange(zones)).astype(np.int64)
    used = per_zone > 0
    up = (used & (np.cumsum(used, axis=1) <= redundancy)).astype(np.int64)
    down = per_zone - up
    if (up.sum(axis=1) != redundancy).any() or (down > spare).any():
        raise ValueError("fewest_moves: the assignment given breaks the zone rules")

    p_idx = np.arange(parts, dtype=np.int64)
    pz_p = np.repeat(p_idx, zones)
    pz_k = np.tile(np.arange(zones, dtype=np.int64), parts)
    pz_vertex = pz_p * stride + 2 + pz_k
    pn_p = np.repeat(p_idx, nodes)
    pn_n = np.tile(np.arange(nodes, dtype=np.int64), parts)

    tails = [pz_p * stride, pz_p * stride + 1, pn_p * stride + 2 + zone[pn_n]]
    heads = [pz_vertex, pz_vertex, parts * stride + pn_n]
    caps = [np.ones(parts * zones, np.int64), np.full(parts * zones, spare, np.int64)]
    flows = [up.ravel(), down.ravel(), x.ravel()]
    costs = [np.zeros(2 * parts * zones, np.int64), cost.ravel()]
    caps.append(np.ones(parts * nodes, np.int64))
    tail = np.concatenate(tails)
    head = np.concatenate(heads)
    cap = np.concatenate(caps)
    flow = np.concatenate(flows)
    edge_cost = np.concatenate(costs)
    vertices = parts * stride + nodes
    passes = vertices + 1

    while True:
        fwd = np.flatnonzero(flow < cap)
        bwd = np.flatnonzero(flow > 0)
        edge = np.concatenate([fwd, bwd])
        sign = np.concatenate([np.ones(fwd.size, np.int64), -np.ones(bwd.size, np.int64)])
        src = np.concatenate([tail[fwd], head[bwd]])
        dst = np.concatenate([head[fwd], tail[bwd]])
        weight = sign * edge_cost[edge]
        cycles = negative_cycles(vertices, src, dst, weight, passes)
        if not cycles:
            break
        for arcs in cycles:
            if int(weight[arcs].sum()) >= 0:
                raise AssertionError("fewest_moves: a predecessor cycle of cost >= 0")
            flow[edge[arcs]] += sign[arcs]

    final = flow[-parts * nodes :].reshape(parts, nodes)
    return [{storage[int(i)] for i in np.flatnonzero(final[p])} for p in range(parts)]


def negative_cycles(
    vertices: int, src: IntArray, dst: IntArray, weight: IntArray, passes: int
) -> list[IntArray]:
    """Vertex-disjoint negative cycles of the graph ``src[a] -> dst[a]`` (cost ``weight[a]``),
    each as the array of its arcs; empty when the graph has none reachable within ``passes``
    Bellman-Ford passes from a virtual source joined to every vertex at cost 0."""
    dist = np.zeros(vertices, dtype=np.int64)
    parent = np.full(vertices, -1, dtype=np.int64)
    for _ in range(passes):
        cand = dist[src] + weight
        better = np.flatnonzero(cand < dist[dst])
        if better.size == 0:
            return []
        order = np.lexsort((better, cand[better], dst[better]))
        better = better[order]
        targets = dst[better]
        first = np.ones(better.size, dtype=bool)
        first[1:] = targets[1:] != targets[:-1]
        better = better[first]
        dist[dst[better]] = cand[better]
        parent[dst[better]] = better
        cycles = predecessor_cycles(parent, src)
        if cycles:
            return cycles
    return []


def predecessor_cycles(parent: IntArray, src: IntArray) -> list[IntArray]:
    """The cycles of the predecessor graph ``v -> src[parent[v]]`` (``parent[v] == -1``: a
    root), each as the arcs ``parent[v]`` of its vertices, in vertex order of discovery."""
    n = parent.size
    has = parent >= 0
    step = np.arange(n, dtype=np.int64)
    step[has] = src[parent[has]]
    jump = step.copy()
    for _ in range(max(1, int(n).bit_length())):
        jump = jump[jump]
    ends = np.unique(jump[has])
    ends = ends[step[ends] != ends]
    seen = np.zeros(n, dtype=bool)
    cycles = []
    for start in ends.tolist():
        if seen[start]:
            continue
        arcs = []
        v = start
        while not seen[v]:
            seen[v] = True
            arcs.append(int(parent[v]))
            v = int(step[v])
        cycles.append(np.array(arcs, dtype=np.int64))
    return cycles
