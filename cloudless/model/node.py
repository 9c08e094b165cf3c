"""Nodes and their lifecycle.

A node moves through ``NodeState``:

    enrolling -> ready                      (first heartbeat)
    ready     -> offline                    (missed heartbeats)
    offline   -> ready | failed             (heartbeat again | longer grace passed)
    failed    -> ready                      (it came back; its replicas were replaced)
    ready | offline -> cordoned | draining  (user)
    cordoned | draining -> ready            (uncordon)
    draining  -> cordoned                   (drain finished)
    ready | draining | cordoned | offline -> departed
                                            (left as announced: a planned departure)
    departed  -> ready | cordoned           (it came back)
    any       -> removed                    (user removes it; terminal)

``transition(current, target)`` is the only way to compute a new state; an illegal move
returns a refusal with the reason instead of raising.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from cloudless.model.departure import Departure
from cloudless.model.resources import Resources


class NodeState(enum.StrEnum):
    ENROLLING = "enrolling"
    READY = "ready"
    DRAINING = "draining"
    CORDONED = "cordoned"
    OFFLINE = "offline"
    FAILED = "failed"
    DEPARTED = "departed"
    REMOVED = "removed"

    @property
    def schedulable(self) -> bool:
        return self is NodeState.READY


_LEGAL: dict[NodeState, frozenset[NodeState]] = {
    NodeState.ENROLLING: frozenset({NodeState.READY, NodeState.OFFLINE, NodeState.FAILED}),
    NodeState.READY: frozenset(
        {
            NodeState.OFFLINE,
            NodeState.CORDONED,
            NodeState.DRAINING,
            NodeState.FAILED,
            NodeState.DEPARTED,
        }
    ),
    NodeState.OFFLINE: frozenset(
        {
            NodeState.READY,
            NodeState.FAILED,
            NodeState.CORDONED,
            NodeState.DRAINING,
            NodeState.DEPARTED,
        }
    ),
    NodeState.FAILED: frozenset({NodeState.READY, NodeState.CORDONED}),
    NodeState.CORDONED: frozenset(
        {
            NodeState.READY,
            NodeState.DRAINING,
            NodeState.OFFLINE,
            NodeState.FAILED,
            NodeState.DEPARTED,
        }
    ),
    NodeState.DRAINING: frozenset(
        {
            NodeState.READY,
            NodeState.CORDONED,
            NodeState.OFFLINE,
            NodeState.FAILED,
            NodeState.DEPARTED,
        }
    ),
    NodeState.DEPARTED: frozenset({NodeState.READY, NodeState.CORDONED}),
    NodeState.REMOVED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class Transition:
    ok: bool
    state: NodeState
    reason: str = ""


def transition(current: NodeState, target: NodeState) -> Transition:
    """The state after asking ``current`` to become ``target``, or a refusal with the reason.

    Asking for the state a node is already in is allowed and changes nothing.
    """
    if current == target:
        return Transition(True, current)
    if target is NodeState.REMOVED:
        return Transition(True, target)
    if target in _LEGAL[current]:
        return Transition(True, target)
    if current is NodeState.REMOVED:
        return Transition(False, current, "node was removed; enroll it again with a new token")
    return Transition(False, current, f"a node cannot go from {current.value} to {target.value}")


@dataclass(frozen=True, slots=True)
class NodeConditions:
    """Pressure and health signals the agent reports with each heartbeat."""

    memory_pressure: bool = False
    disk_pressure: bool = False
    pid_pressure: bool = False
    network_unavailable: bool = False
    on_battery: bool = False

    def active(self) -> list[str]:
        names = {
            "memory_pressure": "MemoryPressure",
            "disk_pressure": "DiskPressure",
            "pid_pressure": "PIDPressure",
            "network_unavailable": "NetworkUnavailable",
            "on_battery": "OnBattery",
        }
        return [v for k, v in names.items() if getattr(self, k)]


def _frozen(d: dict[str, str] | None) -> MappingProxyType[str, str]:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True, slots=True)
class Node:
    """A machine in the fabric, as the control plane knows it.

    ``allocatable`` is what workloads may use (capacity minus system reserve); ``usage`` is
    the live usage from the last heartbeat. ``reliability`` is in [0, 1] (see
    ``cloudless.model.reliability``). ``cost_per_hour`` is the owner's cost of the machine in
    arbitrary units (0 for machines the owner considers free). ``departure`` is set while the
    node is on its way out (``cloudless.model.departure``); ``reserved_hours`` are the week
    bins its owner keeps it for themselves.
    """

    id: str
    name: str = ""
    labels: MappingProxyType[str, str] = field(default_factory=lambda: _frozen(None))
    region: str = ""
    zone: str = ""
    arch: str = "amd64"
    os: str = "linux"
    device_class: str = "server"
    capacity: Resources = Resources()
    allocatable: Resources = Resources()
    usage: Resources = Resources()
    conditions: NodeConditions = NodeConditions()
    state: NodeState = NodeState.ENROLLING
    last_heartbeat: float = 0.0
    address: str = ""
    reliability: float = 1.0
    public: bool = False
    nat: bool = True
    cost_per_hour: float = 0.0
    enrolled_at: float = 0.0
    metrics_address: str = ""  # "http(s)://host:port" of the agent's /metrics, or ""
    departure: Departure | None = None
    reserved_hours: frozenset[int] = frozenset()
    nebula_public_key: str = ""  # the node's own Nebula key (PEM); "" when it sent none

    @staticmethod
    def make(id: str, *, labels: dict[str, str] | None = None, **kw: Any) -> Node:
        return Node(id=id, labels=_frozen(labels), **kw)

    def with_state(self, state: NodeState) -> Node:
        return replace(self, state=state)

    def moved_to(self, target: NodeState) -> tuple[Node | None, str]:
        """This node asked to become ``target`` (``transition``): the new record, or ``None``
        with the refusal reason ("" when it is already in that state)."""
        t = transition(self.state, target)
        if not t.ok:
            return None, t.reason
        return (None if t.state is self.state else replace(self, state=t.state)), ""

    def label(self, key: str) -> str | None:
        """Labels, with the well-known keys ``node``, ``zone``, ``region``, ``arch`` and
        ``device_class`` answered from the node's own fields."""
        if key in self.labels:
            return self.labels[key]
        builtin = {
            "node": self.id,
            "zone": self.zone,
            "region": self.region,
            "arch": self.arch,
            "device_class": self.device_class,
            "os": self.os,
        }
        v = builtin.get(key)
        return v if v else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "labels": dict(self.labels),
            "region": self.region,
            "zone": self.zone,
            "arch": self.arch,
            "os": self.os,
            "device_class": self.device_class,
            "capacity": self.capacity.to_dict(),
            "allocatable": self.allocatable.to_dict(),
            "usage": self.usage.to_dict(),
            "conditions": {
                k: getattr(self.conditions, k) for k in NodeConditions.__dataclass_fields__
            },
            "state": self.state.value,
            "last_heartbeat": self.last_heartbeat,
            "address": self.address,
            "reliability": self.reliability,
            "public": self.public,
            "nat": self.nat,
            "cost_per_hour": self.cost_per_hour,
            "enrolled_at": self.enrolled_at,
            "metrics_address": self.metrics_address,
            "departure": self.departure.to_dict() if self.departure else None,
            "reserved_hours": sorted(self.reserved_hours),
            "nebula_public_key": self.nebula_public_key,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Node:
        return cls(
            id=d["id"],
            name=d.get("name", ""),
            labels=_frozen(d.get("labels")),
            region=d.get("region", ""),
            zone=d.get("zone", ""),
            arch=d.get("arch", "amd64"),
            os=d.get("os", "linux"),
            device_class=d.get("device_class", "server"),
            capacity=Resources.from_dict(d.get("capacity", {})),
            allocatable=Resources.from_dict(d.get("allocatable", {})),
            usage=Resources.from_dict(d.get("usage", {})),
            conditions=NodeConditions(**d.get("conditions", {})),
            state=NodeState(d.get("state", "enrolling")),
            last_heartbeat=float(d.get("last_heartbeat", 0.0)),
            address=d.get("address", ""),
            reliability=float(d.get("reliability", 1.0)),
            public=bool(d.get("public", False)),
            nat=bool(d.get("nat", True)),
            cost_per_hour=float(d.get("cost_per_hour", 0.0)),
            enrolled_at=float(d.get("enrolled_at", 0.0)),
            metrics_address=str(d.get("metrics_address", "")),
            departure=Departure.from_dict(d["departure"]) if d.get("departure") else None,
            reserved_hours=frozenset(int(h) for h in d.get("reserved_hours") or ()),
            nebula_public_key=str(d.get("nebula_public_key", "")),
        )
