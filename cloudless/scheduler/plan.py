"""What the scheduler returns: a ``Plan`` of assignments, and a reason for every "no".

A ``Plan`` is a proposal; the coordinator re-checks it against fresh state before writing it.
Assignment ``index`` numbers the new replicas of one workload in this plan, 0-based.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ScoreComponents:
    """Each factor's value in [0, 1] before weighting (in registry order: locality,
    reliability, cost, utilization, network), ``affinity`` the signed adjustment from
    preferred affinity terms, ``total`` the weighted sum plus ``affinity``."""

    factors: tuple[tuple[str, float], ...]
    affinity: float
    total: float

    def __getitem__(self, name: str) -> float:
        for k, v in self.factors:
            if k == name:
                return v
        raise KeyError(name)

    def to_dict(self) -> dict[str, float]:
        return {**dict(self.factors), "affinity": self.affinity, "total": self.total}


@dataclass(frozen=True, slots=True)
class Assignment:
    workload: str
    index: int
    node_id: str
    score: float
    components: ScoreComponents | None = None


@dataclass(frozen=True, slots=True)
class Rejections:
    """Why nodes were turned down: each node counted once, under the first filter it failed,
    so ``fit + sum(counts) == nodes``."""

    nodes: int
    fit: int
    counts: tuple[tuple[str, int], ...]

    def message(self) -> str:
        """``0/5000 nodes fit: 3100 insufficient memory, 1200 zone not in [eu-1a]``."""
        head = f"{self.fit}/{self.nodes} nodes fit"
        if not self.counts:
            return head if self.nodes else "0/0 nodes fit: the cluster has no nodes"
        return head + ": " + ", ".join(f"{n} {reason}" for reason, n in self.counts)

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)


@dataclass(frozen=True, slots=True)
class Unplaced:
    """``count`` replicas of ``workload`` (from ``first_index`` on) that no node could take."""

    workload: str
    first_index: int
    count: int
    rejections: Rejections

    @property
    def reason(self) -> str:
        return self.rejections.message()


@dataclass(frozen=True, slots=True)
class Plan:
    assignments: tuple[Assignment, ...] = ()
    unplaced: tuple[Unplaced, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.unplaced

    def for_workload(self, name: str) -> list[Assignment]:
        return [a for a in self.assignments if a.workload == name]

    def nodes_used(self) -> set[str]:
        return {a.node_id for a in self.assignments}

    def node_ids(self) -> list[str]:
        return [a.node_id for a in self.assignments]

    def __iter__(self) -> Iterator[Assignment]:
        return iter(self.assignments)


@dataclass(frozen=True, slots=True)
class NodeScore:
    node_id: str
    components: ScoreComponents


@dataclass(frozen=True, slots=True)
class Explanation:
    """The best nodes for one more replica of ``workload``, and why the others were refused."""

    workload: str
    best: tuple[NodeScore, ...]
    rejections: Rejections
    notes: tuple[str, ...] = field(default=())

    def render(self) -> str:
        lines = [f"workload {self.workload}: {self.rejections.message()}"]
        for i, ns in enumerate(self.best, 1):
            c = ns.components
            parts = " ".join(f"{k}={v:.2f}" for k, v in c.factors)
            lines.append(
                f"  {i:>2}. {ns.node_id}  total={c.total:.3f}  {parts} affinity={c.affinity:+.2f}"
            )
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)
