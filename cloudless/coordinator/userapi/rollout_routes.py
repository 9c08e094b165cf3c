"""The user API for roll-outs: status and history of a workload, and undo.

``GET /v1/workloads/{name}/rollout``: the current version, why it is current, the roll-out's
state (progressing, complete, failed, with the reason), how many replicas run it and are ready,
and the earlier versions kept (``MAX_HISTORY``). ``POST /v1/workloads/{name}/undo``
``{"to_version": n}`` (default: the previous one) makes that spec current again as a new
version, which rolls out like any change (replicas already running it are relabelled, not
restarted).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from aiohttp import web

from cloudless.coordinator.state.cluster import ClusterState
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.lib.clock import Clock
from cloudless.lib.errors import NotFound, ValidationError
from cloudless.model.replica import DesiredState, Replica, ReplicaState
from cloudless.store.fence import Fence

Emit = Callable[..., Awaitable[None]]


def rollout_view(rec: WorkloadRecord, replicas: list[Replica]) -> dict[str, Any]:
    live = [r for r in replicas if r.desired is DesiredState.RUNNING]
    updated = [r for r in live if r.spec_version == rec.version]
    return {
        "workload": rec.name,
        "version": rec.version,
        "image": rec.spec.image,
        "cause": rec.cause,
        "rollout": rec.rollout.to_dict(),
        "replicas": {
            "wanted": rec.spec.replicas,
            "updated": len(updated),
            "ready": sum(1 for r in updated if r.observed is ReplicaState.RUNNING and r.ready),
        },
        "history": [
            {
                "version": h.version,
                "image": h.spec.image,
                "replaced_at": h.replaced_at,
                "cause": h.cause,
            }
            for h in rec.history
        ],
    }


class RolloutApi:
    def __init__(
        self, state: ClusterState, clock: Clock, fence: Callable[[], Fence], emit: Emit
    ) -> None:
        self.state = state
        self.clock = clock
        self.fence = fence
        self.emit = emit

    def add_routes(self, r: web.UrlDispatcher) -> None:
        r.add_get("/v1/workloads/{name}/rollout", self.status)
        r.add_post("/v1/workloads/{name}/undo", self.undo)

    async def _record(self, name: str) -> WorkloadRecord:
        rec = await self.state.workloads.get(name)
        if rec is None or rec.value.deleted:
            raise NotFound(f"workload {name!r} not found: list them with `cloudless get workloads`")
        return rec.value

    async def status(self, request: web.Request) -> web.Response:
        rec = await self._record(request.match_info["name"])
        reps = [r.value for r in (await self.state.replicas.list()).records]
        return web.json_response(rollout_view(rec, [r for r in reps if r.workload == rec.name]))

    async def undo(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body: Any = {}
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                raise ValidationError('body: is not JSON ({"to_version": n})') from None
        target = body.get("to_version") if isinstance(body, dict) else None
        if target is not None and (isinstance(target, bool) or not isinstance(target, int)):
            raise ValidationError(f"to_version: {target!r} is not a version number")
        now = self.clock.now()
        done: list[int] = []

        def change(cur: WorkloadRecord | None) -> WorkloadRecord | None:
            if cur is None or cur.deleted:
                raise NotFound(f"workload {name!r} not found")
            kept = {h.version: h for h in cur.history}
            if not kept:
                raise ValidationError(f"workload {name!r} has no earlier version to go back to")
            version = target if target is not None else cur.history[-1].version
            if version not in kept:
                have = ", ".join(str(v) for v in sorted(kept))
                raise ValidationError(f"to_version: {version} is not kept (kept: {have})")
            spec = replace(kept[version].spec, replicas=cur.spec.replicas)
            done[:] = [version]
            return cur.next_version(spec, now, cause=f"undo to version {version}")

        rec = await self.state.workloads.update(name, change, fence=self.fence())
        assert rec is not None
        msg = f"workload {name}: undo to version {done[0]} as version {rec.value.version}"
        await self.emit("rollout", msg, workload=name)
        return web.json_response({"workload": name, "version": rec.value.version, "from": done[0]})
