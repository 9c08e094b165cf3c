"""The cluster's tables: one module per table, each a ``TableSpec`` (prefix + default codec).

Key layout (all under ``/cloudless/``)::

    cluster/identity          ClusterIdentity, written once at bootstrap (create-if-absent)
    config/<name>             cluster configuration documents
    secrets/<name>            sealed secrets (``tables.secrets``)
    configs/<name>            sealed configs, the workloads' (``tables.secrets``)
    nodes/<node-id>           nodes
    workloads/<workload-id>   workloads (desired state)
    replicas/<workload-id>/<replica-id>   replicas and their assignment to nodes
    tokens/<token-id>         bootstrap tokens (used marks are compare-and-swapped)
    revocations/<serial>      revoked certificates / identities
    ca/<name>                 CA material (public parts; keys only if configured)
    election/<name>           leader election keys (see ``cloudless.store.election``)

Bind with ``NODES.bind(store)`` (plain dicts) or ``NODES.bind(store, codec)`` to plug a model
type, e.g. ``PydanticCodec(Node, kind="node")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from cloudless.store.codec import Codec
from cloudless.store.protocol import Store
from cloudless.store.table import Table

ROOT = "/cloudless/"

T = TypeVar("T")
D = TypeVar("D")


@dataclass(frozen=True)
class TableSpec(Generic[D]):
    name: str
    default_codec: Codec[D]

    @property
    def prefix(self) -> str:
        return f"{ROOT}{self.name}/"

    @overload
    def bind(self, store: Store) -> Table[D]: ...

    @overload
    def bind(self, store: Store, codec: Codec[T]) -> Table[T]: ...

    def bind(self, store: Store, codec: Codec[Any] | None = None) -> Table[Any]:
        return Table(store, self.prefix, codec or self.default_codec)
