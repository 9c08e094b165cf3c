"""Container runtime: the seam between the agent and the thing that runs containers.

Owns: the ``ContainerRuntime`` protocol and its value types, an in-memory ``FakeRuntime``, and
``ContainerdRuntime`` (``cloudless.runtime.containerd``), which speaks containerd's gRPC API and
the OCI distribution API directly. Restart policy is not here: the agent decides that.
"""

from cloudless.runtime.errors import (
    ContainerExists,
    ContainerNotFound,
    DigestMismatch,
    ImageNotFound,
    ImageNotPulled,
    InvalidState,
    RegistryUnauthorized,
    RegistryUnavailable,
    RuntimeFailure,
    RuntimeUnavailable,
    StartFailed,
)
from cloudless.runtime.fake import FakeBehavior, FakeExec, FakeHost, FakeRuntime
from cloudless.runtime.protocol import ContainerRuntime
from cloudless.runtime.types import (
    LABEL_MANAGED,
    LABEL_REPLICA,
    LABEL_WORKLOAD,
    BindMount,
    ContainerExit,
    ContainerSpec,
    ContainerState,
    ContainerStats,
    ContainerStatus,
    ExecResult,
    ImageInfo,
    LogCursor,
    LogLine,
    LogStream,
    ProgressCallback,
    PullProgress,
)

__all__ = [
    "LABEL_MANAGED",
    "LABEL_REPLICA",
    "LABEL_WORKLOAD",
    "BindMount",
    "ContainerExists",
    "ContainerExit",
    "ContainerNotFound",
    "ContainerRuntime",
    "ContainerSpec",
    "ContainerState",
    "ContainerStats",
    "ContainerStatus",
    "DigestMismatch",
    "ExecResult",
    "FakeBehavior",
    "FakeExec",
    "FakeHost",
    "FakeRuntime",
    "ImageInfo",
    "ImageNotFound",
    "ImageNotPulled",
    "InvalidState",
    "LogCursor",
    "LogLine",
    "LogStream",
    "ProgressCallback",
    "PullProgress",
    "RegistryUnauthorized",
    "RegistryUnavailable",
    "RuntimeFailure",
    "RuntimeUnavailable",
    "StartFailed",
]
