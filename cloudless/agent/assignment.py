"""What a node is asked to run and what it reports, and how an assignment becomes a container
spec: plain values and pure functions shared by the supervisor and the link.

``container_spec`` adds the replica's identity and host ports to its environment, and labels
the container with its spec version (``SPEC_VERSION_LABEL``: a mismatch means replace, except
for a new version with the same spec, ``same_template``), its host ports (``PORTS_LABEL``,
so a restarted agent keeps them) and the replica's restart count when it was made
(``RESTARTS_LABEL``: every restart makes a new container, so a restarted agent that adopts it
goes on counting from there).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from cloudless.lib.errors import CloudlessError, ValidationError
from cloudless.model.registry_auth import auth_for
from cloudless.model.replica import ReplicaState
from cloudless.model.workload import WorkloadSpec
from cloudless.runtime.oci.reference import parse_reference
from cloudless.runtime.types import BindMount, ContainerSpec, ContainerStatus, RegistryAuth

SPEC_VERSION_LABEL = "cloudless.spec-version"
PORTS_LABEL = "cloudless.ports"  # "8080=20001,9090=20002": declared port = host port
RESTARTS_LABEL = "cloudless.restarts"  # the replica's restarts before this container


def restarts_from_label(labels: Mapping[str, str]) -> int:
    """The restart count a container was made with (0 when absent or not a count)."""
    text = labels.get(RESTARTS_LABEL, "")
    return int(text) if text.isdigit() else 0


@dataclass(frozen=True)
class Assigned:
    replica_id: str
    workload: str
    spec_version: int
    spec: WorkloadSpec
    running: bool = True  # desired state
    #: Values of the secrets the spec refers to; never shown (repr) nor written to disk here.
    secrets: Mapping[str, bytes] = field(default_factory=dict, repr=False, compare=False)
    drop_volumes: bool = False  # stopped for good: delete its volumes' data once stopped
    trace: str = ""  # traceparent to start the container under ("" untraced)


@dataclass
class LocalStatus:
    """What this node reports for a replica (the agent's observed state)."""

    replica_id: str
    workload: str
    spec_version: int
    state: ReplicaState = ReplicaState.PENDING
    reason: str = ""
    exit_code: int | None = None
    restarts: int = 0
    started_at: float = 0.0
    endpoint: str = ""
    ready: bool = False  # running, and passing its readiness check if it has one
    health: str = ""  # why it is not ready, or why liveness restarted it
    volume_bytes: dict[str, int] = field(default_factory=dict)  # used, per volume name
    volume_quota: dict[str, str] = field(default_factory=dict)  # Enforcement.text, per volume


def pull_auth(a: Assigned) -> RegistryAuth | None:
    """Credentials for pulling ``a``'s image: its ``image_pull_secret``'s entry for the image's
    registry (None without one). Raises ``CloudlessError`` naming the secret and registry when
    the value is missing or has no entry for that registry."""
    name = a.spec.image_pull_secret
    if not name:
        return None
    host = parse_reference(a.spec.image).host
    value = a.secrets.get(name)
    if value is None:
        raise CloudlessError(
            f"image_pull_secret {name!r}: the coordinator sent no value (the secret is missing "
            f"or cannot be opened); pull of {a.spec.image} not attempted"
        )
    try:
        auth = auth_for(value, host)
    except ValidationError as e:
        raise CloudlessError(f"image_pull_secret {name!r}: {e.message}") from None
    if auth is None:
        raise CloudlessError(f"image_pull_secret {name!r} holds no credentials for {host}")
    return auth


def ports_label(ports: dict[int, int]) -> str:
    return ",".join(f"{c}={h}" for c, h in sorted(ports.items()))


def parse_ports_label(text: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for part in filter(None, text.split(",")):
        c, _, h = part.partition("=")
        if c.isdigit() and h.isdigit():
            out[int(c)] = int(h)
    return out


def container_spec(
    a: Assigned,
    ports: dict[int, int] | None = None,
    mounts: tuple[BindMount, ...] = (),
    secret_env: Mapping[str, str] | None = None,
    restarts: int = 0,
) -> ContainerSpec:
    env = {**a.spec.env, **(secret_env or {})}
    env.update({"CLOUDLESS_REPLICA": a.replica_id, "CLOUDLESS_WORKLOAD": a.workload})
    labels = {SPEC_VERSION_LABEL: str(a.spec_version)}
    if restarts:
        labels[RESTARTS_LABEL] = str(restarts)
    if ports:
        first = ports[a.spec.ports[0]] if a.spec.ports else next(iter(ports.values()))
        env["PORT"] = str(first)
        for c, h in ports.items():
            env[f"CLOUDLESS_PORT_{c}"] = str(h)
        labels[PORTS_LABEL] = ports_label(ports)
    return ContainerSpec(
        id=a.replica_id,
        image=a.spec.image,
        command=a.spec.command,
        args=a.spec.args,
        env=env,
        cpu_millicores=a.spec.resources.cpu_millis,
        memory_bytes=a.spec.resources.memory_bytes,
        labels=labels,
        workload_id=a.workload,
        replica_id=a.replica_id,
        mounts=mounts,
    )


def same_template(a: WorkloadSpec, b: WorkloadSpec) -> bool:
    """Whether two specs run the same containers (they may differ in replica count only)."""
    return replace(a, replicas=0) == replace(b, replicas=0)


def exit_reason(st: ContainerStatus) -> str:
    if st.oom_killed:
        return "OOM killed (memory limit exceeded)"
    if st.exit_code == 0:
        return "completed"
    if st.exit_code is not None and st.exit_code > 128:
        return f"killed by signal {st.exit_code - 128} (exit code {st.exit_code})"
    return f"exit code {st.exit_code}"
