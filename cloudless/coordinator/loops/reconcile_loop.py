"""The leader's reconcile loop: snapshot, decide (``reconcile``), apply, repeat.

It wakes on any change to nodes, workloads or replicas and at least every ``period_s``; a
change after a quiet spell starts a round at once, and rounds follow each other no closer
than ``debounce_s`` (changes arriving meanwhile are decided together). Each action is
written with compare-and-swap on the revision the decision was made from, plus the leader
fence; an action that lost a race is dropped and the next round decides again from fresh
state.

Rounds decide from a ``LiveView`` (``view.py``): the three tables kept in memory by one watch,
so a round reads nothing from the store. The next round waits until the view reflects every
revision this one learned of (its own writes, the records its read-modify-writes saw); after a
lost race or a failed write, where that is unknown, it reads the store's revision and waits
for that. So a decision always sees this reconciler's writes and the writes that beat them.
``incremental=False`` restores the old path (every round lists and decodes the three tables),
kept for side-by-side benchmarks.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import replace
from typing import Any

from cloudless.coordinator.deciders.departures import SetDeparture
from cloudless.coordinator.deciders.reconcile import (
    Action,
    CreateReplica,
    DeleteReplica,
    DeleteWorkload,
    Placer,
    RollBack,
    SetNodeState,
    SetRollout,
    SetUnplaced,
    UpdateReplica,
    reconcile,
)
from cloudless.coordinator.state.cluster import ClusterState, Snapshot, event
from cloudless.coordinator.state.cluster_view import ClusterView
from cloudless.coordinator.state.live_view import LiveView, placement_fingerprint
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.lib.clock import Clock
from cloudless.lib.ids import IdSource
from cloudless.model.departure import Departure
from cloudless.model.node import Node, NodeState
from cloudless.model.replica import Replica, ReplicaState
from cloudless.model.rollout import RolloutState
from cloudless.observability.metrics import RECONCILE_DURATION, RECONCILE_ROUNDS
from cloudless.observability.tracing import child_of, traceparent, tracer
from cloudless.store.errors import Fenced, StoreError
from cloudless.store.fence import Fence, fenced_txn
from cloudless.store.table import Record, Table
from cloudless.store.tables import ROOT
from cloudless.store.types import Compare, TxnOp

log = logging.getLogger("cloudless.coordinator.loops.reconcile_loop")


class Reconciler:
    def __init__(
        self,
        state: ClusterState,
        placer: Placer,
        ids: IdSource,
        clock: Clock,
        *,
        debounce_s: float = 0.02,
        period_s: float = 1.0,
        incremental: bool = True,
        catch_up_s: float = 2.0,
    ) -> None:
        """``incremental``: decide from a watch-fed ``LiveView`` (default) instead of listing
        the store every round. ``catch_up_s``: how long a round waits for the view to reach
        the revision it must reflect before re-listing instead (while the view's watch
        delivers nothing; one that delivers, only late, is waited for up to
        ``MAX_CATCH_UP_S``)."""
        self.state = state
        self.placer = placer
        self.ids = ids
        self.clock = clock
        self.debounce_s = debounce_s
        self.period_s = period_s
        self.incremental = incremental
        self.catch_up_s = catch_up_s
        self._wake = asyncio.Event()
        self.rounds = 0
        self.view: LiveView | None = None  # while leading incrementally
        # What the next decision must see: at least revision ``_need``, and if ``_unsure``
        # (a lost race or a failed write) whatever the store holds when it starts.
        self._need = 0
        self._unsure = False

    async def lead(self, fence: Fence) -> None:
        self._need, self._unsure = 0, False
        if not self.incremental:
            async with asyncio.TaskGroup() as tg:
                for table in ("nodes/", "workloads/", "replicas/"):
                    tg.create_task(self._watch(ROOT + table))
                tg.create_task(self._timer())
                tg.create_task(self._loop(fence))
            return
        self.view = LiveView(self.state, self.clock, on_change=self._wake.set)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.view.run())
                tg.create_task(self._timer())
                tg.create_task(self._loop(fence))
        finally:
            self.view = None

    async def _watch(self, prefix: str) -> None:
        """Wake the loop on changes under ``prefix``. Node records also change for usage
        refreshes (one per node every 10 s): those do not matter to placement and must not
        each cost a round, so for nodes only a changed placement fingerprint wakes it."""
        nodes = prefix.endswith("nodes/")
        seen: dict[str, tuple[object, ...]] = {}
        if nodes:  # so that each node's first usage refresh does not count as a change
            listing = await self.state.nodes.list()
            seen = {
                self.state.nodes.key(r.name): placement_fingerprint(r.value)
                for r in listing.records
            }
            rev = listing.revision
        else:
            rev = await self.state.store.revision()
        async for batch in self.state.store.watch(prefix, start_revision=rev + 1):
            if not nodes:
                self._wake.set()
                continue
            for ev in batch.events:
                try:
                    n = self.state.nodes.decode(ev.kv).value if ev.kv.value else None
                except Exception:
                    n = None
                fp = placement_fingerprint(n) if n is not None else ("deleted",)
                if seen.get(ev.key) != fp:
                    seen[ev.key] = fp
                    self._wake.set()

    async def _timer(self) -> None:
        while True:
            await self.clock.sleep(self.period_s)
            self._wake.set()

    async def _loop(self, fence: Fence) -> None:
        self._wake.set()
        last = -math.inf
        while True:
            await self._wake.wait()
            # Leading edge: a change after a quiet spell is decided at once; changes that
            # come while rounds run back to back are batched, one round per debounce_s.
            gap = self.debounce_s - (self.clock.monotonic() - last)
            if gap > 0:
                await self.clock.sleep(gap)
            self._wake.clear()
            try:
                await self.round(fence)
            except Fenced:
                raise
            except StoreError as e:
                log.warning("reconcile round failed, retrying: %s", e)
            finally:
                last = self.clock.monotonic()

    async def snapshot(self) -> Snapshot:
        """What the next decision is made from: the live view once it reflects everything
        this reconciler wrote or lost a race to, else (not leading) a store listing."""
        view = self.view
        if view is None:
            return await self.state.snapshot()
        if self._unsure:
            self._need = max(self._need, await self.state.store.revision())
            self._unsure = False
        need = max(self._need, 1)  # 1: the first listing is done
        waited = 0.0
        while True:
            before = view.revision
            if await view.caught_up(need, self.catch_up_s):
                break
            waited += self.catch_up_s
            if view.revision > before and waited < self.MAX_CATCH_UP_S:
                # The watch delivers, only late (a loaded loop): keep waiting. Re-listing
                # thousands of records would add seconds of work to the lag it waits out.
                continue
            log.warning(
                "view at revision %d did not reach %d in %.1f s%s: re-listing",
                view.revision,
                need,
                waited,
                "" if view.revision > before else " (its watch delivered nothing)",
            )
            await view.reload()
            break
        return view.snapshot()

    # The longest a round waits for a view whose watch is delivering, but behind.
    MAX_CATCH_UP_S = 10.0

    def _saw(self, revision: int) -> None:
        """The next decision must reflect ``revision`` (a write, or a record read)."""
        self._need = max(self._need, revision)

    async def round(self, fence: Fence) -> list[Action]:
        t0 = self.clock.monotonic()
        try:
            return await self._round(fence)
        finally:
            RECONCILE_ROUNDS.inc()
            RECONCILE_DURATION.observe(self.clock.monotonic() - t0)

    async def _round(self, fence: Fence) -> list[Action]:
        started = int(self.clock.now() * 1e9)
        snap = await self.snapshot()
        for p in snap.problems:
            log.error("skipping undecodable record: %s", p)
        decided = reconcile(snap.view, self.placer, self.ids, self.clock.now())
        scores = self._scores(snap.view, decided)
        actions = [_traced(a, started, scores) for a in decided]
        # Until every action is applied with its outcome known, assume the worst: a write
        # that raised may have landed, so the next round reads the store's revision.
        self._unsure = self._unsure or bool(actions)
        lost = False
        creates = [a for a in actions if isinstance(a, CreateReplica)]
        actions_left: list[Action]
        if len(creates) > 1 and await self._create_all(creates, fence):
            actions_left = [a for a in actions if not isinstance(a, CreateReplica)]
        else:
            actions_left = actions
        for a in actions_left:
            lost |= not await self._apply(a, fence)
        self._unsure = lost
        self.rounds += 1
        return actions

    MAX_BATCH = Table.MAX_BATCH  # etcd's limit on operations per transaction, with room

    def _scores(self, view: ClusterView, actions: list[Action]) -> Scores:
        """Score components of every node for the workloads whose new replicas are traced
        (none when tracing is off, so this costs nothing then)."""
        traced = {
            a.replica.workload for a in actions if isinstance(a, CreateReplica) and a.replica.trace
        }
        scores_of = getattr(self.placer, "scores", None)
        if not traced or scores_of is None:
            return {}
        nodes = list(view.nodes.values())
        replicas = list(view.replicas.values())
        specs = {n: w.spec for n, w in view.workloads.items() if not w.deleted}
        return {w: scores_of(nodes, replicas, specs, specs[w]) for w in traced if w in specs}

    async def _create_all(self, creates: list[CreateReplica], fence: Fence) -> bool:
        """Create a round's new replicas and their placement events in as few transactions
        as possible (each replica still created only if absent). False if a batch lost a
        race: the caller then falls back to one at a time, which skips the taken ones."""
        st = self.state
        now = self.clock.now()
        for i in range(0, len(creates), self.MAX_BATCH // 2):
            chunk = creates[i : i + self.MAX_BATCH // 2]
            compares = []
            puts: list[TxnOp] = []
            for a in chunk:
                r = a.replica
                key = ClusterState.replica_key(r)
                compares.append(Compare.absent(st.replicas.key(key)))
                puts.append(st.replicas.put_op(key, r))
                name, body = event(
                    "placement",
                    f"replica {r.id} of {r.workload} placed on {r.node_id}",
                    now,
                    replica=r.id,
                    workload=r.workload,
                    node=r.node_id,
                )
                puts.append(st.events.put_op(name, body))
            res = await fenced_txn(st.store, fence, compares, puts)
            if not res.succeeded:
                return False  # one at a time now; the ones created above are skipped
            self._saw(res.revision)
            for a in chunk:
                r = a.replica
                log.info("replica %s of %s placed on %s", r.id, r.workload, r.node_id)
        return True

    async def _apply(self, a: Action, fence: Fence) -> bool:
        """Apply one action; False if the store did not hold what the decision assumed (a
        lost race: the record was taken, changed or gone)."""
        st = self.state
        now = self.clock.now()
        match a:
            case CreateReplica(replica=r):
                key = ClusterState.replica_key(r)
                rev = await st.replicas.cas(key, r, expect=0, fence=fence)
                if rev is None:
                    return False
                self._saw(rev)
                await self._emit(
                    "placement",
                    f"replica {r.id} of {r.workload} placed on {r.node_id}",
                    replica=r.id,
                    workload=r.workload,
                    node=r.node_id,
                )
            case UpdateReplica(replica=r, reason=reason):
                key = ClusterState.replica_key(r)

                def change(cur: Replica | None, r: Replica = r) -> Replica | None:
                    if cur is None:
                        return None
                    # Keep what the agent reported meanwhile unless this action changes it.
                    observed, restarts, ready = cur.observed, cur.restarts, cur.ready
                    if r.spec_version != cur.spec_version:
                        # rolled to a new spec: a new incarnation, judged afresh by roll-outs
                        observed, restarts, ready = ReplicaState.PENDING, 0, False
                    elif r.observed is ReplicaState.LOST:
                        observed = ReplicaState.LOST
                    return replace(
                        cur,
                        desired=r.desired,
                        spec_version=r.spec_version,
                        observed=observed,
                        restarts=restarts,
                        ready=ready,
                        updated_at=now,
                    )

                if not self._seen(await st.replicas.update(key, change, fence=fence)):
                    return False
                await self._emit(
                    "replica",
                    f"replica {r.id}: {reason}",
                    replica=r.id,
                    workload=r.workload,
                    node=r.node_id,
                )
            case DeleteReplica(replica_id=rid, workload=wl, reason=reason):
                if not await st.replicas.delete(f"{wl}/{rid}", fence=fence):
                    return False
                await self._emit(
                    "replica", f"replica {rid} removed: {reason}", replica=rid, workload=wl
                )
            case SetUnplaced(workload=name, count=count, reason=reason):

                def mark(cur: WorkloadRecord | None) -> WorkloadRecord | None:
                    if cur is None:
                        return None
                    return replace(cur, unplaced=count, unplaced_reason=reason)

                if not self._seen(await st.workloads.update(name, mark, fence=fence)):
                    return False
                if count:
                    await self._emit(
                        "placement",
                        f"{count} replica(s) of {name} cannot be placed: {reason}",
                        workload=name,
                    )
            case SetNodeState(node_id=node_id, state=target, reason=reason):

                def move(cur: Node | None, target: NodeState = target) -> Node | None:
                    return None if cur is None else cur.moved_to(target)[0]

                rec = await st.nodes.update(node_id, move, fence=fence)
                if not self._seen(rec):
                    return False
                if rec is not None and rec.value.state is target:
                    await self._emit(
                        "node", f"node {node_id}: {target.value} ({reason})", node=node_id
                    )
            case SetDeparture(node_id=node_id, departure=dep, state=target, reason=reason):
                wrote: list[bool] = []

                def depart(
                    cur: Node | None,
                    dep: Departure | None = dep,
                    target: NodeState | None = target,
                ) -> Node | None:
                    wrote.clear()
                    if cur is None:
                        return None
                    moved = cur.moved_to(target)[0] if target is not None else None
                    new = replace(moved or cur, departure=dep)
                    if new == cur:
                        return None
                    wrote.append(True)
                    return new

                rec = await st.nodes.update(node_id, depart, fence=fence)
                if not self._seen(rec):
                    return False
                if wrote and rec is not None:
                    await self._emit(
                        "node",
                        f"node {node_id}: {rec.value.state.value} ({reason})",
                        node=node_id,
                        state=rec.value.state.value,
                    )
            case DeleteWorkload(workload=name):
                if not await st.workloads.delete(name, fence=fence):
                    return False
                await self._emit("workload", f"workload {name} deleted", workload=name)
            case SetRollout(workload=name, rollout=ro):

                def progress(cur: WorkloadRecord | None) -> WorkloadRecord | None:
                    if cur is None or cur.version != ro.version or cur.rollout == ro:
                        return None
                    return replace(cur, rollout=ro)

                if not self._seen(await st.workloads.update(name, progress, fence=fence)):
                    return False
                if ro.state is not RolloutState.PROGRESSING:
                    why = f": {ro.reason}" if ro.reason else ""
                    await self._emit(
                        "rollout",
                        f"roll-out of {name} version {ro.version} {ro.state.value}{why}",
                        workload=name,
                    )
            case RollBack(workload=name, from_version=old, spec=spec, reason=reason):
                now = self.clock.now()

                def back(cur: WorkloadRecord | None) -> WorkloadRecord | None:
                    if cur is None or cur.version != old or cur.deleted:
                        return None  # the user applied something else meanwhile
                    spec_now = replace(spec, replicas=cur.spec.replicas)
                    cause = f"automatic rollback of version {old}: {reason}"
                    return cur.next_version(spec_now, now, cause=cause, rollback_of=old)

                wrec = await st.workloads.update(name, back, fence=fence)
                if not self._seen(wrec):
                    return False
                await self._emit(
                    "rollout",
                    f"roll-out of {name} version {old} failed ({reason}); rolling back",
                    workload=name,
                )
        return True

    def _seen(self, rec: Record[Any] | None) -> bool:
        """Note a read-modify-write's outcome; False if the record was gone."""
        if rec is None:
            return False
        self._saw(rec.mod_revision)
        return True

    async def _emit(self, kind: str, message: str, **fields: str) -> None:
        name, body = event(kind, message, self.clock.now(), **fields)
        log.info(message)
        self._saw(await self.state.events.put(name, body))


Scores = dict[str, dict[str, dict[str, float]]]  # workload -> node -> score components


def _traced(a: Action, started_ns: int, scores: Scores) -> Action:
    """A new replica of a traced apply gets a ``schedule`` span in that trace, with the
    chosen node's score components as the round saw them (``cloudless.score.*``), and
    carries the span's own ``traceparent`` to its agent (the agent's spans become its
    children)."""
    if not isinstance(a, CreateReplica) or not a.replica.trace:
        return a
    r = a.replica
    components = scores.get(r.workload, {}).get(r.node_id, {})
    with (
        child_of(r.trace),
        tracer().start_as_current_span("schedule", start_time=started_ns) as span,
    ):
        span.set_attribute("cloudless.workload", r.workload)
        span.set_attribute("cloudless.replica", r.id)
        span.set_attribute("cloudless.node", r.node_id)
        span.set_attribute("cloudless.spec_version", r.spec_version)
        for name, value in components.items():
            span.set_attribute(f"cloudless.score.{name}", value)
        return CreateReplica(replace(r, trace=traceparent(span)))
