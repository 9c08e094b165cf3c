"""``ClusterView``: the cluster at one store revision as plain mappings, what deciders read.

Built by ``ClusterState.snapshot`` (a listing) or ``LiveView`` (one watch); immutable by
convention: deciders read it and return actions, they never change it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.model.node import Node
from cloudless.model.replica import Replica


@dataclass(frozen=True)
class ClusterView:
    nodes: Mapping[str, Node]
    workloads: Mapping[str, WorkloadRecord]
    replicas: Mapping[str, Replica]
