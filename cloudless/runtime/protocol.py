"""The runtime protocol: everything the agent may ask of a container runtime.

Two implementations pass one contract suite (``tests/contract/runtime``): ``FakeRuntime``
(in-memory, driven by an injected clock) and ``ContainerdRuntime`` (containerd over gRPC).

Contract, shared by both:

* ``pull_image`` is idempotent; concurrent pulls of one ref share the work.
* ``create_container`` needs the image pulled (``ImageNotPulled`` otherwise) and a valid spec
  (``ValidationError`` listing every problem); ids are unique (``ContainerExists``).
* ``start_container`` moves created -> running; a command missing from the image raises
  ``StartFailed`` saying so and leaves the container created (delete it or fix the spec).
* ``stop_container`` sends SIGTERM, waits ``timeout`` seconds, then SIGKILL; returns the exited
  status. Stopping an exited or never-started container is a no-op.
* ``delete_container`` stops the container if needed (never orphans a running task) and removes
  it with its filesystem and logs. Deleting a missing container raises ``ContainerNotFound``.
* ``exits()`` yields every exit that happens while the iterator is open, at once, with
  ``oom_killed`` telling a memory kill from an ordinary SIGKILL. ``run()`` must be running for
  exits to be observed; it is the runtime's long-lived loop (events, reconnects, log caps).
* ``exec_in_container`` runs a command inside a *running* container (``InvalidState``
  otherwise) with the container's environment, user and working directory, and returns its
  exit code and the start of its output; past ``timeout`` seconds it is killed and reported
  ``timed_out``. It never affects the container's own process or its exit.
* ``recover()`` (after an agent restart) returns the statuses of every container this runtime's
  namespace holds that carry the managed label, so the agent can adopt them. Call it before
  relying on ``exits()``: a new runtime object only reports exits of containers it started or
  adopted; containers that exited while the agent was away come back from ``recover()`` as
  exited, not on the exit stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

from cloudless.runtime.types import (
    ContainerExit,
    ContainerSpec,
    ContainerStats,
    ContainerStatus,
    ExecResult,
    ImageInfo,
    LogCursor,
    LogLine,
    ProgressCallback,
    RegistryAuth,
)


@runtime_checkable
class ContainerRuntime(Protocol):
    async def run(self) -> None:
        """Long-lived loop (run it in the agent's TaskGroup); returns only when cancelled."""
        ...

    async def pull_image(
        self,
        ref: str,
        progress: ProgressCallback | None = None,
        *,
        auth: RegistryAuth | None = None,
    ) -> ImageInfo:
        """``auth``: credentials for the image's registry, used for this pull only. A registry
        refusing them (or asking for some when none are given) raises ``RegistryUnauthorized``
        naming the registry, even when the image is already on the node."""
        ...

    async def create_container(self, spec: ContainerSpec) -> ContainerStatus: ...

    async def start_container(self, container_id: str) -> ContainerStatus: ...

    async def stop_container(
        self,
        container_id: str,
        timeout: float = 10.0,
    ) -> ContainerStatus: ...

    async def delete_container(self, container_id: str) -> None: ...

    async def get_container(self, container_id: str) -> ContainerStatus: ...

    async def list_containers(self) -> list[ContainerStatus]: ...

    async def container_stats(self, container_id: str) -> ContainerStats: ...

    async def stats_all(self) -> list[ContainerStats]:
        """A sample of every running container (by id), in a fixed number of calls."""
        ...

    async def exec_in_container(
        self, container_id: str, command: Sequence[str], timeout: float = 10.0
    ) -> ExecResult: ...

    def container_logs(
        self,
        container_id: str,
        *,
        follow: bool = False,
        tail: int | None = None,
        since: LogCursor | float | None = None,
    ) -> AsyncIterator[LogLine]:
        """Lines of stdout then stderr (history), then both as they come if ``follow``.

        ``tail`` keeps the last N lines of each stream. ``since`` is either a ``LogCursor``
        (resume exactly after a line already seen) or a wall-clock time: output written at or
        after it, possibly with up to about a second of earlier output (containerd keeps no
        per-line timestamps; see ``containerd/logfiles.py``). Following ends when the container
        has exited and both streams are drained.
        """
        ...

    async def recover(self) -> list[ContainerStatus]: ...

    def exits(self) -> AsyncIterator[ContainerExit]:
        """A fresh subscription: every exit from now on, until the iterator is closed."""
        ...

    async def close(self) -> None: ...
