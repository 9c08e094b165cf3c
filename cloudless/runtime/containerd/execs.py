"""Running a command inside a running container (``Tasks.Exec``), for health probes.

The process spec is the container's own (environment, user, working directory, capabilities)
with the arguments replaced and no terminal, cached per container until it is deleted. Stdout
and stderr go to two regular files in the container's log directory, which the shim opens for
appending (see ``logfiles``); one file for both loses the output at times with containerd
1.6's shim. The output is stdout followed by stderr, read once the exec process is deleted
(the shim finishes copying then), and the files are removed. Every exec process is deleted
afterwards, also on timeout or cancellation, so none lingers in the shim. A command that
cannot start (not in the image) is reported like a shell would: exit 127 with runc's reason
as output.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from google.protobuf import any_pb2  # type: ignore[import-untyped]

from cloudless.api.gen.containerd.services.containers.v1 import containers_pb2 as cpb
from cloudless.api.gen.containerd.services.tasks.v1 import tasks_pb2
from cloudless.api.gen.containerd.types.task import task_pb2
from cloudless.lib.errors import CloudlessError, NotFound
from cloudless.runtime.containerd.client import ContainerdClient, map_error
from cloudless.runtime.errors import ContainerNotFound, InvalidState
from cloudless.runtime.types import MAX_EXEC_OUTPUT, ExecResult

PROCESS_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
NOT_STARTED_EXIT = 127  # what a shell answers for a command it cannot run


class Execs:
    def __init__(self, client: ContainerdClient, log_dir: Any) -> None:
        self.client = client
        self.log_dir = log_dir  # container id -> its log directory (Path)
        self._process: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._salt = os.urandom(3).hex()

    def forget(self, container_id: str) -> None:
        self._process.pop(container_id, None)

    async def _spec(self, cid: str) -> dict[str, Any]:
        spec = self._process.get(cid)
        if spec is None:
            c = self.client
            try:
                resp = await c.call(c.containers.Get, cpb.GetContainerRequest(id=cid), f"get {cid}")
            except NotFound:
                raise ContainerNotFound(cid) from None
            spec = dict(json.loads(resp.container.spec.value).get("process") or {})
            self._process[cid] = spec
        return spec

    async def run(self, cid: str, command: Sequence[str], timeout: float) -> ExecResult:
        c = self.client
        try:
            task = await c.call(c.tasks.Get, tasks_pb2.GetRequest(container_id=cid), f"task {cid}")
        except NotFound:
            await self._spec(cid)  # ContainerNotFound if the container itself is missing
            task = None
        if task is None or task.process.status != task_pb2.RUNNING:
            raise InvalidState(
                f"container {cid!r} is not running; commands run only in a running container"
            )
        process = {**await self._spec(cid), "args": list(command), "terminal": False}
        exec_id = f"exec-{self._salt}-{next(self._ids)}"
        out: Path = self.log_dir(cid) / f"{exec_id}.out"
        err = out.with_suffix(".err")
        await asyncio.to_thread(_touch, out, err)
        ran: tuple[int, bool] | None = None  # (exit code, timed out) once known
        not_started: str | None = None
        try:
            await c.call(
                c.tasks.Exec,
                tasks_pb2.ExecProcessRequest(
                    container_id=cid,
                    exec_id=exec_id,
                    stdout=str(out),
                    stderr=str(err),
                    spec=any_pb2.Any(type_url=PROCESS_TYPE_URL, value=json.dumps(process).encode()),
                ),
                f"exec in {cid}",
            )
            try:
                await c.call(
                    c.tasks.Start,
                    tasks_pb2.StartRequest(container_id=cid, exec_id=exec_id),
                    f"start exec in {cid}",
                )
            except CloudlessError as e:
                not_started = str(e)
            else:
                code = await self._wait(cid, exec_id, timeout)
                if code is None:
                    await self._kill(cid, exec_id)
                    ran = (-1, True)
                else:
                    ran = (code, False)
        finally:
            # Also when cancelled (a probe stopped with its replica, the agent shutting down):
            # the clean-up runs to its end in its own task, a running exec is killed before
            # it is deleted (containerd refuses to delete a running process), and whatever
            # the clean-up raises is consumed there, never left unretrieved.
            kill = ran is None and not_started is None
            cleanup = asyncio.ensure_future(self._discard(cid, exec_id, (out, err), kill=kill))
            cleanup.add_done_callback(_consume)
            output = await asyncio.shield(cleanup)
        if not_started is not None:
            return ExecResult(NOT_STARTED_EXIT, _cut(not_started))
        assert ran is not None
        return ExecResult(ran[0], output, timed_out=ran[1])

    async def _kill(self, cid: str, exec_id: str) -> None:
        """SIGKILL the exec process and wait (briefly) for it to be gone; errors ignored."""
        c = self.client
        with contextlib.suppress(CloudlessError):
            await c.call(
                c.tasks.Kill,
                tasks_pb2.KillRequest(
                    container_id=cid, exec_id=exec_id, signal=int(signal.SIGKILL)
                ),
                f"kill exec in {cid}",
            )
            await self._wait(cid, exec_id, 5.0)

    async def _discard(
        self, cid: str, exec_id: str, files: tuple[Path, Path], *, kill: bool
    ) -> str:
        """Delete the exec process (killing it first if it may still run) and return its
        output. The output is read only after the delete: the shim finishes copying the
        process's output when the process is deleted, not when its exit is reported."""
        c = self.client
        try:
            if kill:
                await self._kill(cid, exec_id)
            with contextlib.suppress(CloudlessError):
                await c.call(
                    c.tasks.DeleteProcess,
                    tasks_pb2.DeleteProcessRequest(container_id=cid, exec_id=exec_id),
                    f"delete exec in {cid}",
                )
            return _cut("".join(await asyncio.to_thread(lambda: [_read(f) for f in files])))
        finally:
            for f in files:
                _remove(f)

    async def _wait(self, cid: str, exec_id: str, timeout: float) -> int | None:
        """The exit status, or None if it still runs after ``timeout`` seconds."""
        c = self.client
        try:
            resp = await c.tasks.Wait(
                tasks_pb2.WaitRequest(container_id=cid, exec_id=exec_id),
                metadata=c.metadata(),
                timeout=max(0.01, timeout),
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED or "deadline" in (e.details() or ""):
                return None
            raise map_error(e, f"wait for exec in {cid}") from None
        return int(resp.exit_status)


def _consume(t: asyncio.Future[str]) -> None:
    if not t.cancelled():
        t.exception()  # retrieved: a failed clean-up is not an error of the caller


def _touch(*paths: Path) -> None:
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch(mode=0o600)


def _remove(p: Path) -> None:
    with contextlib.suppress(OSError):
        p.unlink()


def _read(p: Path) -> str:
    try:
        with p.open("rb") as f:
            return _cut(f.read(MAX_EXEC_OUTPUT).decode(errors="replace"))
    except OSError:
        return ""


def _cut(text: str) -> str:
    return text[:MAX_EXEC_OUTPUT]
