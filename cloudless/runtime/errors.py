"""Typed, user-facing runtime errors. Each message names the problem and the fix.

They subclass the shared ``cloudless.lib.errors`` roots so callers can catch broadly
(``NotFound``) or narrowly (``ImageNotFound``).
"""

from __future__ import annotations

from cloudless.lib.errors import CloudlessError, Conflict, NotFound


class RuntimeFailure(CloudlessError):
    """The runtime (containerd, the registry) failed in a way that is not the spec's fault."""

    code = "runtime_failure"


class ContainerNotFound(NotFound):
    code = "container_not_found"

    def __init__(self, container_id: str) -> None:
        super().__init__(f"container {container_id!r} does not exist on this node")
        self.container_id = container_id


class ContainerExists(Conflict):
    code = "container_exists"

    def __init__(self, container_id: str) -> None:
        super().__init__(
            f"container {container_id!r} already exists; delete it first or choose another id"
        )
        self.container_id = container_id


class InvalidState(Conflict):
    """The container is not in a state that allows the operation (e.g. starting it twice)."""

    code = "invalid_state"


class ImageNotPulled(NotFound):
    code = "image_not_pulled"

    def __init__(self, ref: str) -> None:
        super().__init__(f"image {ref!r} is not on this node; pull it before creating a container")
        self.ref = ref


class ImageNotFound(NotFound):
    code = "image_not_found"


class RegistryUnavailable(RuntimeFailure):
    code = "registry_unavailable"


class RegistryUnauthorized(CloudlessError):
    code = "registry_unauthorized"


class DigestMismatch(RuntimeFailure):
    code = "digest_mismatch"


class StartFailed(CloudlessError):
    """The container could not start; ``message`` says why (e.g. command not found)."""

    code = "start_failed"


class RuntimeUnavailable(RuntimeFailure):
    """containerd is not answering (restarting, socket missing)."""

    code = "runtime_unavailable"
