"""Table and codec behaviour over the in-memory store."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pytest

from cloudless.lib.clock import FakeClock
from cloudless.lib.errors import Conflict, ValidationError
from cloudless.store import (
    DataclassCodec,
    DecodeError,
    DictCodec,
    EventType,
    Fence,
    Fenced,
    MemoryStore,
    Table,
)
from cloudless.store.errors import OutcomeUnknown
from cloudless.store.tables.config import CLUSTER, IDENTITY, ClusterIdentity
from cloudless.store.tables.nodes import NODES
from cloudless.store.types import Compare


@dataclass(frozen=True)
class Port:
    number: int
    proto: str = "tcp"


@dataclass(frozen=True)
class Svc:
    name: str
    ports: tuple[Port, ...] = ()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore(FakeClock())


async def test_dataclass_round_trip_with_nested_tuples(store: MemoryStore) -> None:
    t = Table(store, "/x/svc/", DataclassCodec(Svc))
    svc = Svc("web", (Port(80), Port(53, "udp")))
    await t.put("web", svc)
    rec = await t.get("web")
    assert rec is not None and rec.value == svc and rec.version == 1


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not JSON"),
        (b'{"x": 1}', "missing the schema envelope"),
        (b'{"schema": "other", "v": 1, "data": {}}', "holds a 'other'"),
        (b'{"schema": "Svc", "v": 9, "data": {}}', "reads up to v1; upgrade"),
        (b'{"schema": "Svc", "v": 1, "data": {"name": "a", "bogus": 1}}', "unknown field"),
        (b'{"schema": "Svc", "v": 1, "data": {}}', "TypeError"),
    ],
)
async def test_bad_values_are_decode_errors_naming_the_key(
    store: MemoryStore, raw: bytes, reason: str
) -> None:
    t = Table(store, "/x/svc/", DataclassCodec(Svc))
    await store.put("/x/svc/bad", raw)
    await t.put("good", Svc("good"))
    with pytest.raises(DecodeError) as info:
        await t.get("bad")
    assert "'/x/svc/bad'" in str(info.value) and reason in str(info.value)
    listing = await t.list()  # one bad record does not hide the good ones
    assert [r.name for r in listing.records] == ["good"]
    assert [e.key for e in listing.errors] == ["/x/svc/bad"]


async def test_migration_upgrades_old_versions(store: MemoryStore) -> None:
    # v1 stored {"host": ...}; v2 renamed it to {"address": ...}
    v2 = DictCodec("node", version=2, migrations={1: lambda d: {"address": d["host"]}})
    await store.put(
        "/x/n/a", json.dumps({"schema": "node", "v": 1, "data": {"host": "h"}}).encode()
    )
    rec = await Table(store, "/x/n/", v2).get("a")
    assert rec is not None and rec.value == {"address": "h"}


async def test_create_cas_delete_update(store: MemoryStore) -> None:
    nodes = NODES.bind(store)
    r1 = await nodes.create("n1", {"id": "n1", "cpu": 1})
    with pytest.raises(Conflict, match="node 'n1' already exists"):
        await nodes.create("n1", {"id": "n1"})
    assert await nodes.cas("n1", {"id": "n1", "cpu": 2}, expect=r1 - 1) is None  # stale
    r2 = await nodes.cas("n1", {"id": "n1", "cpu": 2}, expect=r1)
    assert r2 == r1 + 1
    rec = await nodes.update("n1", lambda v: {**(v or {}), "cpu": (v or {})["cpu"] + 1})
    assert rec is not None and rec.value["cpu"] == 3 and rec.mod_revision == r2 + 1
    assert await nodes.delete("n1", expect=r1) is False  # stale expectation
    assert await nodes.delete("n1") is True
    assert await nodes.delete("n1") is False


async def test_cas_many_is_all_or_nothing(store: MemoryStore) -> None:
    nodes = NODES.bind(store)
    r1 = await nodes.create("n1", {"id": "n1", "cpu": 1})
    r2 = await nodes.create("n2", {"id": "n2", "cpu": 1})
    # n2 expected at r1 (stale): neither is written
    assert (
        await nodes.cas_many(
            [("n1", {"id": "n1", "cpu": 2}, r1), ("n2", {"id": "n2", "cpu": 2}, r1)]
        )
        is None
    )
    assert [(await nodes.get(n)).value["cpu"] for n in ("n1", "n2")] == [1, 1]  # type: ignore[union-attr]
    rev = await nodes.cas_many(
        [
            ("n1", {"id": "n1", "cpu": 3}, r1),
            ("n2", {"id": "n2", "cpu": 3}, r2),
            ("n3", {"id": "n3"}, 0),
        ]
    )
    assert rev == r2 + 1  # one transaction, one revision
    got = {n: await nodes.get(n) for n in ("n1", "n2", "n3")}
    assert all(r is not None and r.mod_revision == rev for r in got.values())
    assert await nodes.cas_many([]) is None
    with pytest.raises(ValueError, match="at most 100"):
        await nodes.cas_many([(f"x{i}", {"id": f"x{i}"}, 0) for i in range(101)])


async def test_fence_refuses_deposed_writer(store: MemoryStore) -> None:
    nodes = NODES.bind(store)
    await store.put("/e/leader", b"me")
    fence = Fence((Compare.value("/e/leader", "==", b"me"),), "me")
    await nodes.put("n1", {"id": "n1"}, fence=fence)
    # our own compare failing is a plain "lost the race", not a fence failure
    assert await nodes.cas("n1", {"id": "n1"}, expect=0, fence=fence) is None
    await store.put("/e/leader", b"someone-else")
    with pytest.raises(Fenced, match="no longer the leader"):
        await nodes.put("n2", {"id": "n2"}, fence=fence)
    assert await nodes.get("n2") is None


async def test_identity_written_once(store: MemoryStore) -> None:
    cluster = CLUSTER.bind(store)
    await cluster.create(IDENTITY, ClusterIdentity("c1", "example.org", 1.0))
    with pytest.raises(Conflict):
        await cluster.create(IDENTITY, ClusterIdentity("c2", "example.org", 2.0))
    rec = await cluster.get(IDENTITY)
    assert rec is not None and rec.value.cluster_id == "c1"


async def test_watch_decodes_and_reports_bad_records(store: MemoryStore) -> None:
    nodes = NODES.bind(store)
    start = await store.revision() + 1
    await nodes.put("a", {"id": "a"})
    await store.put(nodes.prefix + "b", b"garbage")
    await nodes.delete("a")
    seen = []
    async for ev in nodes.watch(start_revision=start):
        seen.append((ev.type, ev.name, ev.record is not None, ev.error is not None))
        if len(seen) == 3:
            break
    assert seen == [
        (EventType.PUT, "a", True, False),
        (EventType.PUT, "b", False, True),
        (EventType.DELETE, "a", False, False),
    ]


@pytest.mark.parametrize("name", ["", "/abs", "a\nb", "x" * 254])
def test_bad_names(store: MemoryStore, name: str) -> None:
    with pytest.raises(ValidationError):
        NODES.bind(store).key(name)


class LosesAnswers(MemoryStore):
    """Applies every ``lose``-th transaction but reports ``OutcomeUnknown`` (a lost reply)."""

    def __init__(self, lose: set[int]) -> None:
        super().__init__(FakeClock())
        self.lose = lose
        self.n = 0

    async def txn(self, compares, success, failure=()):  # type: ignore[no-untyped-def]
        self.n += 1
        res = await super().txn(compares, success, failure)
        if self.n in self.lose:
            raise OutcomeUnknown("answer lost")
        return res


async def test_update_after_lost_answer_does_not_apply_twice() -> None:
    s = LosesAnswers(lose={2})  # txn 1: create; txn 2: first increment, applied but lost
    t = NODES.bind(s)
    await t.create("n", {"id": "n", "count": 0})
    rec = await t.update("n", lambda v: {**(v or {}), "count": (v or {})["count"] + 1})
    assert rec is not None and rec.value["count"] == 1  # 0 + 1 once, not twice
    got = await t.get("n")
    assert got is not None and got.value["count"] == 1


@dataclass(frozen=True)
class Inner:
    a: int


@dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner
    items: tuple[Inner, ...] = ()
    extra: int = 0


NEWER = {"name": "n", "inner": {"a": 1, "b": 2}, "items": [{"a": 3, "c": 4}], "later": True}

# (codec, what decoding a record with fields this code does not know gives)
UNKNOWN = [
    (DataclassCodec(Outer), "unknown field(s) later"),
    (DataclassCodec(Outer, ignore_unknown=True), Outer("n", Inner(1), (Inner(3),))),
]


@pytest.mark.parametrize(("codec", "want"), UNKNOWN)
def test_unknown_fields_are_refused_unless_the_codec_ignores_them(
    codec: DataclassCodec[Outer], want: object
) -> None:
    if isinstance(want, str):
        with pytest.raises(ValueError, match=re.escape(want)):
            codec.decode(NEWER)
    else:
        assert codec.decode(NEWER) == want
        assert codec.decode({"name": "n", "inner": {"a": 1}}) == Outer("n", Inner(1))


@dataclass(frozen=True)
class Grown:
    """``Outer``'s first fields, and two added later with defaults."""

    name: str
    inner: Inner
    flag: bool = False
    note: str = ""


# (value, what the codec writes: fields at their default left out)
OMITTED = [
    (Grown("n", Inner(1)), {"name": "n", "inner": {"a": 1}}),
    (Grown("n", Inner(1), flag=True), {"name": "n", "inner": {"a": 1}, "flag": True}),
    (Grown("n", Inner(1), note="x"), {"name": "n", "inner": {"a": 1}, "note": "x"}),
]


@pytest.mark.parametrize(("value", "written"), OMITTED)
def test_fields_at_their_default_can_be_left_out_for_older_readers(
    value: Grown, written: dict[str, object]
) -> None:
    codec = DataclassCodec(Grown, omit_default=("flag", "note"))
    assert codec.encode(value) == written
    assert codec.decode(written) == value
    older = DataclassCodec(Outer)  # a reader from before the two fields
    if len(written) == 2:
        assert older.decode(written) == Outer("n", Inner(1))
    else:
        with pytest.raises(ValueError, match="unknown field"):
            older.decode(written)


def test_only_fields_with_plain_defaults_can_be_left_out() -> None:
    with pytest.raises(ValueError, match=re.escape("Grown.name: not a field with a plain default")):
        DataclassCodec(Grown, omit_default=("name",))
    with pytest.raises(ValueError, match=re.escape("Grown.nope")):
        DataclassCodec(Grown, omit_default=("nope",))
