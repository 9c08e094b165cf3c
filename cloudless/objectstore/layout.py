"""The layout's data: node roles, one layout version (who holds each of the 256 partitions),
and the plan a layout change produces. Pure values; the decider is ``assign.py`` and the
etcd-backed history is ``layout_store.py``.

Invariants of a ``LayoutVersion`` built by the decider:

* every partition lists exactly ``replication`` distinct storage nodes;
* a partition spans ``min(replication, zones)`` distinct zones at least;
* a node holds about ``replication * 256 * capacity / total capacity`` partitions (within 2),
  unless a node or zone cap binds (a node holds a partition at most once; a zone holds at most
  ``replication - zone_redundancy + 1`` copies of one partition).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from cloudless.lib.errors import ValidationError

PARTITION_BITS = 8
PARTITIONS = 1 << PARTITION_BITS
MAX_REPLICATION = 7
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class LayoutError(ValidationError):
    """A layout change that cannot be made; the message says why and what would fix it."""

    code = "layout_invalid"


def partition_of(key_hash: bytes) -> int:
    """The partition of a hashed key: its top ``PARTITION_BITS`` bits."""
    return key_hash[0] >> (8 - PARTITION_BITS)


@dataclass(frozen=True)
class NodeRole:
    """A node's part in the store. ``capacity`` in bytes; 0 makes it a gateway (no data)."""

    zone: str
    capacity: int

    @property
    def stores(self) -> bool:
        return self.capacity > 0


def check_role(node: str, role: NodeRole) -> list[str]:
    """Every problem with ``node``'s role, as ``path: reason`` strings (empty if valid)."""
    problems = []
    if not _NAME.match(node):
        problems.append(f"node {node!r}: 1-63 letters, digits, '.', '_' or '-'")
    if not _NAME.match(role.zone):
        problems.append(f"node {node!r}: zone {role.zone!r}: 1-63 letters, digits, '.', '_', '-'")
    if role.capacity < 0:
        problems.append(f"node {node!r}: capacity {role.capacity} must be >= 0 (0 = gateway)")
    return problems


@dataclass(frozen=True)
class LayoutVersion:
    """Layout ``version``: the roles it was computed from and each partition's nodes."""

    version: int
    replication: int
    roles: dict[str, NodeRole]
    partitions: tuple[tuple[str, ...], ...]

    def nodes_of(self, partition: int) -> tuple[str, ...]:
        return self.partitions[partition]

    @functools.cached_property
    def holders(self) -> frozenset[str]:
        """The nodes holding any partition (computed once: the partitions are a tuple)."""
        return frozenset(n for nodes in self.partitions for n in nodes)

    def counts(self) -> dict[str, int]:
        """How many partition copies each storage node holds."""
        out = {n: 0 for n, r in self.roles.items() if r.stores}
        for nodes in self.partitions:
            for n in nodes:
                out[n] = out.get(n, 0) + 1
        return out


@dataclass(frozen=True)
class Plan:
    """What the decider chose and why: the new partitions, each node's ideal (fractional) and
    actual share, and the copies that must move (``(partition, node)`` newly assigned)."""

    replication: int
    zone_redundancy: int
    partitions: tuple[tuple[str, ...], ...]
    ideal: dict[str, float]
    quota: dict[str, int]
    moves: tuple[tuple[int, str], ...]
    relaxed: bool = False
    notes: tuple[str, ...] = field(default=())

    def counts(self) -> dict[str, int]:
        out = {n: 0 for n in self.quota}
        for nodes in self.partitions:
            for n in nodes:
                out[n] += 1
        return out
