"""User commands as pure functions (``cloudless.coordinator.deciders.commands``): each case is
a stored record and a request in, the record to write (or none), the event, or the refusal
with its reason out."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cloudless.coordinator.deciders import commands
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.lib.errors import Conflict, NotFound
from cloudless.model.node import Node, NodeState
from cloudless.model.workload import WorkloadSpec

S = NodeState
NOW = 1000.0
WEB = WorkloadSpec(name="web", image="busybox:latest", replicas=2)
STORED = WorkloadRecord(spec=WEB, version=3, created_at=10.0, updated_at=10.0)


def test_apply_creates_a_missing_workload_at_version_1() -> None:
    d = commands.apply(None, WEB, NOW, trace="00-t")
    assert d.created and d.refused is None
    assert d.write == WorkloadRecord(spec=WEB, created_at=NOW, updated_at=NOW, trace="00-t")
    assert d.event == "workload web created (version 1)"


@pytest.mark.parametrize(
    ("spec", "written_version", "event_version"),
    [
        (WEB, None, 3),  # same spec: nothing written, still "configured" at version 3
        (replace(WEB, replicas=5), 3, 3),  # only the count: written, version kept (3)
        (replace(WEB, image="busybox:1.36"), 4, 4),  # new template: version 3 + 1 = 4
    ],
)
def test_apply_configures(
    spec: WorkloadSpec, written_version: int | None, event_version: int
) -> None:
    d = commands.apply(STORED, spec, NOW, trace="00-t")
    assert not d.created and d.refused is None
    if written_version is None:
        assert d.write is None
    else:
        assert d.write is not None and d.write.version == written_version
        assert d.write.spec == spec and d.write.trace == "00-t" and d.write.updated_at == NOW
    assert d.event == f"workload web configured (version {event_version})"


def test_apply_brings_back_a_deleted_workload() -> None:
    d = commands.apply(replace(STORED, deleted=True), WEB, NOW)
    assert d.write is not None and not d.write.deleted and d.write.version == 3


@pytest.mark.parametrize(
    ("stored", "replicas", "written", "refused"),
    [
        (STORED, 5, 5, None),  # 2 -> 5: written
        (STORED, 2, None, None),  # already 2: nothing to write
        (None, 5, None, "not_found"),
        (replace(STORED, deleted=True), 5, None, "conflict"),  # being deleted
    ],
)
def test_scale(
    stored: WorkloadRecord | None, replicas: int, written: int | None, refused: str | None
) -> None:
    d = commands.scale(stored, "web", replicas, NOW)
    assert (d.refused.code if d.refused else None) == refused
    assert (d.write.spec.replicas if d.write else None) == written
    if d.write is not None:
        assert d.write.version == STORED.version and d.write.updated_at == NOW  # no restart
    if refused is None:
        assert d.event == f"workload web scaled to {replicas}"


def test_a_refusal_is_the_typed_error_with_its_reason() -> None:
    with pytest.raises(NotFound, match="workload 'web' not found"):
        commands.scale(None, "web", 1, NOW).check()
    with pytest.raises(Conflict, match="web is being deleted; it cannot be scaled"):
        commands.scale(replace(STORED, deleted=True), "web", 1, NOW).check()


@pytest.mark.parametrize(
    ("deleted", "had_volumes", "volumes", "writes", "event"),
    [
        (False, False, False, (True, False), "workload web deleting"),
        (False, False, True, (True, True), "workload web and its volumes deleting"),
        (True, False, False, None, "workload web deleting"),  # again: nothing new
        (True, False, True, (True, True), "workload web and its volumes deleting"),  # + volumes
        (True, True, False, None, "workload web deleting"),  # volumes already asked for
    ],
)
def test_delete(
    deleted: bool,
    had_volumes: bool,
    volumes: bool,
    writes: tuple[bool, bool] | None,
    event: str,
) -> None:
    stored = replace(STORED, deleted=deleted, delete_volumes=had_volumes)
    d = commands.delete(stored, "web", volumes=volumes)
    assert d.refused is None and d.event == event
    assert ((d.write.deleted, d.write.delete_volumes) if d.write else None) == writes


def test_delete_a_missing_workload_is_not_found() -> None:
    assert commands.delete(None, "web", volumes=False).refused == commands.workload_not_found("web")


@pytest.mark.parametrize(
    ("command", "state", "written", "refused"),
    [
        (commands.cordon, S.READY, S.CORDONED, ""),
        (commands.cordon, S.CORDONED, None, ""),  # already cordoned: no write
        (commands.drain, S.READY, S.DRAINING, ""),
        (commands.uncordon, S.CORDONED, S.READY, ""),
        (commands.cordon, S.REMOVED, None, "cannot cordon node n1: node was removed"),
        (commands.remove, S.OFFLINE, S.REMOVED, ""),
    ],
)
def test_node_commands(command, state: NodeState, written, refused: str) -> None:  # type: ignore[no-untyped-def]
    d = command(Node.make("n1", state=state), "n1")
    assert (d.write.state if d.write else None) is written
    if refused:
        assert d.refused is not None and d.refused.code == "conflict"
        assert d.refused.reason.startswith(refused)
    else:
        assert d.refused is None and d.event.startswith("node n1 ")


@pytest.mark.parametrize(
    "command", [commands.cordon, commands.uncordon, commands.drain, commands.remove]
)
def test_node_commands_on_a_missing_node(command) -> None:  # type: ignore[no-untyped-def]
    d = command(None, "n1")
    assert d.write is None and d.refused == commands.node_not_found("n1")
