"""The coordinator's typed view of the store: nodes, workloads, replicas and events.

Every component reads and writes cluster state through ``ClusterState``; none holds a
reference to another. ``snapshot()`` reads the three main tables at one store revision, so a
decision never mixes two moments.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from cloudless.coordinator.state.cluster_view import ClusterView
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.model.node import Node
from cloudless.model.replica import Replica
from cloudless.store.codec import DictCodec, Migration
from cloudless.store.protocol import Store
from cloudless.store.table import Table
from cloudless.store.tables import ROOT
from cloudless.store.tables.nodes import NODES
from cloudless.store.tables.replicas import REPLICAS, replica_name
from cloudless.store.tables.revocations import REVOCATIONS, Revocation
from cloudless.store.tables.workloads import WORKLOADS

T = TypeVar("T", bound="_DictModel")


class _DictModel(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


class ModelCodec(Generic[T]):
    """A model type with ``to_dict``/``from_dict`` as a store codec."""

    def __init__(self, kind: str, decode: Callable[[dict[str, Any]], T], version: int = 1) -> None:
        self.kind = kind
        self.version = version
        self.migrations: Mapping[int, Migration] = {}
        self._decode = decode

    def encode(self, value: T) -> Any:
        return value.to_dict()

    def decode(self, data: Any) -> T:
        return self._decode(data)


@dataclass(frozen=True)
class Snapshot:
    view: ClusterView
    revision: int
    problems: tuple[str, ...] = ()  # records that did not decode, by key


EVENTS_PREFIX = f"{ROOT}events/"
NETPOLICIES_PREFIX = f"{ROOT}netpolicies/"


class ClusterState:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.nodes: Table[Node] = NODES.bind(store, ModelCodec("node", Node.from_dict))
        self.workloads: Table[WorkloadRecord] = WORKLOADS.bind(
            store, ModelCodec("workload", WorkloadRecord.from_dict)
        )
        self.replicas: Table[Replica] = REPLICAS.bind(
            store, ModelCodec("replica", Replica.from_dict)
        )
        self.events: Table[dict[str, Any]] = Table(store, EVENTS_PREFIX, DictCodec("event"))
        self.revocations: Table[Revocation] = REVOCATIONS.bind(store)
        # network policies as applied (``cloudless.network.netpolicy`` documents), by name
        self.netpolicies: Table[dict[str, Any]] = Table(
            store, NETPOLICIES_PREFIX, DictCodec("netpolicy")
        )

    @staticmethod
    def replica_key(r: Replica) -> str:
        return replica_name(r.workload, r.id)

    async def snapshot(self) -> Snapshot:
        nodes = await self.nodes.list()
        rev = nodes.revision
        workloads = await self.workloads.list(revision=rev)
        replicas = await self.replicas.list(revision=rev)
        problems = tuple(str(e) for e in (*nodes.errors, *workloads.errors, *replicas.errors))
        view = ClusterView(
            nodes={r.name: r.value for r in nodes.records},
            workloads={r.name: r.value for r in workloads.records},
            replicas={r.value.id: r.value for r in replicas.records},
        )
        return Snapshot(view, rev, problems)


# Distinguishes two coordinators' events written in the same microsecond (three digits, as
# the counter; the key keeps its former length).
_EVENT_TAG = f"{os.getpid() % 1000:03d}"
_EVENT_SEQ = itertools.count()


def event(kind: str, message: str, at: float, **fields: Any) -> tuple[str, dict[str, Any]]:
    """An event record and its key (time-ordered, unique enough across coordinators: the
    microsecond, then this process's tag and a counter for events in the same microsecond)."""
    name = f"{int(at * 1e6):020d}-{_EVENT_TAG}{next(_EVENT_SEQ) % 1000:03d}"
    body = {"kind": kind, "message": message, "at": at, **fields}
    json.dumps(body)  # must be JSON-able: fail here, not in the store
    return name, body
