"""Values exchanged with a ``Store``: key-values, events, compares, transaction ops.

Semantics follow etcd v3 exactly, so the in-memory store and the etcd adapter agree:

* The store has one global ``revision`` that increases by one per write transaction.
* A key's ``create_revision`` is the revision that created it, ``mod_revision`` the one that
  last changed it, ``version`` counts puts since creation (a deleted key has version 0).
* A compare on a missing key sees ``version == create_revision == mod_revision == lease == 0``;
  a *value* compare on a missing key is always false.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


class EventType(enum.Enum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True)
class Event:
    """One change. For a DELETE, ``kv.value`` is empty and ``kv.mod_revision`` is the deletion's
    revision. ``prev_kv`` is set only when the watch asked for it."""

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None

    @property
    def key(self) -> str:
        return self.kv.key

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


@dataclass(frozen=True)
class WatchBatch:
    """Events delivered together, all with ``mod_revision <= revision`` (the store's revision
    when the batch was sent)."""

    events: tuple[Event, ...]
    revision: int


@dataclass(frozen=True)
class Listing:
    """A prefix read: every key as of one ``revision``, sorted by key."""

    kvs: tuple[KeyValue, ...]
    revision: int


@dataclass(frozen=True)
class KeyListing:
    """The first keys under a prefix (sorted, without values), how many keys the prefix
    holds in all, and the ``revision`` both reflect."""

    keys: tuple[str, ...]
    count: int
    revision: int


@dataclass(frozen=True)
class Lease:
    id: int
    ttl: int


class Target(enum.Enum):
    VALUE = "value"
    VERSION = "version"
    CREATE = "create_revision"
    MOD = "mod_revision"
    LEASE = "lease"


class Op(enum.Enum):
    EQ = "=="
    NE = "!="
    LT = "<"
    GT = ">"


_OPS = {o.value: o for o in Op}


@dataclass(frozen=True)
class Compare:
    """A transaction guard on one key. Build with the class methods::

    Compare.version(k, "==", 0)          # k does not exist
    Compare.mod_revision(k, "==", 42)    # k unchanged since revision 42
    Compare.value(k, "==", b"me")
    Compare.lease(k, "==", lease_id)
    """

    key: str
    target: Target
    op: Op
    operand: int | bytes

    @classmethod
    def _make(cls, key: str, target: Target, op: str, operand: int | bytes) -> Compare:
        if op not in _OPS:
            raise ValueError(f"compare operator {op!r} must be one of {sorted(_OPS)}")
        return cls(key, target, _OPS[op], operand)

    @classmethod
    def value(cls, key: str, op: str, value: bytes) -> Compare:
        return cls._make(key, Target.VALUE, op, value)

    @classmethod
    def version(cls, key: str, op: str, version: int) -> Compare:
        return cls._make(key, Target.VERSION, op, version)

    @classmethod
    def create_revision(cls, key: str, op: str, revision: int) -> Compare:
        return cls._make(key, Target.CREATE, op, revision)

    @classmethod
    def mod_revision(cls, key: str, op: str, revision: int) -> Compare:
        return cls._make(key, Target.MOD, op, revision)

    @classmethod
    def lease(cls, key: str, op: str, lease_id: int) -> Compare:
        return cls._make(key, Target.LEASE, op, lease_id)

    @classmethod
    def absent(cls, key: str) -> Compare:
        return cls.version(key, "==", 0)

    def holds(self, kv: KeyValue | None) -> bool:
        """Evaluate against the key's current state (``None`` = missing), as etcd does."""
        if kv is None:
            if self.target is Target.VALUE:
                return False
            kv = KeyValue(self.key, b"", 0, 0, 0, 0)
        actual: int | bytes
        match self.target:
            case Target.VALUE:
                actual = kv.value
            case Target.VERSION:
                actual = kv.version
            case Target.CREATE:
                actual = kv.create_revision
            case Target.MOD:
                actual = kv.mod_revision
            case Target.LEASE:
                actual = kv.lease
        want = self.operand
        if isinstance(actual, bytes) != isinstance(want, bytes):
            raise TypeError(f"compare {self.target.value} needs {type(actual).__name__}")
        match self.op:
            case Op.EQ:
                return actual == want
            case Op.NE:
                return actual != want
            case Op.LT:
                return actual < want  # type: ignore[operator]
            case Op.GT:
                return actual > want  # type: ignore[operator]


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True)
class Delete:
    """Delete ``key``; with ``prefix=True`` every key starting with ``key``."""

    key: str
    prefix: bool = False


@dataclass(frozen=True)
class Get:
    """Read ``key``; with ``prefix=True`` every key starting with ``key``."""

    key: str
    prefix: bool = False


TxnOp = Put | Delete | Get


@dataclass(frozen=True)
class PutResult:
    prev_kv: KeyValue | None = None


@dataclass(frozen=True)
class DeleteResult:
    deleted: int


@dataclass(frozen=True)
class GetResult:
    kvs: tuple[KeyValue, ...]


OpResult = PutResult | DeleteResult | GetResult


@dataclass(frozen=True)
class TxnResult:
    """``succeeded`` says which branch ran; ``revision`` is the store revision after it."""

    succeeded: bool
    revision: int
    results: tuple[OpResult, ...] = field(default=())


def check_ops(ops: Sequence[TxnOp]) -> None:
    """etcd refuses a transaction branch that puts one key twice, or puts a key that a
    delete in the same branch covers; so do we (same error on both stores)."""
    from cloudless.store.errors import InvalidRequest

    puts: set[str] = set()
    deletes = [op for op in ops if isinstance(op, Delete)]
    for op in ops:
        if not isinstance(op, Put):
            continue
        if op.key in puts:
            raise InvalidRequest(f"key {op.key!r} is written twice in one transaction")
        puts.add(op.key)
        for d in deletes:
            if d.key == op.key or (d.prefix and op.key.startswith(d.key)):
                raise InvalidRequest(f"key {op.key!r} is both put and deleted in one transaction")


def prefix_end(prefix: str) -> bytes:
    """The exclusive upper bound of the byte range of keys starting with ``prefix``."""
    b = bytearray(prefix.encode())
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\x00"
