"""The Cloudless domain: resources, nodes and their lifecycle, workload specs, replicas.

Everything here is a frozen value with no I/O. Parsing from user input (YAML/JSON) reports
every invalid field with its path and reason (``spec.resources.memory: "12XB" is not a size``).
"""

from cloudless.model.node import Node, NodeConditions, NodeState, transition
from cloudless.model.replica import DesiredState, Replica, ReplicaState
from cloudless.model.resources import Resources, parse_cpu, parse_size
from cloudless.model.workload import (
    AffinityTerm,
    LabelExpr,
    Placement,
    RestartPolicy,
    SpreadConstraint,
    WorkloadAffinity,
    WorkloadSpec,
    parse_workload,
)

__all__ = [
    "AffinityTerm",
    "DesiredState",
    "LabelExpr",
    "Node",
    "NodeConditions",
    "NodeState",
    "Placement",
    "Replica",
    "ReplicaState",
    "Resources",
    "RestartPolicy",
    "SpreadConstraint",
    "WorkloadAffinity",
    "WorkloadSpec",
    "parse_cpu",
    "parse_size",
    "parse_workload",
    "transition",
]
