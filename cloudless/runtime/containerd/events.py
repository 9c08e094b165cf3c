"""Exit watching for ``ContainerdRuntime``: the Events subscription and OOM attribution.

An exit with status 137 is either a SIGKILL or the OOM killer; containerd's ``/tasks/oom``
event may arrive before or after ``/tasks/exit``, so when no OOM event has been seen yet the
cgroup's own OOM-kill counter (``Tasks.Metrics``, still readable until the task is deleted)
decides. The verdict is saved as a container label so it survives agent restarts.
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import TYPE_CHECKING

import grpc
import grpc.aio
from google.protobuf import field_mask_pb2  # type: ignore[import-untyped]

from cloudless.api.gen.containerd.events import task_pb2 as evpb
from cloudless.api.gen.containerd.services.containers.v1 import containers_pb2 as cpb
from cloudless.api.gen.containerd.services.events.v1 import events_pb2
from cloudless.api.gen.containerd.services.tasks.v1 import tasks_pb2
from cloudless.runtime.containerd.stats import oom_killed_in_metrics
from cloudless.runtime.containerd.status import LABEL_OOM

if TYPE_CHECKING:
    from cloudless.runtime.containerd.runtime import ContainerdRuntime

log = logging.getLogger(__name__)

TOPIC_EXIT = "/tasks/exit"
TOPIC_OOM = "/tasks/oom"


def subscribe_filters(namespace: str) -> list[str]:
    """containerd filters: ',' is AND inside one filter, separate filters are OR'ed."""
    return [f'namespace=="{namespace}",topic=="{t}"' for t in (TOPIC_EXIT, TOPIC_OOM)]


async def watch(rt: ContainerdRuntime) -> None:
    """Subscribe forever; after each (re)subscribe, reconcile to catch exits missed meanwhile.

    containerd sends no response headers until the first event, so "subscribed" cannot be
    observed; we reconcile once the channel is ready and the call is in flight. An exit that
    slips between that reconcile and the server registering us is caught by the periodic
    reconcile (``reconcile_every``).
    """
    delay = 0.1
    while True:
        c = rt.client
        call = c.events.Subscribe(
            events_pb2.SubscribeRequest(filters=subscribe_filters(rt.namespace)),
            metadata=c.metadata(),
            wait_for_ready=True,
        )
        try:
            await c.channel.channel_ready()
            await rt.clock.sleep(0.05)  # let the subscription reach the server
            with contextlib.suppress(Exception):
                await rt.reconcile()
            delay = 0.1
            async for env in call:
                await handle(rt, env.topic, env.event.value)
        except grpc.aio.AioRpcError:
            pass  # containerd went away; resubscribe below
        except Exception:  # a long-lived loop must outlive one bad event or call
            log.warning("exit watch failed; resubscribing", exc_info=True)
        finally:
            call.cancel()
        await rt.clock.sleep(delay)
        delay = min(2.0, delay * 2)


async def handle(rt: ContainerdRuntime, topic: str, payload: bytes) -> None:
    if topic == TOPIC_OOM:
        rt._oom.add(evpb.TaskOOM.FromString(payload).container_id)
    elif topic == TOPIC_EXIT:
        ev = evpb.TaskExit.FromString(payload)
        if ev.id and ev.id != ev.container_id:
            return  # an exec'd process, not the container's init
        ts = ev.exited_at.ToDatetime().timestamp() if ev.HasField("exited_at") else 0.0
        await rt._on_exit(ev.container_id, ev.exit_status, ts)


async def oom_in_metrics(rt: ContainerdRuntime, cid: str) -> bool:
    c = rt.client
    try:
        resp = await c.call(
            c.tasks.Metrics, tasks_pb2.MetricsRequest(filters=[f"id=={cid}"]), "metrics", timeout=5
        )
    except Exception:
        return False
    return any(oom_killed_in_metrics(m.data.type_url, m.data.value) for m in resp.metrics)


async def mark_oom(rt: ContainerdRuntime, cid: str) -> None:
    c = rt.client
    with contextlib.suppress(Exception):
        await c.call(
            c.containers.Update,
            cpb.UpdateContainerRequest(
                container=cpb.Container(id=cid, labels={LABEL_OOM: "true"}),
                update_mask=field_mask_pb2.FieldMask(paths=[f"labels.{LABEL_OOM}"]),
            ),
            f"label {cid} oom-killed",
            timeout=5,
        )


_EXEC_RE = re.compile(
    r'exec: "([^"]*)": '
    r"(executable file not found in \$PATH|no such file or directory|permission denied)"
)


def explain_start_failure(cid: str, record: cpb.Container, message: str) -> str:
    """Turn runc's nested 'OCI runtime create failed: …' into what the user must fix."""
    m = _EXEC_RE.search(message)
    if m:
        cmd, why = m.group(1), m.group(2)
        what = (
            "was not found in the image"
            if "not found" in why or "no such" in why
            else "is not executable"
        )
        return (
            f"container {cid!r} cannot start: command {cmd!r} {what} {record.image!r} "
            f"(runc: {why}); fix the command or use an image that has it"
        )
    if "cgroup" in message and "memory" in message:
        return f"container {cid!r} cannot start: its memory limit was refused ({message})"
    return f"container {cid!r} cannot start: {message}"
