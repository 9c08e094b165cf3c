"""The running coordinator's availability history: learned from the nodes' real up/down
changes in the store, kept in the store, and served to the placer.

Rules:

* a node is *up* while its record says ready, cordoned or draining and *down* otherwise
  (offline, failed, departed: for availability a planned departure is still absence);
  every change of the nodes table that crosses that line opens or closes a session, at the
  leader's wall clock (hours of the week matter);
* each node's history (``SessionLog`` device: since, ended sessions, the open one) is one
  record, ``availability/<node-id>``, written when a session opens or closes, fenced by the
  leader's term: a new leader loads it and goes on (a session that was open when the old
  leader stopped and whose node is down now is closed at the new leader's start);
* every ``relearn_s`` (and after each change) the placer is handed the models as of that
  time, owner-reserved hours set to 0 (``with_reserved``). The hand-over costs nothing: a
  model is learned when the placer first reads it (``LazyModels``), so a cluster whose
  workloads never ask for availability placement never learns one, and a node's change
  re-learns that node only (the others keep models learned at most ``relearn_s`` before).

``history_model(record, now)`` and ``describe_node`` turn one stored record into what
``cloudless describe node`` shows, on any coordinator (they read the store, not the
leader's memory).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from cloudless.churn.log import DeviceHistory, SessionLog
from cloudless.churn.model import HOUR_S, AvailabilityModel, hour_of_week
from cloudless.churn.target import AvailabilityPlacer
from cloudless.lib.clock import Clock
from cloudless.model.departure import format_reserved
from cloudless.model.node import Node, NodeState
from cloudless.store.codec import DictCodec
from cloudless.store.errors import Fenced, StoreError
from cloudless.store.fence import Fence
from cloudless.store.protocol import Store
from cloudless.store.table import Table
from cloudless.store.tables import ROOT
from cloudless.store.types import EventType

log = logging.getLogger("cloudless.churn.keeper")

AVAILABILITY_PREFIX = f"{ROOT}availability/"
UP = frozenset({NodeState.READY, NodeState.CORDONED, NodeState.DRAINING})
MAX_SESSIONS = 4000  # per node: four weeks of a phone's short sessions, with room


def history_table(store: Store) -> Table[dict[str, Any]]:
    return Table(store, AVAILABILITY_PREFIX, DictCodec("availability", required=("since",)))


def device_to_dict(d: DeviceHistory) -> dict[str, Any]:
    return {
        "since": d.since,
        "sessions": [[s, e] for s, e in d.sessions[-MAX_SESSIONS:]],
        "open_since": d.open_since,
    }


def device_from_dict(v: Mapping[str, Any]) -> DeviceHistory:
    sessions = [(float(s), float(e)) for s, e in v.get("sessions") or ()]
    open_since = v.get("open_since")
    return DeviceHistory(
        float(v["since"]), sessions, None if open_since is None else float(open_since)
    )


def with_reserved(m: AvailabilityModel, reserved: frozenset[int]) -> AvailabilityModel:
    """The model with the owner-reserved hours of the week at 0 (the node takes no work)."""
    if not reserved:
        return m
    return replace(m, p=tuple(0.0 if i in reserved else p for i, p in enumerate(m.p)))


def history_model(v: Mapping[str, Any], now: float) -> AvailabilityModel | None:
    d = device_from_dict(v)
    if now <= d.since:
        return None
    sessions = list(d.sessions)
    if d.open_since is not None:
        sessions.append((d.open_since, now))
    return AvailabilityModel.learn(sessions, d.since, now)


def describe_node(node: Node, history: Mapping[str, Any] | None, now: float) -> dict[str, Any]:
    """What ``describe node`` shows of the model: the summary figures, the predicted online
    probability for each of the next 12 hours, the reserved hours (UTC) and the departure."""
    out: dict[str, Any] = {
        "reserved_hours": format_reserved(node.reserved_hours),
        "departure": node.departure.to_dict() if node.departure else None,
    }
    m = history_model(history, now) if history else None
    if m is None:
        out["model"] = None
        return out
    m = with_reserved(m, node.reserved_hours)
    summary = m.describe(now)
    out["model"] = {
        **{k: round(v, 4) if math.isfinite(v) else None for k, v in summary.items()},
        "next_hours": [
            {"hour_of_week": hour_of_week(now + i * HOUR_S), "p_online": round(p, 3)}
            for i, p in enumerate(m.window(now, 12 * HOUR_S))
        ],
        "sessions": len(device_from_dict(history or {"since": now}).sessions),
    }
    return out


class AvailabilityKeeper:
    """Leader loop (``lead(fence)``): see the module docstring. ``placer`` (optional) gets
    ``update(models, now)`` after each change and every ``relearn_s``."""

    def __init__(
        self,
        store: Store,
        nodes: Table[Node],
        clock: Clock,
        placer: AvailabilityPlacer | None = None,
        relearn_s: float = 60.0,
    ) -> None:
        self.table = history_table(store)
        self.nodes = nodes
        self.clock = clock
        self.placer = placer
        self.relearn_s = relearn_s
        self.log = SessionLog()
        self._reserved: dict[str, frozenset[int]] = {}
        self._up: dict[str, bool] = {}

    async def lead(self, fence: Fence) -> None:
        self.log = SessionLog()
        listing = await self.table.list()
        for rec in listing.records:
            try:
                self.log.devices[rec.name] = device_from_dict(rec.value)
            except (KeyError, TypeError, ValueError) as e:
                log.warning(
                    "availability history of %s unreadable (%s): starting over", rec.name, e
                )
        nodes = await self.nodes.list()
        now = self.clock.now()
        self._up = {}
        for r in nodes.records:
            await self._see(r.value, now, fence)
        self._relearn(now)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._watch(nodes.revision + 1, fence))
            tg.create_task(self._timer())

    async def _timer(self) -> None:
        while True:
            await self.clock.sleep(self.relearn_s)
            self._relearn(self.clock.now())

    async def _watch(self, start: int, fence: Fence) -> None:
        async for ev in self.nodes.watch(start_revision=start):
            now = self.clock.now()
            if ev.type is EventType.DELETE:
                self.log.forget(ev.name)
                self._up.pop(ev.name, None)
                self._reserved.pop(ev.name, None)
                await self.table.delete(ev.name, fence=fence)
            elif ev.record is not None:
                if await self._see(ev.record.value, now, fence):
                    self._relearn(now, changed=ev.name)

    async def _see(self, n: Node, now: float, fence: Fence) -> bool:
        """Take one node record; True if its history changed (and was written)."""
        self._reserved[n.id] = n.reserved_hours
        if n.state is NodeState.REMOVED or n.state is NodeState.ENROLLING:
            return False
        up = n.state in UP
        if self._up.get(n.id) is up:
            return False
        self._up[n.id] = up
        d = self.log.devices.get(n.id)
        if up and d is not None and d.open_since is not None:
            return False  # up already (a leader change): the open session goes on
        if not up and d is not None and d.open_since is None:
            return False
        if up:
            self.log.up(n.id, now)
        else:
            self.log.down(n.id, now)
        try:
            await self.table.put(n.id, device_to_dict(self.log.devices[n.id]), fence=fence)
        except Fenced:
            raise
        except StoreError as e:  # kept in memory; the next change writes it again
            log.warning("availability history of %s not written: %s", n.id, e)
        return True

    def models(self, now: float) -> LazyModels:
        return LazyModels(self.log, self._reserved, now)

    def _relearn(self, now: float, changed: str | None = None) -> None:
        """Hand the placer the models as of ``now``: all afresh, or (``changed``, a node whose
        history just changed) that node's afresh and the others' as learned before, if that
        was less than ``relearn_s`` ago."""
        if self.placer is None:
            return
        fresh = self.models(now)
        before = self.placer.models
        if changed is not None and isinstance(before, LazyModels):
            fresh.keep(before, changed, now - self.relearn_s)
        self.placer.update(fresh, now)


class LazyModels(Mapping[str, AvailabilityModel]):
    """The devices' models as of ``now``, each learned from the session log on first read
    and kept; a device without enough history (``now`` not after its first sighting) has
    none. Reads the log as it is when read: the keeper hands the placer a new one whenever
    a device's history changes."""

    def __init__(self, log: SessionLog, reserved: Mapping[str, frozenset[int]], now: float) -> None:
        self.log = log
        self.reserved = reserved
        self.now = now
        # node id -> (its model or None, when it was learned)
        self._learned: dict[str, tuple[AvailabilityModel | None, float]] = {}

    def keep(self, older: LazyModels, except_id: str, since: float) -> None:
        """Reuse what ``older`` learned at or after ``since``, except ``except_id``'s."""
        for node_id, got in older._learned.items():
            if node_id != except_id and got[1] >= since:
                self._learned.setdefault(node_id, got)

    def _model(self, node_id: str) -> AvailabilityModel | None:
        got = self._learned.get(node_id)
        if got is None:
            m = self.log.model(node_id, self.now)
            if m is not None:
                m = with_reserved(m, self.reserved.get(node_id, frozenset()))
            got = self._learned[node_id] = (m, self.now)
        return got[0]

    def __getitem__(self, node_id: str) -> AvailabilityModel:
        m = self._model(node_id)
        if m is None:
            raise KeyError(node_id)
        return m

    def __iter__(self) -> Iterator[str]:
        return (n for n in list(self.log.devices) if self._model(n) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)
