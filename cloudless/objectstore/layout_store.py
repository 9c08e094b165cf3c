"""The layout history in etcd: one record, ``/cloudless/objectstore/layout``, changed only by
compare-and-swap (``Table.update``), so concurrent stagers and appliers never lose a write.
The decisions are the pure functions of ``history.py``; this module only reads and swaps."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cloudless.lib.errors import CloudlessError
from cloudless.objectstore import history as h
from cloudless.objectstore.layout import PARTITIONS, LayoutVersion, NodeRole, Plan
from cloudless.store.codec import Migration
from cloudless.store.protocol import Store
from cloudless.store.table import Table
from cloudless.store.tables import TableSpec

LAYOUT = "layout"


class LayoutCodec:
    kind = "objectstore_layout"
    version = 1
    migrations: Mapping[int, Migration] = {}

    def encode(self, value: h.LayoutHistory) -> Any:
        return {
            "versions": [
                {
                    "version": v.version,
                    "replication": v.replication,
                    "roles": {n: [r.zone, r.capacity] for n, r in sorted(v.roles.items())},
                    "partitions": [list(p) for p in v.partitions],
                }
                for v in value.versions
            ],
            "staged_roles": {
                n: None if r is None else [r.zone, r.capacity]
                for n, r in sorted(value.staged_roles.items())
            },
            "staged_replication": value.staged_replication,
            "synced": dict(sorted(value.synced.items())),
            "seen": dict(sorted(value.seen.items())),
            "reading": dict(sorted(value.reading.items())),
            "removed": sorted(value.removed),
        }

    def decode(self, data: Any) -> h.LayoutHistory:
        versions = []
        for v in data["versions"]:
            parts = tuple(tuple(str(n) for n in p) for p in v["partitions"])
            if len(parts) != PARTITIONS:
                raise ValueError(f"version {v['version']}: {len(parts)} partitions")
            roles = {str(n): NodeRole(str(z), int(c)) for n, (z, c) in v["roles"].items()}
            versions.append(LayoutVersion(int(v["version"]), int(v["replication"]), roles, parts))
        staged = {
            str(n): None if r is None else NodeRole(str(r[0]), int(r[1]))
            for n, r in data["staged_roles"].items()
        }
        rep = data["staged_replication"]
        return h.LayoutHistory(
            versions=tuple(versions),
            staged_roles=staged,
            staged_replication=None if rep is None else int(rep),
            synced={str(n): int(v) for n, v in data["synced"].items()},
            seen={str(n): int(v) for n, v in data.get("seen", {}).items()},
            reading={str(n): int(v) for n, v in data.get("reading", {}).items()},
            removed=frozenset(str(n) for n in data.get("removed", ())),
        )


OBJECTSTORE: TableSpec[h.LayoutHistory] = TableSpec("objectstore", LayoutCodec())


class LayoutStore:
    """Show, stage, preview and apply layout changes; trackers for synced nodes."""

    def __init__(self, store: Store) -> None:
        self.table: Table[h.LayoutHistory] = OBJECTSTORE.bind(store)

    async def show(self) -> h.LayoutHistory:
        rec = await self.table.get(LAYOUT)
        return rec.value if rec else h.LayoutHistory()

    async def stage(self, node: str, role: NodeRole | None) -> h.LayoutHistory:
        return await self._update(lambda cur: h.stage(cur, node, role))

    async def stage_replication(self, replication: int) -> h.LayoutHistory:
        return await self._update(lambda cur: h.stage_replication(cur, replication))

    async def preview(self) -> Plan:
        return h.preview(await self.show())

    async def apply(self, expect_version: int) -> tuple[h.LayoutHistory, Plan]:
        """Commit the staged change as version ``expect_version + 1`` (see ``history.apply``);
        raises ``Conflict`` if the layout moved on or a transition is still syncing."""
        plans: list[Plan] = []

        def change(cur: h.LayoutHistory) -> h.LayoutHistory:
            nxt, plan = h.apply(cur, expect_version)
            plans.append(plan)
            return nxt

        result = await self._update(change)
        return result, plans[-1]

    async def apply_change(
        self,
        roles: Mapping[str, NodeRole | None],
        replication: int | None,
        expect_version: int,
    ) -> tuple[h.LayoutHistory, Plan]:
        """Stage ``roles`` (and ``replication``) and apply them as one compare-and-swap, so
        no one else's staging is mixed in; refusals as ``apply``."""
        plans: list[Plan] = []

        def change(cur: h.LayoutHistory) -> h.LayoutHistory:
            for node, role in roles.items():
                cur = h.stage(cur, node, role)
            if replication is not None:
                cur = h.stage_replication(cur, replication)
            nxt, plan = h.apply(cur, expect_version, operator=False)
            plans.append(plan)
            return nxt

        result = await self._update(change)
        return result, plans[-1]

    async def ack_synced(self, node: str, version: int) -> h.LayoutHistory:
        return await self._update(lambda cur: h.ack_synced(cur, node, version))

    async def observe(self, node: str, seen: int, reading: int) -> h.LayoutHistory:
        """``history.observe``: ``node`` writes to version ``seen`` and reads ``reading``."""
        return await self._update(lambda cur: h.observe(cur, node, seen, reading))

    async def _update(self, fn: Callable[[h.LayoutHistory], h.LayoutHistory]) -> h.LayoutHistory:
        failure: list[CloudlessError] = []

        def change(cur: h.LayoutHistory | None) -> h.LayoutHistory | None:
            try:
                return fn(cur or h.LayoutHistory())
            except CloudlessError as e:
                failure.append(e)
                return None

        rec = await self.table.update(LAYOUT, change)
        if failure:
            raise failure[-1]
        assert rec is not None
        return rec.value
