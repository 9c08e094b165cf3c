"""cloudless.store: the cluster's metadata store (Raft-replicated via etcd).

Owns: the ``Store`` seam (``protocol``) and its two implementations (``memory``, ``etcd``),
typed tables over it (``table``, ``tables/``), leader election with fencing (``election``),
watch resync (``watching``), running and joining etcd members (``etcd_process``,
``membership``), backups (``backup``), and a ``TokenStore`` backed by the store (``tokens``).
``EtcdStore``, the launcher and admin live in their modules (``etcd``, ``etcd_process``,
``etcd_admin``, ``membership``, ``backup``) so that importing this package does not load gRPC.
See docs/store.md.
"""

from cloudless.store.codec import Codec, DataclassCodec, DictCodec, PydanticCodec
from cloudless.store.election import Election, Leadership
from cloudless.store.errors import (
    Compacted,
    DecodeError,
    Fenced,
    InvalidRequest,
    LeaseNotFound,
    OutcomeUnknown,
    StoreError,
    Unavailable,
)
from cloudless.store.fence import NO_FENCE, Fence, fenced_txn
from cloudless.store.memory import MemoryStore
from cloudless.store.protocol import Store
from cloudless.store.table import Record, Table, TableEvent, TableListing
from cloudless.store.types import (
    Compare,
    Delete,
    Event,
    EventType,
    Get,
    KeyValue,
    Lease,
    Listing,
    Put,
    TxnResult,
    WatchBatch,
)
from cloudless.store.watching import Changes, Resync, watch_table, watch_with_resync

__all__ = [
    "NO_FENCE",
    "Changes",
    "Codec",
    "Compacted",
    "Compare",
    "DataclassCodec",
    "DecodeError",
    "Delete",
    "DictCodec",
    "Election",
    "Event",
    "EventType",
    "Fence",
    "Fenced",
    "Get",
    "InvalidRequest",
    "KeyValue",
    "Leadership",
    "Lease",
    "LeaseNotFound",
    "Listing",
    "MemoryStore",
    "OutcomeUnknown",
    "Put",
    "PydanticCodec",
    "Record",
    "Resync",
    "Store",
    "StoreError",
    "Table",
    "TableEvent",
    "TableListing",
    "TxnResult",
    "Unavailable",
    "WatchBatch",
    "fenced_txn",
    "watch_table",
    "watch_with_resync",
]
