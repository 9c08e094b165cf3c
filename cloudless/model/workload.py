"""Workload specs: what the user asks to run, and where it may run.

A spec is parsed from YAML or JSON by ``parse_workload``; every invalid field is reported with
its path and reason, all at once, as a ``ValidationError``. Example::

    name: hello
    image: 127.0.0.1:5000/busybox:latest
    command: ["httpd", "-f", "-p", "8080"]
    env: {GREETING: hi}
    resources: {cpu: 100m, memory: 32Mi}
    replicas: 3
    restart: {policy: always}
    placement:
      node_selector: [{key: arch, operator: in, values: [amd64, arm64]}]
      spread: [{topology_key: zone}]
      max_per_node: 1
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from cloudless.lib.ids import is_valid_id
from cloudless.model.health import HealthChecks
from cloudless.model.node import Node
from cloudless.model.resources import Resources
from cloudless.model.rollout import UpdatePolicy
from cloudless.model.secrets import SecretRef, config_key
from cloudless.model.volumes import NodeLoss, Volume

TOPOLOGY_KEYS = ("node", "zone", "region")


class Operator(enum.StrEnum):
    EQ = "="
    NE = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    NOT_EXISTS = "!exists"


_OP_ALIASES = {
    "=": Operator.EQ,
    "==": Operator.EQ,
    "eq": Operator.EQ,
    "!=": Operator.NE,
    "ne": Operator.NE,
    "in": Operator.IN,
    "notin": Operator.NOT_IN,
    "not_in": Operator.NOT_IN,
    "exists": Operator.EXISTS,
    "!exists": Operator.NOT_EXISTS,
    "doesnotexist": Operator.NOT_EXISTS,
    "not_exists": Operator.NOT_EXISTS,
}


@dataclass(frozen=True, slots=True)
class LabelExpr:
    """One node-label condition, e.g. ``zone in (eu-1a, eu-1b)``."""

    key: str
    op: Operator
    values: tuple[str, ...] = ()

    def matches(self, node: Node) -> bool:
        v = node.label(self.key)
        match self.op:
            case Operator.EQ:
                return v == self.values[0]
            case Operator.NE:
                return v != self.values[0]
            case Operator.IN:
                return v in self.values
            case Operator.NOT_IN:
                return v not in self.values
            case Operator.EXISTS:
                return v is not None
            case Operator.NOT_EXISTS:
                return v is None

    def describe(self) -> str:
        if self.op in (Operator.EXISTS, Operator.NOT_EXISTS):
            return f"{self.key} {self.op.value}"
        if self.op in (Operator.EQ, Operator.NE):
            return f"{self.key}{self.op.value}{self.values[0]}"
        return f"{self.key} {self.op.value} [{', '.join(self.values)}]"


@dataclass(frozen=True, slots=True)
class AffinityTerm:
    """Node affinity: all ``exprs`` must match. Preferred terms carry a ``weight`` 1..100."""

    exprs: tuple[LabelExpr, ...]
    weight: int = 100

    def matches(self, node: Node) -> bool:
        return all(e.matches(node) for e in self.exprs)


@dataclass(frozen=True, slots=True)
class WorkloadAffinity:
    """Affinity (``anti=False``) or anti-affinity to replicas of ``workload`` in the same
    ``topology_key`` domain (node, zone, region or any label key)."""

    workload: str
    topology_key: str = "node"
    anti: bool = False
    weight: int = 100


@dataclass(frozen=True, slots=True)
class SpreadConstraint:
    """Spread replicas evenly over the values of ``topology_key``; ``max_skew`` is the largest
    allowed difference between the most and the least loaded domain."""

    topology_key: str = "zone"
    max_skew: int = 1


@dataclass(frozen=True, slots=True)
class Placement:
    node_selector: tuple[LabelExpr, ...] = ()
    required_node_affinity: tuple[AffinityTerm, ...] = ()
    preferred_node_affinity: tuple[AffinityTerm, ...] = ()
    required_workload_affinity: tuple[WorkloadAffinity, ...] = ()
    preferred_workload_affinity: tuple[WorkloadAffinity, ...] = ()
    spread: tuple[SpreadConstraint, ...] = ()
    max_per_node: int = 0
    max_per_domain: tuple[tuple[str, int], ...] = ()
    preferred_regions: tuple[str, ...] = ()
    preferred_zones: tuple[str, ...] = ()
    arch: tuple[str, ...] = ()
    device_classes: tuple[str, ...] = ()
    min_bandwidth_bps: int = 0
    needs_public: bool = False
    strategy: str = ""  # pack | best_fit | spread | score; "" = the cluster's default
    availability_target: float = 0.0  # e.g. 0.999: P(enough replicas up); 0 = none


class RestartMode(enum.StrEnum):
    ALWAYS = "always"
    ON_FAILURE = "on-failure"
    NEVER = "never"


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    mode: RestartMode = RestartMode.ALWAYS
    max_restarts: int = 0  # 0 = unlimited
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0

    def should_restart(self, exit_code: int, restarts: int) -> bool:
        if self.mode is RestartMode.NEVER:
            return False
        if self.mode is RestartMode.ON_FAILURE and exit_code == 0:
            return False
        return self.max_restarts == 0 or restarts < self.max_restarts

    def delay(self, restarts: int) -> float:
        return float(min(self.backoff_cap_s, self.backoff_base_s * 2 ** max(0, restarts)))


@dataclass(frozen=True, slots=True)
class PublishedPort:
    """A container port the device publishes on its own addresses (``ports: [{port: 8080,
    publish: 18080}]``), through the CNI ``portmap`` plugin: an explicit choice, since a
    container's ports are otherwise reached only through its service VIP or its address. One
    device port carries one container: the scheduler keeps two replicas publishing the same
    device port off one device."""

    port: int  # the container's
    host_port: int  # the device's


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    name: str
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: MappingProxyType[str, str] = field(default_factory=lambda: MappingProxyType({}))
    resources: Resources = Resources()
    replicas: int = 1
    restart: RestartPolicy = RestartPolicy()
    placement: Placement = Placement()
    labels: MappingProxyType[str, str] = field(default_factory=lambda: MappingProxyType({}))
    ports: tuple[int, ...] = ()
    stop_timeout_s: float = 10.0
    namespace: str = "default"  # who may manage it (RBAC); names stay unique cluster-wide
    health: HealthChecks = HealthChecks()
    volumes: tuple[Volume, ...] = ()
    on_node_loss: NodeLoss = NodeLoss.WAIT
    secrets: tuple[SecretRef, ...] = ()
    update: UpdatePolicy = UpdatePolicy()
    image_pull_secret: str = ""  # a registry secret (model.registry_auth) for pulling image
    configs: tuple[SecretRef, ...] = ()  # config objects, mounted like secrets (mode 0444)
    published: tuple[PublishedPort, ...] = ()  # ports (tcp) also published on the device

    def secret_names(self) -> frozenset[str]:
        """The keys of every secret and config value the replicas' agents need (mounted ones,
        and the pull's): a secret's name, a config's ``config_key``."""
        names = {ref.name for ref in self.secrets} | {config_key(r.name) for r in self.configs}
        if self.image_pull_secret:
            names.add(self.image_pull_secret)
        return frozenset(names)

    def to_dict(self) -> dict[str, Any]:
        from cloudless.model.workload_codec import workload_to_dict

        return workload_to_dict(self)


def parse_workload(data: Any, path: str = "spec", *, stored: bool = False) -> WorkloadSpec:
    """Parse and validate a spec from a dict (or a YAML/JSON string).

    Raises ``cloudless.lib.errors.ValidationError`` listing every problem with its path.
    ``stored``: a spec the cluster accepted before; see ``parse_workload_data``.
    """
    from cloudless.model.workload_codec import parse_workload_data

    return parse_workload_data(data, path, stored=stored)


__all__ = [
    "TOPOLOGY_KEYS",
    "AffinityTerm",
    "LabelExpr",
    "Operator",
    "Placement",
    "RestartMode",
    "RestartPolicy",
    "SpreadConstraint",
    "WorkloadAffinity",
    "WorkloadSpec",
    "is_valid_id",
    "parse_workload",
]
