"""``config/<name>`` cluster configuration, and ``cluster/identity`` written once at bootstrap."""

from __future__ import annotations

from dataclasses import dataclass

from cloudless.store.codec import DataclassCodec, DictCodec
from cloudless.store.tables import TableSpec

CONFIG = TableSpec("config", DictCodec("config"))


@dataclass(frozen=True)
class ClusterIdentity:
    cluster_id: str
    trust_domain: str
    created_at: float
    ca_fingerprint: str = ""  # sha256 of the root CA certificate, hex


CLUSTER = TableSpec("cluster", DataclassCodec(ClusterIdentity, kind="cluster_identity"))
IDENTITY = "identity"
