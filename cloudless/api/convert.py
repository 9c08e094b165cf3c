"""Protobuf <-> model conversions for the agent protocol (no I/O)."""

from __future__ import annotations

import json
from collections.abc import Mapping

from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.model.node import NodeConditions
from cloudless.model.replica import DesiredState, Replica, ReplicaState
from cloudless.model.resources import Resources
from cloudless.model.workload import WorkloadSpec
from cloudless.model.workload_codec import workload_to_dict


def resources_to_pb(r: Resources) -> pb.Resources:
    return pb.Resources(
        cpu_millis=r.cpu_millis,
        memory_bytes=r.memory_bytes,
        disk_bytes=r.disk_bytes,
        bandwidth_bps=r.bandwidth_bps,
    )


def resources_from_pb(m: pb.Resources) -> Resources:
    return Resources(
        max(0, m.cpu_millis), max(0, m.memory_bytes), max(0, m.disk_bytes), max(0, m.bandwidth_bps)
    )


def conditions_to_pb(c: NodeConditions) -> pb.NodeConditions:
    return pb.NodeConditions(
        memory_pressure=c.memory_pressure,
        disk_pressure=c.disk_pressure,
        pid_pressure=c.pid_pressure,
        network_unavailable=c.network_unavailable,
        on_battery=c.on_battery,
    )


def conditions_from_pb(m: pb.NodeConditions) -> NodeConditions:
    return NodeConditions(
        memory_pressure=m.memory_pressure,
        disk_pressure=m.disk_pressure,
        pid_pressure=m.pid_pressure,
        network_unavailable=m.network_unavailable,
        on_battery=m.on_battery,
    )


class BadStatus(ValueError):
    """A replica status from an agent that does not make sense."""


def status_state(s: pb.ReplicaStatus) -> ReplicaState:
    try:
        return ReplicaState(s.state)
    except ValueError:
        raise BadStatus(f"replica {s.replica_id!r}: unknown state {s.state!r}") from None


def observe(r: Replica, s: pb.ReplicaStatus, now: float) -> Replica | None:
    """The replica after applying the agent's status, or ``None`` if nothing changed.

    Statuses for another spec version than the replica's current one are stale (the agent
    has not caught up with a roll-out yet) and are ignored unless they report a failure.
    """
    state = status_state(s)
    exit_code = s.exit_code if s.has_exit_code else None
    ready = (s.ready if s.reports_ready else True) and state is ReplicaState.RUNNING
    if s.spec_version != r.spec_version and state is not ReplicaState.FAILED:
        return None
    if (
        state is r.observed
        and s.reason == r.reason
        and exit_code == r.exit_code
        and s.restarts == r.restarts
        and s.endpoint == r.endpoint
        and ready == r.ready
        and s.health == r.health
        and tuple(sorted(s.volume_bytes.items())) == r.volume_bytes
        and tuple(sorted(s.volume_quota.items())) == r.volume_quota
        and s.spec_version == r.observed_version
    ):
        return None
    started = s.started_at if s.started_at else r.started_at
    return Replica(
        id=r.id,
        workload=r.workload,
        node_id=r.node_id,
        desired=r.desired,
        observed=state,
        reason=s.reason,
        exit_code=exit_code,
        restarts=s.restarts,
        spec_version=r.spec_version,
        created_at=r.created_at,
        updated_at=now,
        started_at=started,
        endpoint=s.endpoint,
        ready=ready,
        health=s.health,
        volume_bytes=tuple(sorted(s.volume_bytes.items())),
        volume_quota=tuple(sorted(s.volume_quota.items())),
        observed_version=s.spec_version,
    )


def assignment(
    r: Replica,
    spec: WorkloadSpec,
    secrets: Mapping[str, bytes] | None = None,
    drop_volumes: bool = False,
) -> pb.ReplicaAssignment:
    return pb.ReplicaAssignment(
        replica_id=r.id,
        workload=r.workload,
        desired=r.desired.value,
        spec_version=r.spec_version,
        spec_json=json.dumps(workload_to_dict(spec), sort_keys=True).encode(),
        traceparent=r.trace,
        secrets=dict(secrets or {}),
        drop_volumes=drop_volumes and r.desired is DesiredState.STOPPED,
    )
