"""Runs a replica's health checks for one container incarnation.

``HealthRunner.run()`` probes on the schedule the state machine sets, reports readiness
changes through ``on_ready(ready, detail)`` and returns only when the liveness check fails,
with the reason; the caller (the replica's worker) then restarts the container under its
restart policy and starts a fresh runner for the next incarnation. It needs nothing from the
coordinator, so checks go on while the node is cut off.

Probes due at the same time run concurrently; each result is taken as of the moment its probe
started, so the cadence is one interval from start to start however long a probe takes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cloudless.agent.health import machine
from cloudless.agent.health.machine import ProbeState, Verdict
from cloudless.lib.clock import Clock
from cloudless.model.health import HealthChecks, Probe
from cloudless.observability.metrics import PROBE_RESULTS

ProbeFn = Callable[[Probe], Awaitable[tuple[bool, str]]]


@dataclass
class HealthRunner:
    checks: HealthChecks
    probe: ProbeFn
    clock: Clock
    on_ready: Callable[[bool, str], None]
    started_at: float  # the container's start, on the clock's monotonic scale

    async def run(self) -> str:
        """Probe until liveness fails; return why (``"<probe>: <detail>"``)."""
        checks: list[tuple[str, Probe]] = []
        if self.checks.liveness is not None:
            checks.append(("liveness", self.checks.liveness))
        if self.checks.readiness is not None:
            checks.append(("readiness", self.checks.readiness))
        states = {name: machine.start(self.started_at) for name, _ in checks}
        if not checks:
            await asyncio.Event().wait()
        while True:
            now = self.clock.monotonic()
            wake = min(s.next_at for s in states.values())
            if wake > now:
                await self.clock.sleep(wake - now)
                now = self.clock.monotonic()
            due = [(n, p) for n, p in checks if machine.due(states[n], now)]
            results = await asyncio.gather(*(self.probe(p) for _, p in due))
            for (name, p), (ok, detail) in zip(due, results, strict=True):
                PROBE_RESULTS.labels(name, p.kind.value, "success" if ok else "failure").inc()
                states[name], change = machine.observe(states[name], p, now, ok, detail)
                if name == "readiness" and change is not None:
                    ready = change is Verdict.PASSING
                    self.on_ready(ready, "" if ready else f"readiness {p.describe()}: {detail}")
                if name == "liveness" and change is Verdict.FAILING:
                    return _failed(p, states[name])


def _failed(p: Probe, s: ProbeState) -> str:
    return f"liveness {p.describe()} failed {s.failures} times in a row: {s.detail}"
