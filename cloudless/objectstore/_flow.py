"""A small unit-capacity-friendly max-flow graph for the layout decider.

Residual edges come in pairs (``e`` and ``e ^ 1``). ``augment`` finds one source-to-sink path
in the residual graph preferring, through a 0-1 BFS, paths that cross the fewest *costly*
edges (the reverse of an edge marked ``costly``: undoing a kept partition copy). Pure: no I/O,
no clock, deterministic for a given insertion order.
"""

from __future__ import annotations

from collections import deque


class FlowGraph:
    def __init__(self, vertices: int, source: int, sink: int) -> None:
        self.source = source
        self.sink = sink
        self.adj: list[list[int]] = [[] for _ in range(vertices)]
        self.to: list[int] = []
        self.cap: list[int] = []
        self.undo_cost: list[int] = []

    def add_edge(self, u: int, v: int, cap: int, *, costly: bool = False) -> int:
        """Add ``u -> v`` with capacity ``cap``; returns the edge id (its reverse is ``id ^ 1``).
        A ``costly`` edge makes pushing flow back through it (undoing it) cost 1."""
        e = len(self.to)
        self.to += [v, u]
        self.cap += [cap, 0]
        self.undo_cost += [0, 1 if costly else 0]
        self.adj[u].append(e)
        self.adj[v].append(e + 1)
        return e

    def flow(self, e: int) -> int:
        """Flow currently through edge ``e`` (the residual of its reverse)."""
        return self.cap[e ^ 1]

    def push(self, edges: list[int], amount: int = 1) -> None:
        for e in edges:
            if self.cap[e] < amount:
                raise ValueError(f"edge {e} has residual {self.cap[e]} < {amount}")
        for e in edges:
            self.cap[e] -= amount
            self.cap[e ^ 1] += amount

    def augment(self) -> bool:
        """Push one unit along a cheapest augmenting path; False when none exists."""
        n = len(self.adj)
        inf = 1 << 30
        dist = [inf] * n
        via = [-1] * n
        dist[self.source] = 0
        queue: deque[int] = deque([self.source])
        while queue:
            u = queue.popleft()
            du = dist[u]
            for e in self.adj[u]:
                if self.cap[e] <= 0:
                    continue
                v = self.to[e]
                w = self.undo_cost[e]
                if du + w < dist[v]:
                    dist[v] = du + w
                    via[v] = e
                    if w:
                        queue.append(v)
                    else:
                        queue.appendleft(v)
        if dist[self.sink] == inf:
            return False
        path: list[int] = []
        v = self.sink
        while v != self.source:
            e = via[v]
            path.append(e)
            v = self.to[e ^ 1]
        self.push(path)
        return True

    def max_flow(self) -> int:
        """Augment until no path is left; returns how many units were added."""
        added = 0
        while self.augment():
            added += 1
        return added
