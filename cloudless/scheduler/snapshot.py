"""An immutable, column-oriented view of the cluster that the scheduler decides over.

``Snapshot.build(nodes, replicas, workloads)`` turns node records and the replicas placed on
them into numpy columns (one entry per node, in the order given): allocatable and allocated
resources, live usage, state codes, condition flags, reliability, cost, network facts, and a
coded column per label key (code 0 = the node has no such label). Nothing in it changes after
``build``; a plan's own bookkeeping lives in ``WorkState``.

A replica occupies its node's resources when it has a node, the node is in the snapshot and
it is either desired running or has not reached a terminal observed state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from cloudless.model.node import Node, NodeState
from cloudless.model.replica import DesiredState, Replica
from cloudless.model.resources import Resources
from cloudless.model.workload import WorkloadSpec

F64: TypeAlias = npt.NDArray[np.float64]
I32: TypeAlias = npt.NDArray[np.int32]
Bool: TypeAlias = npt.NDArray[np.bool_]

#: Resource dimensions, in row order of the (4, N) resource matrices.
DIMS = ("cpu", "memory", "disk", "bandwidth")
STATES = tuple(NodeState)
STATE_CODE = {s: i for i, s in enumerate(STATES)}
READY_CODE = STATE_CODE[NodeState.READY]
BUILTIN_KEYS = ("node", "zone", "region", "arch", "device_class", "os")


def demand_vector(r: Resources) -> tuple[float, float, float, float]:
    return (float(r.cpu_millis), float(r.memory_bytes), float(r.disk_bytes), float(r.bandwidth_bps))


def occupies(r: Replica) -> bool:
    """Whether a replica holds resources on its node (see module docstring)."""
    return bool(r.node_id) and (r.desired is DesiredState.RUNNING or not r.observed.terminal)


@dataclass(frozen=True, slots=True)
class LabelColumn:
    """Per-node codes for one label key; ``values[code - 1]`` is the value, code 0 = absent."""

    codes: I32
    values: tuple[str, ...]
    index: Mapping[str, int]

    def code(self, value: str) -> int:
        """The code of ``value``, or -1 when no node has it."""
        return self.index.get(value, -1)


def _column(raw: list[str | None]) -> LabelColumn:
    index: dict[str, int] = {}
    codes = np.zeros(len(raw), dtype=np.int32)
    for i, v in enumerate(raw):
        if v is None:
            continue
        c = index.get(v)
        if c is None:
            c = index[v] = len(index) + 1
        codes[i] = c
    return LabelColumn(codes, tuple(index), index)


def _label_columns(ns: tuple[Node, ...]) -> dict[str, LabelColumn]:
    cols: dict[str, LabelColumn] = {}
    keys = {k for x in ns for k in x.labels}
    for k in BUILTIN_KEYS:
        cols[k] = _column([x.label(k) for x in ns])
    for k in sorted(keys - set(BUILTIN_KEYS)):
        cols[k] = _column([x.labels.get(k) for x in ns])
    return cols


def _labels_of(x: Node) -> tuple[object, ...]:
    return (x.labels, *(x.label(k) for k in BUILTIN_KEYS))


def _row(x: Node) -> tuple[tuple[float, ...], tuple[float, ...], int, bool, bool, float, float]:
    a, u = x.allocatable, x.usage
    return (
        (a.cpu_millis, a.memory_bytes, a.disk_bytes, a.bandwidth_bps),
        (u.cpu_millis, u.memory_bytes, u.disk_bytes, u.bandwidth_bps),
        STATE_CODE[x.state],
        x.conditions.memory_pressure,
        x.conditions.disk_pressure,
        min(1.0, max(0.0, x.reliability)),
        max(0.0, x.cost_per_hour),
    )


@dataclass(frozen=True)
class NodeColumns:
    """The columns of a snapshot that depend on the nodes alone: a pure function of the node
    tuple. ``NodeColumns.build(nodes)`` computes them; ``previous.update(nodes)`` gives the
    same result by reusing ``previous`` for every node record that is the same object (a
    usage refresh replaces one record and leaves the other thousands untouched), reordering
    rows when only the order changed. Do not mutate the arrays."""

    nodes: tuple[Node, ...]
    index: Mapping[str, int]
    alloc: F64
    usage: F64
    state: npt.NDArray[np.int8]
    memory_pressure: Bool
    disk_pressure: Bool
    reliability: F64
    cost: F64
    public: Bool
    nat: Bool
    cols: Mapping[str, LabelColumn]

    @classmethod
    def build(cls, nodes: Iterable[Node]) -> NodeColumns:
        ns = tuple(nodes)
        n = len(ns)
        index = {node.id: i for i, node in enumerate(ns)}
        if len(index) != n:
            raise ValueError("Snapshot.build: node ids must be unique")
        rel = np.fromiter((x.reliability for x in ns), dtype=np.float64, count=n)
        return cls(
            nodes=ns,
            index=index,
            alloc=_resources(node.allocatable for node in ns),
            usage=_resources(node.usage for node in ns),
            state=np.fromiter((STATE_CODE[x.state] for x in ns), dtype=np.int8, count=n),
            memory_pressure=np.fromiter(
                (x.conditions.memory_pressure for x in ns), dtype=np.bool_, count=n
            ),
            disk_pressure=np.fromiter(
                (x.conditions.disk_pressure for x in ns), dtype=np.bool_, count=n
            ),
            reliability=np.minimum(1.0, np.maximum(0.0, rel)),
            cost=np.fromiter((max(0.0, x.cost_per_hour) for x in ns), dtype=np.float64, count=n),
            public=np.fromiter((x.public for x in ns), dtype=np.bool_, count=n),
            nat=np.fromiter((x.nat for x in ns), dtype=np.bool_, count=n),
            cols=_label_columns(ns),
        )

    # Above this share of changed records a fresh build is cheaper than patching rows.
    PATCH_LIMIT = 0.25

    def update(self, nodes: Iterable[Node]) -> NodeColumns:
        """The columns for ``nodes``, equal to ``NodeColumns.build(nodes)``."""
        ns = tuple(nodes)
        old = self.nodes
        if len(ns) != len(old):
            return NodeColumns.build(ns)
        same_order = all(a.id == b.id for a, b in zip(old, ns, strict=True))
        if same_order:
            perm = None
            before = old
        else:
            try:
                perm = np.fromiter((self.index[x.id] for x in ns), dtype=np.intp, count=len(ns))
            except KeyError:
                return NodeColumns.build(ns)  # a node came or went
            if len(set(perm.tolist())) != len(ns):
                return NodeColumns.build(ns)
            before = tuple(old[j] for j in perm)
        changed = [i for i, (a, b) in enumerate(zip(before, ns, strict=True)) if a is not b]
        if not changed and perm is None:
            return self
        if len(changed) > self.PATCH_LIMIT * len(ns):
            return NodeColumns.build(ns)

        def take(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
            return a[..., perm].copy() if perm is not None else a.copy()

        alloc, usage, state = take(self.alloc), take(self.usage), take(self.state)
        mem, disk = take(self.memory_pressure), take(self.disk_pressure)
        rel = take(self.reliability)
        cost, public, nat = take(self.cost), take(self.public), take(self.nat)
        for i in changed:
            x = ns[i]
            a, u, st, mp, dp, r, c = _row(x)
            alloc[:, i], usage[:, i], state[i] = a, u, st
            mem[i], disk[i], rel[i], cost[i] = mp, dp, r, c
            public[i], nat[i] = x.public, x.nat
        # Label codes are numbered in order of first appearance, so a new order (or a new
        # label) means new columns; a usage or state change keeps them.
        relabelled = any(_labels_of(before[i]) != _labels_of(ns[i]) for i in changed)
        cols = _label_columns(ns) if relabelled or perm is not None else self.cols
        return NodeColumns(
            nodes=ns,
            index={x.id: i for i, x in enumerate(ns)} if perm is not None else self.index,
            alloc=alloc,
            usage=usage,
            state=state,
            memory_pressure=mem,
            disk_pressure=disk,
            reliability=rel,
            cost=cost,
            public=public,
            nat=nat,
            cols=cols,
        )


class Snapshot:
    """Immutable cluster view. Build with ``Snapshot.build``; do not mutate its arrays."""

    nodes: tuple[Node, ...]
    index: Mapping[str, int]
    n: int
    alloc: F64  # (4, N) allocatable
    used: F64  # (4, N) allocated by occupying replicas
    usage: F64  # (4, N) live usage from heartbeats
    state: npt.NDArray[np.int8]
    memory_pressure: Bool
    disk_pressure: Bool
    reliability: F64
    cost_norm: F64  # cost_per_hour / max cost in the snapshot (0 when all are free)
    public: Bool
    nat: Bool
    replicas: tuple[Replica, ...]
    workloads: Mapping[str, WorkloadSpec]
    counts: Mapping[str, Mapping[int, int]]  # workload -> node index -> occupying replicas

    def __init__(self) -> None:
        raise TypeError("use Snapshot.build(nodes, replicas, workloads)")

    @classmethod
    def build(
        cls,
        nodes: Iterable[Node] | NodeColumns,
        replicas: Iterable[Replica] = (),
        workloads: Mapping[str, WorkloadSpec | Resources] | None = None,
    ) -> Snapshot:
        """Columns for ``nodes`` (or node columns already built for them: ``NodeColumns``);
        ``replicas`` placed on them use the resources of their workload from ``workloads``
        (a spec, or just its ``Resources``). A replica of an unknown workload still counts
        for workload affinity but holds no resources."""
        self = object.__new__(cls)
        nc = nodes if isinstance(nodes, NodeColumns) else NodeColumns.build(nodes)
        ns = nc.nodes
        n = len(ns)
        self.nodes = ns
        self.index = nc.index
        self.n = n
        self.alloc = nc.alloc
        self.usage = nc.usage
        self.state = nc.state
        self.memory_pressure = nc.memory_pressure
        self.disk_pressure = nc.disk_pressure
        self.reliability = nc.reliability
        top = float(nc.cost.max()) if n else 0.0
        self.cost_norm = nc.cost / top if top > 0 else np.zeros(n)
        self.public = nc.public
        self.nat = nc.nat

        specs: dict[str, WorkloadSpec] = {}
        demand: dict[str, tuple[float, float, float, float]] = {}
        for name, w in (workloads or {}).items():
            if isinstance(w, WorkloadSpec):
                specs[name] = w
                demand[name] = demand_vector(w.resources)
            else:
                demand[name] = demand_vector(w)
        self.workloads = specs
        used = np.zeros((4, n))
        counts: dict[str, dict[int, int]] = {}
        kept = []
        rows: list[int] = []  # node index of each demand below, summed in one numpy call
        demands: list[tuple[float, float, float, float]] = []
        index = self.index
        for r in replicas:
            j = index.get(r.node_id, -1)
            if j < 0 or not occupies(r):
                continue
            kept.append(r)
            per = counts.setdefault(r.workload, {})
            per[j] = per.get(j, 0) + 1
            d = demand.get(r.workload)
            if d is not None:
                rows.append(j)
                demands.append(d)
        if rows:
            # Unbuffered, in replica order: the same sums as adding one replica at a time.
            np.add.at(used.T, np.asarray(rows, dtype=np.intp), np.asarray(demands))
        self.used = used
        self.replicas = tuple(kept)
        self.counts = counts
        self._cols = dict(nc.cols)
        self._empty = LabelColumn(np.zeros(n, dtype=np.int32), (), {})
        return self

    _cols: dict[str, LabelColumn]
    _empty: LabelColumn

    def column(self, key: str) -> LabelColumn:
        """The coded label column for ``key`` (all zeros if no node has the label)."""
        return self._cols.get(key, self._empty)

    def count_array(self, workload: str) -> I32:
        """Occupying replicas of ``workload`` per node, as a fresh dense array."""
        out = np.zeros(self.n, dtype=np.int32)
        for j, c in self.counts.get(workload, {}).items():
            out[j] = c
        return out

    @property
    def free(self) -> F64:
        return self.alloc - self.used

    def nbytes(self) -> int:
        """Bytes held by the numpy columns (for the memory benchmark)."""
        arrays: list[npt.NDArray[np.generic]] = [
            self.alloc,
            self.used,
            self.usage,
            self.state,
            self.memory_pressure,
            self.disk_pressure,
            self.reliability,
            self.cost_norm,
            self.public,
            self.nat,
        ]
        return sum(a.nbytes for a in arrays) + sum(c.codes.nbytes for c in self._cols.values())


def _resources(items: Iterable[Resources]) -> F64:
    rows = [(r.cpu_millis, r.memory_bytes, r.disk_bytes, r.bandwidth_bps) for r in items]
    if not rows:
        return np.zeros((4, 0))
    return np.array(rows, dtype=np.float64).T.copy()
