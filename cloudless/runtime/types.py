"""Value types of the runtime seam: what the agent asks for and what it gets back.

Everything here is frozen and free of I/O. ``ContainerSpec.validate()`` is the one place a
spec is judged; both runtimes call it, so the fake refuses exactly what containerd would.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from cloudless.lib.errors import ValidationError

#: containerd's identifier rule (identifiers.Validate): letters, digits, ``._-``, starts with a
#: letter or digit, at most 76 characters.
_ID_RE = re.compile(r"^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$")
MAX_ID_LENGTH = 76

#: Label keys the runtime writes itself; ``recover()`` finds its containers by ``LABEL_MANAGED``.
LABEL_MANAGED = "io.cloudless.managed"
LABEL_WORKLOAD = "io.cloudless.workload"
LABEL_REPLICA = "io.cloudless.replica"

#: Smallest memory limit accepted: below this even ``sh`` cannot start (runc needs ~ a few MiB).
MIN_MEMORY_BYTES = 4 * 1024 * 1024


def _frozen(m: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(m or {}))


def check_container_id(container_id: str) -> None:
    """Raise ``ValidationError`` naming the rule if ``container_id`` is not a usable id."""
    if not isinstance(container_id, str) or not container_id:
        raise ValidationError("container id: must be a non-empty string")
    if len(container_id) > MAX_ID_LENGTH:
        raise ValidationError(
            f"container id {container_id[:20]!r}...: {len(container_id)} characters, "
            f"at most {MAX_ID_LENGTH} allowed"
        )
    if not _ID_RE.match(container_id):
        raise ValidationError(
            f"container id {container_id!r}: use letters, digits and single '.', '_' or '-' "
            "between them (e.g. 'web-1')"
        )


@dataclass(frozen=True)
class BindMount:
    """A host directory (``source``) mounted at ``destination`` inside the container."""

    source: str
    destination: str
    read_only: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    """One container to run. Restarting is not the runtime's job: the agent decides that.

    ``command`` replaces the image's Entrypoint+Cmd when given; ``args`` alone replaces only Cmd
    (Docker's rule). ``env`` is merged over the image's Env. ``cpu_millicores`` becomes a CFS
    quota (1000 = one full core), ``memory_bytes`` a hard memory limit (0 = unlimited).
    ``netns`` is the path of an existing network namespace to join (``/run/netns/<name>``);
    empty shares the host's network.
    """

    id: str
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    working_dir: str = ""
    cpu_millicores: int = 0
    memory_bytes: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    workload_id: str = ""
    replica_id: str = ""
    mounts: tuple[BindMount, ...] = ()
    netns: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "mounts", tuple(self.mounts))
        object.__setattr__(self, "command", tuple(self.command))
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "env", _frozen(self.env))
        object.__setattr__(self, "labels", _frozen(self.labels))

    def validate(self) -> None:
        """Raise ``ValidationError`` listing every problem (field: reason and fix)."""
        problems: list[str] = []
        try:
            check_container_id(self.id)
        except ValidationError as e:
            problems.extend(e.problems)
        if not self.image:
            problems.append("image: required (e.g. 'registry.local:5000/busybox:1')")
        if self.cpu_millicores < 0:
            problems.append(
                f"cpu_millicores: {self.cpu_millicores} is negative; use 0 for no limit"
            )
        if self.memory_bytes < 0:
            problems.append(f"memory_bytes: {self.memory_bytes} is negative; use 0 for no limit")
        elif 0 < self.memory_bytes < MIN_MEMORY_BYTES:
            problems.append(
                f"memory_bytes: {self.memory_bytes} is below the minimum {MIN_MEMORY_BYTES} (4 MiB)"
            )
        if self.working_dir and not self.working_dir.startswith("/"):
            problems.append(f"working_dir: {self.working_dir!r} must be an absolute path")
        for k in self.env:
            if not k or "=" in k:
                problems.append(f"env: name {k!r} must be non-empty and contain no '='")
        for i, m in enumerate(self.mounts):
            if not m.source.startswith("/") or not m.destination.startswith("/"):
                problems.append(
                    f"mounts[{i}]: source {m.source!r} and destination {m.destination!r} must "
                    "both be absolute paths"
                )
        if self.netns and not self.netns.startswith("/"):
            problems.append(
                f"netns: {self.netns!r} must be the absolute path of a network namespace "
                "(e.g. /run/netns/cl-web-0), or empty for the host network"
            )
        for k in self.labels:
            if k.startswith("io.cloudless."):
                problems.append(f"labels: {k!r} is reserved for the runtime; choose another prefix")
        if problems:
            raise ValidationError(problems)

    def all_labels(self) -> dict[str, str]:
        """User labels plus the runtime's own (managed marker, workload and replica ids)."""
        out = dict(self.labels)
        out[LABEL_MANAGED] = "true"
        if self.workload_id:
            out[LABEL_WORKLOAD] = self.workload_id
        if self.replica_id:
            out[LABEL_REPLICA] = self.replica_id
        return out


class ContainerState(enum.StrEnum):
    """Observed lifecycle; only moves forward: created -> running -> exited."""

    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ContainerStatus:
    """What the runtime observed. ``exit_code``/``oom_killed``/``finished_at`` are set once exited.

    ``reason`` explains an unusual state in words a user can act on (e.g. why start failed).
    """

    id: str
    image: str
    state: ContainerState
    labels: Mapping[str, str] = field(default_factory=dict)
    pid: int | None = None
    exit_code: int | None = None
    oom_killed: bool = False
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _frozen(self.labels))

    @property
    def workload_id(self) -> str:
        return self.labels.get(LABEL_WORKLOAD, "")

    @property
    def replica_id(self) -> str:
        return self.labels.get(LABEL_REPLICA, "")


@dataclass(frozen=True)
class ContainerExit:
    """One exit, as pushed on the exit stream the moment the runtime sees it."""

    id: str
    exit_code: int
    oom_killed: bool
    finished_at: float


@dataclass(frozen=True)
class ContainerStats:
    """A point-in-time sample. ``cpu_ns`` and the byte counters are cumulative; diff two
    samples for a rate. ``disk_*``: block I/O through the cgroup (writes reach it when flushed
    to a device; tmpfs and page-cache-only writes never do). ``net_*``: -1 when not measured
    (the container shares the host's network namespace, so no counter is its own)."""

    id: str
    cpu_ns: int
    memory_bytes: int
    memory_limit_bytes: int
    pids: int
    timestamp: float
    disk_read_bytes: int = 0
    disk_write_bytes: int = 0
    net_rx_bytes: int = -1
    net_tx_bytes: int = -1


#: Most output an exec keeps (the start of it): a probe needs a reason, not a transcript.
MAX_EXEC_OUTPUT = 4096


@dataclass(frozen=True)
class ExecResult:
    """A command run inside a running container. ``timed_out``: it was killed at the deadline
    (``exit_code`` is then -1). ``output`` is stdout and stderr together, at most
    ``MAX_EXEC_OUTPUT`` bytes, decoded leniently."""

    exit_code: int
    output: str = ""
    timed_out: bool = False


@dataclass(frozen=True)
class ImageInfo:
    """A pulled image: its name, the digest of its manifest (or index) and the bytes its
    config and layers take in the registry (compressed)."""

    ref: str
    digest: str
    size_bytes: int


@dataclass(frozen=True)
class PullProgress:
    """Bytes fetched so far out of the total the manifest announced."""

    ref: str
    done_bytes: int
    total_bytes: int


ProgressCallback = Callable[[PullProgress], None]


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials for one pull from a private registry (basic auth, or the token service's
    credentials under bearer auth). Held in memory for the pull; never logged (repr hides the
    password) nor written to disk."""

    username: str
    password: str = field(repr=False)

    def fingerprint(self) -> str:
        """A short digest telling credentials apart (cache keys) without holding them."""
        digest = hashlib.sha256(f"{self.username}\0{self.password}".encode()).hexdigest()
        return digest[:16]


class LogStream(enum.StrEnum):
    STDOUT = "stdout"
    STDERR = "stderr"


@dataclass(frozen=True)
class LogCursor:
    """Where a reader stopped: per-stream byte offsets. Pass as ``since`` to resume.

    The runtime stores raw bytes (no per-line timestamps), so resuming is by position.
    """

    stdout: int = 0
    stderr: int = 0

    def get(self, stream: LogStream) -> int:
        return self.stdout if stream is LogStream.STDOUT else self.stderr

    def advanced(self, stream: LogStream, offset: int) -> LogCursor:
        if stream is LogStream.STDOUT:
            return LogCursor(offset, self.stderr)
        return LogCursor(self.stdout, offset)


@dataclass(frozen=True)
class LogLine:
    """One line (without its newline). ``cursor`` resumes right after this line."""

    stream: LogStream
    text: str
    cursor: LogCursor
