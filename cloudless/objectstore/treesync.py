"""Comparing hash trees with a peer (``merkle.py``): the calls, their answers, and the walk
that narrows a differing (table, partition) down to the peer's rows this node should pull.

Calls (JSON, over ``rpc.Peer`` or, in tests, ``LocalPeer`` over another node's tables):

* ``roots``: the root summary of every (table, partition) asked, one call per peer and round;
* ``children``: the non-empty children of some nodes;
* ``items``: ``(pk, timestamp, writer, hash prefix)`` of the rows under some nodes;
* ``rows``: whole rows by pk.

``walk`` descends level by level from a differing root, asking only for the children of
differing nodes (``merkle.plan``), lists a node once it is a leaf or small, and returns the
pks ``merkle.wanted`` picks. Each level is one round trip; what crosses the wire grows with
the number of differing rows, not with the partition's size.

``METER`` counts the bytes of these calls (both directions) for the task that set it and
the tasks it starts: anti-entropy reports catch-up traffic with it.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cloudless.objectstore.crdt import Entry
from cloudless.objectstore.local import LocalStore
from cloudless.objectstore.merkle import Item, Node, Summary, item, plan, wanted

ROWS_PAGE = 256


@dataclass
class Meter:
    sent: int = 0
    received: int = 0

    @property
    def total(self) -> int:
        return self.sent + self.received


METER: contextvars.ContextVar[Meter | None] = contextvars.ContextVar("treesync_meter", default=None)


def count(sent: int, received: int) -> None:
    m = METER.get()
    if m is not None:
        m.sent += sent
        m.received += received


def _nodes(raw: Iterable[list[Any]]) -> list[Node]:
    return [(int(lv), int(i)) for lv, i, *_ in raw]


def _value(v: bytes | None) -> str | None:
    return None if v is None else base64.b64encode(v).decode()


CALLS = ("roots", "children", "items", "rows")


@dataclass(frozen=True)
class TreeCall:
    """One tree call, read: ``roots`` names ``tables`` and ``partitions``; the others one
    ``table`` and ``partition`` and, for ``children`` and ``items``, ``nodes``, for
    ``rows``, ``pks``."""

    call: str
    tables: tuple[str, ...] = ()
    partitions: frozenset[int] = frozenset()
    table: str = ""
    partition: int = 0
    nodes: tuple[Node, ...] = ()
    pks: tuple[str, ...] = ()


def read_call(local: LocalStore, call: str, body: dict[str, Any]) -> TreeCall:
    """``body`` of tree call ``call`` read and checked (the tables are ones ``local``
    replicates); ``KeyError``, ``TypeError`` or ``ValueError`` naming what is wrong."""
    if call not in CALLS:
        raise ValueError(f"unknown tree call {call!r}")
    if call == "roots":
        tables = tuple(str(t) for t in body["tables"])
        for t in tables:
            local.replicated(t)
        return TreeCall(call, tables, frozenset(int(p) for p in body["partitions"]))
    table, part = str(body["table"]), int(body["partition"])
    local.replicated(table)
    if call == "rows":
        return TreeCall(call, table=table, partition=part, pks=tuple(str(k) for k in body["pks"]))
    return TreeCall(call, table=table, partition=part, nodes=tuple(_nodes(body["nodes"])))


def answer(local: LocalStore, c: TreeCall) -> dict[str, Any]:
    """The answer to the tree call ``c`` (``read_call``'s) on ``local``."""
    tree = local.meta.tree
    if c.call == "roots":
        out = []
        for t in c.tables:  # a table replicated here has a tree, even if empty
            out += [[t, p, s[0].hex(), s[1]] for p, s in tree.roots(t).items() if p in c.partitions]
        return {"roots": out}
    if c.call == "children":
        found = tree.children(c.table, c.partition, c.nodes)
        return {"nodes": [[lv, i, s[0].hex(), s[1]] for (lv, i), s in sorted(found.items())]}
    if c.call == "items":
        rows = local.raw(c.table).under(c.partition, list(c.nodes))
        return {"items": [list(item(pk, e)) for pk, e in rows]}
    rows = local.raw(c.table).rows(list(c.pks))
    return {"rows": [[pk, e.timestamp, e.writer, _value(e.value)] for pk, e in rows]}


class TreeCalls(ABC):
    """The tree calls to one peer; implementations move JSON bodies (``_call``)."""

    name: str

    @abstractmethod
    async def _call(self, call: str, body: dict[str, Any]) -> dict[str, Any]: ...

    async def roots(
        self, tables: list[str], partitions: list[int]
    ) -> dict[tuple[str, int], Summary]:
        r = await self._call("roots", {"tables": tables, "partitions": partitions})
        return {(str(t), int(p)): (bytes.fromhex(h), int(c)) for t, p, h, c in r["roots"]}

    async def children(self, table: str, part: int, nodes: list[Node]) -> dict[Node, Summary]:
        body = {"table": table, "partition": part, "nodes": [list(n) for n in nodes]}
        r = await self._call("children", body)
        return {(int(lv), int(i)): (bytes.fromhex(h), int(c)) for lv, i, h, c in r["nodes"]}

    async def items(self, table: str, part: int, nodes: list[Node]) -> list[Item]:
        body = {"table": table, "partition": part, "nodes": [list(n) for n in nodes]}
        r = await self._call("items", body)
        return [(str(pk), int(ts), str(w), str(h)) for pk, ts, w, h in r["items"]]

    async def rows(self, table: str, part: int, pks: list[str]) -> list[tuple[str, Entry]]:
        r = await self._call("rows", {"table": table, "partition": part, "pks": pks})
        return [
            (str(pk), Entry(int(ts), str(w), None if v is None else base64.b64decode(v)))
            for pk, ts, w, v in r["rows"]
        ]


class LocalPeer(TreeCalls):
    """Another node's tables in this process, through the same JSON answers (and metered
    the same way) as over the network: the seam's in-memory implementation."""

    def __init__(self, name: str, local: LocalStore) -> None:
        self.name = name
        self.local = local

    async def _call(self, call: str, body: dict[str, Any]) -> dict[str, Any]:
        sent = json.dumps(body).encode()
        read = read_call(self.local, call, json.loads(sent))
        got = json.dumps(answer(self.local, read)).encode()
        count(len(sent), len(got))
        result: dict[str, Any] = json.loads(got)
        return result


async def differing(
    peer: TreeCalls, local: LocalStore, tables: list[str], parts: list[int]
) -> list[tuple[str, int, Summary]]:
    """``(table, partition, the peer's root)`` of each of ``parts`` whose roots differ, in
    one call. A (table, partition) the peer holds nothing of has nothing to pull."""
    theirs = await peer.roots(tables, parts)
    tree = local.meta.tree
    out = []
    for t in tables:
        local.raw(t)
        mine = tree.roots(t)
        for p in parts:
            s = theirs.get((t, p))
            if s is not None and mine.get(p) != s:
                out.append((t, p, s))
    return out


async def fetch(
    peer: TreeCalls, local: LocalStore, table: str, part: int, their_root: Summary
) -> list[tuple[str, Entry]]:
    """The peer's rows of (``table``, ``part``) this node lacks or holds older (``walk``,
    then ``pull_rows``)."""
    return await pull_rows(peer, table, part, await walk(peer, local, table, part, their_root))


async def walk(
    peer: TreeCalls, local: LocalStore, table: str, part: int, their_root: Summary
) -> list[str]:
    """The pks of ``peer``'s rows of (``table``, ``part``) this node lacks or holds an older
    state of, found by descending both trees from the peer's root summary."""
    tree = local.meta.tree
    rows = local.raw(table)
    root: Node = (0, 0)
    theirs: dict[Node, Summary] = {root: their_root}
    mine = tree.nodes(table, part, [root])
    want: list[str] = []
    while theirs:
        descend, listed = plan(mine, theirs)
        # one round trip per level: the listing and the next level's children together
        try:
            async with asyncio.TaskGroup() as tg:
                items = tg.create_task(peer.items(table, part, listed)) if listed else None
                below = tg.create_task(peer.children(table, part, descend)) if descend else None
        except BaseExceptionGroup as e:
            raise e.exceptions[0] from None  # the peer's error (PeerError), as itself
        if items is not None:
            their_items = items.result()
            want += wanted((item(pk, e) for pk, e in rows.under(part, listed)), their_items)
        if below is None:
            break
        theirs = below.result()
        mine = tree.children(table, part, descend)
    return want


async def pull_rows(
    peer: TreeCalls, table: str, part: int, pks: list[str]
) -> list[tuple[str, Entry]]:
    """The rows ``pks`` of the peer, ``ROWS_PAGE`` per call."""
    out: list[tuple[str, Entry]] = []
    for i in range(0, len(pks), ROWS_PAGE):
        out += await peer.rows(table, part, pks[i : i + ROWS_PAGE])
    return out
