"""A thin, typed door to containerd's gRPC API: one channel, every service stub, the namespace
(and optional lease) as metadata, and gRPC status codes turned into our errors.

Calls use ``wait_for_ready`` with a deadline, so a containerd restart looks like a slow call
rather than a failure; only a daemon that stays away for ``timeout`` seconds surfaces as
``RuntimeUnavailable``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import grpc.aio

from cloudless.api.gen.containerd.services.containers.v1 import containers_pb2_grpc
from cloudless.api.gen.containerd.services.content.v1 import content_pb2_grpc
from cloudless.api.gen.containerd.services.diff.v1 import diff_pb2_grpc
from cloudless.api.gen.containerd.services.events.v1 import events_pb2_grpc
from cloudless.api.gen.containerd.services.images.v1 import images_pb2_grpc
from cloudless.api.gen.containerd.services.leases.v1 import leases_pb2_grpc
from cloudless.api.gen.containerd.services.snapshots.v1 import snapshots_pb2_grpc
from cloudless.api.gen.containerd.services.tasks.v1 import tasks_pb2_grpc
from cloudless.api.gen.containerd.services.version.v1 import version_pb2_grpc
from cloudless.lib.errors import CloudlessError, Conflict, NotFound
from cloudless.runtime.errors import RuntimeFailure, RuntimeUnavailable

T = TypeVar("T")

_MAX_MSG = 64 << 20


class AlreadyExists(Conflict):
    code = "already_exists"


class FailedPrecondition(Conflict):
    code = "failed_precondition"


def map_error(e: grpc.aio.AioRpcError, what: str) -> CloudlessError:
    """A containerd error as one of ours; ``what`` names the operation for the message."""
    code, detail = e.code(), e.details() or ""
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(f"{what}: {detail}")
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return AlreadyExists(f"{what}: {detail}")
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(f"{what}: {detail}")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return RuntimeUnavailable(
            f"{what}: containerd did not answer ({code.name.lower()}: {detail}); "
            "is the containerd service running and is its socket path right?"
        )
    return RuntimeFailure(f"{what}: containerd said {code.name}: {detail}")


class ContainerdClient:
    """Stubs are made on first use, so the object may be built outside the event loop that
    later uses it (the gRPC channel binds to the loop it is created in)."""

    def __init__(self, address: str, namespace: str, *, timeout: float = 30.0) -> None:
        self.address = address
        self.namespace = namespace
        self.timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._stubs: dict[str, Any] = {}

    @property
    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            target = self.address if self.address.startswith("unix:") else f"unix://{self.address}"
            self._channel = grpc.aio.insecure_channel(
                target,
                options=[
                    ("grpc.max_receive_message_length", _MAX_MSG),
                    ("grpc.max_send_message_length", _MAX_MSG),
                    ("grpc.enable_http_proxy", 0),
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 1000),
                ],
            )
        return self._channel

    def _stub(self, name: str, factory: Any) -> Any:
        stub = self._stubs.get(name)
        if stub is None:
            stub = self._stubs[name] = factory(self.channel)
        return stub

    @property
    def containers(self) -> Any:
        return self._stub("containers", containers_pb2_grpc.ContainersStub)

    @property
    def content(self) -> Any:
        return self._stub("content", content_pb2_grpc.ContentStub)

    @property
    def diff(self) -> Any:
        return self._stub("diff", diff_pb2_grpc.DiffStub)

    @property
    def events(self) -> Any:
        return self._stub("events", events_pb2_grpc.EventsStub)

    @property
    def images(self) -> Any:
        return self._stub("images", images_pb2_grpc.ImagesStub)

    @property
    def leases(self) -> Any:
        return self._stub("leases", leases_pb2_grpc.LeasesStub)

    @property
    def snapshots(self) -> Any:
        return self._stub("snapshots", snapshots_pb2_grpc.SnapshotsStub)

    @property
    def tasks(self) -> Any:
        return self._stub("tasks", tasks_pb2_grpc.TasksStub)

    @property
    def version(self) -> Any:
        return self._stub("version", version_pb2_grpc.VersionStub)

    def metadata(self, lease: str | None = None) -> tuple[tuple[str, str], ...]:
        md: tuple[tuple[str, str], ...] = (("containerd-namespace", self.namespace),)
        if lease:
            md += (("containerd-lease", lease),)
        return md

    async def call(
        self,
        method: Callable[..., Awaitable[T]],
        request: Any,
        what: str,
        *,
        lease: str | None = None,
        timeout: float | None = None,
    ) -> T:
        """Invoke a unary RPC; raise our typed error (``what`` names the operation)."""
        try:
            return await method(
                request,
                metadata=self.metadata(lease),
                timeout=timeout or self.timeout,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as e:
            raise map_error(e, what) from None

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stubs.clear()
