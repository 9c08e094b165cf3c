"""What the cluster's event log says about the object store (kind ``objectstore``), decided in
pure code from what the cluster store holds:

* a node registered for the first time, or its zone or capacity changed;
* a node's disk filled (it refuses writes) or has room again;
* a new layout version (nodes added and removed, partition copies that move), whether an
  operator applied it or the churn policy did (an operator's apply is also an ``s3`` event,
  saying who asked), and the end of its transition (every node synced it);
* a bucket made public-read or private again, its lifecycle rules (which delete data) and
  its CORS rules set, changed or removed: changes made through the S3 API of any node,
  which no other event tells.

``StoreEvents.run`` is a loop of the coordinator's leader: every ``EVERY_S`` it reads the
registrations and the layout history and emits what changed since its last reading. What
it finds when it starts (a new leader) is its baseline, never announced, so a leader change
repeats nothing; a change that comes and goes within a leader change is not told.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from cloudless.lib.clock import Clock
from cloudless.objectstore import lifecycle
from cloudless.objectstore.history import LayoutHistory
from cloudless.objectstore.layout_store import LayoutStore
from cloudless.objectstore.members import NODES, StorageNode
from cloudless.objectstore.s3 import cors
from cloudless.objectstore.s3.iam import BUCKETS, Bucket
from cloudless.store.errors import StoreError
from cloudless.store.protocol import Store

log = logging.getLogger(__name__)
KIND = "objectstore"
EVERY_S = 2.0


@dataclass(frozen=True)
class Said:
    message: str
    node: str = ""
    """The node the event is about ("" for the layout)."""


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def _role(n: StorageNode) -> str:
    return f"zone {n.zone}, " + (f"{_gib(n.capacity)} offered" if n.capacity else "gateway")


def node_events(before: Mapping[str, StorageNode], after: Mapping[str, StorageNode]) -> list[Said]:
    out: list[Said] = []
    for name in sorted(after):
        new, old = after[name], before.get(name)
        if old is None:
            out.append(Said(f"object store node {name} registered: {_role(new)}", name))
        elif (old.zone, old.capacity) != (new.zone, new.capacity):
            out.append(Said(f"object store node {name} now {_role(new)}", name))
        was_full = old is not None and old.refusing_writes
        if new.refusing_writes and not was_full:
            free = "" if new.disk_size <= 0 else (
                f" ({_gib(max(new.disk_free, 0))} of {_gib(new.disk_size)} free)"
            )  # fmt: skip
            out.append(Said(f"object store node {name}: disk full{free}, refusing writes", name))
        elif was_full and not new.refusing_writes:
            out.append(Said(f"object store node {name}: disk has room again, taking writes", name))
    return out


def layout_events(before: LayoutHistory, after: LayoutHistory) -> list[Said]:
    out: list[Said] = []
    old, new = before.current, after.current
    if new is not None and (old is None or new.version > old.version):
        was = set(old.roles) if old else set()
        added, removed = sorted(set(new.roles) - was), sorted(was - set(new.roles))
        changes = [f"+{n}" for n in added] + [f"-{n}" for n in removed]
        if old is None:
            moves = "first layout"
        else:
            n = sum(
                len(set(p) - set(q)) for p, q in zip(new.partitions, old.partitions, strict=True)
            )
            moves = f"{n} partition copies move"
        what = ", ".join(changes) if changes else "roles changed"
        out.append(
            Said(f"object store layout v{new.version} (R={new.replication}): {what}; {moves}")
        )
    if new is not None and len(after.versions) == 1 and len(before.versions) > 1:
        out.append(Said(f"object store layout v{new.version} in force: every node synced it"))
    return out


def _rules_said(bucket: str, what: str, n: int) -> Said:
    if n == 0:
        return Said(f"s3 bucket {bucket}: {what} rules removed")
    return Said(f"s3 bucket {bucket}: {what} rules set ({n})")


def bucket_events(before: Mapping[str, Bucket], after: Mapping[str, Bucket]) -> list[Said]:
    """What changed in buckets both readings know (creation and deletion are the ``s3``
    events of the API, or the S3 requests' own answers)."""
    out: list[Said] = []
    for name in sorted(set(before) & set(after)):
        old, new = before[name], after[name]
        if new.public_read and not old.public_read:
            out.append(Said(f"s3 bucket {name} is now public-read: anyone may list it and "
                            "read its objects, unsigned"))  # fmt: skip
        elif old.public_read and not new.public_read:
            out.append(Said(f"s3 bucket {name} is private again"))
        if old.lifecycle != new.lifecycle:
            n = len(lifecycle.decode(new.lifecycle))
            out.append(_rules_said(name, "lifecycle", n))
        if old.cors != new.cors:
            out.append(_rules_said(name, "CORS", len(cors.decode(new.cors))))
    return out


Emit = Callable[[str, str, dict[str, str]], Awaitable[None]]
"""``emit(kind, message, fields)``: puts an event (the coordinator's ``EventRecorder``)."""


class StoreEvents:
    def __init__(self, store: Store, emit: Emit, clock: Clock) -> None:
        self.store = store
        self.emit = emit
        self.clock = clock
        self.nodes: dict[str, StorageNode] | None = None
        self.layout: LayoutHistory | None = None
        self.buckets: dict[str, Bucket] | None = None

    async def run(self) -> None:
        while True:
            try:
                await self.once()
            except StoreError as e:  # the next reading compares with the last good one
                log.info("object store events: %s", e)
            await self.clock.sleep(EVERY_S)

    async def once(self) -> list[Said]:
        """Read, compare with the last reading, emit; returns what was said."""
        nodes = {r.name: r.value for r in (await NODES.bind(self.store).list()).records}
        layout = await LayoutStore(self.store).show()
        buckets = {r.name: r.value for r in (await BUCKETS.bind(self.store).list()).records}
        said: list[Said] = []
        if self.nodes is not None and self.layout is not None and self.buckets is not None:
            said = (
                node_events(self.nodes, nodes)
                + layout_events(self.layout, layout)
                + bucket_events(self.buckets, buckets)
            )
        self.nodes, self.layout, self.buckets = nodes, layout, buckets
        for s in said:
            await self.emit(KIND, s.message, {"node": s.node} if s.node else {})
        return said
