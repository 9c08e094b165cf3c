"""Health checks: how the agent tells a live, useful replica from a merely running one.

A workload declares up to two checks under ``health:``. A failing **liveness** check restarts
the replica under its restart policy; a **readiness** check decides whether the replica is
``ready`` (and so an endpoint). Example::

    health:
      liveness:
        exec: ["test", "-f", "/tmp/alive"]
        interval: 5s        # seconds or "500ms", "5s", "1m"
        timeout: 1s
        failure_threshold: 3
        start_grace: 30s    # failures in the first 30 s after start do not count
      readiness:
        http: {port: 8080, path: /healthz}
        interval: 2s
        success_threshold: 1

A check has exactly one probe: ``exec`` (a command run inside the container, exit 0 = pass),
``http`` (GET on a declared port, 2xx/3xx = pass) or ``tcp`` (a connection to a declared port
succeeds). The values are frozen; the parser lives in ``health_codec``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

#: Bounds a check's timing must stay within; absurd values are refused with these in the message.
MIN_INTERVAL_S = 0.1
MAX_INTERVAL_S = 3600.0
MAX_TIMEOUT_S = 300.0
MAX_GRACE_S = 3600.0
MAX_THRESHOLD = 100


class ProbeKind(enum.StrEnum):
    EXEC = "exec"
    HTTP = "http"
    TCP = "tcp"


@dataclass(frozen=True, slots=True)
class Probe:
    """One check. ``command`` is for exec; ``port`` (a declared container port), ``path`` and
    ``scheme`` for http; ``port`` for tcp. ``timeout_s`` never exceeds ``interval_s``."""

    kind: ProbeKind
    command: tuple[str, ...] = ()
    port: int = 0
    path: str = "/"
    interval_s: float = 10.0
    timeout_s: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3
    start_grace_s: float = 0.0

    def describe(self) -> str:
        match self.kind:
            case ProbeKind.EXEC:
                return "exec " + " ".join(self.command)
            case ProbeKind.HTTP:
                return f"http GET :{self.port}{self.path}"
            case ProbeKind.TCP:
                return f"tcp :{self.port}"


@dataclass(frozen=True, slots=True)
class HealthChecks:
    liveness: Probe | None = None
    readiness: Probe | None = None

    def __bool__(self) -> bool:
        return self.liveness is not None or self.readiness is not None
