"""The agent's look at its own Nebula: ``OverlayProbe``.

Every ``period`` seconds (on the injected clock) it reads the device's hostmap through the
admin interface and keeps ``report`` (``overlay_state.OverlayReport``), which the agent sends
with its heartbeats: every tunnel (direct with the address the peer's packets come from, or
relayed with its relays), and for how long the device has had no direct tunnel to any of the
lighthouses its current config names. A failed read becomes the report's ``error``; the time
without a lighthouse keeps counting from the last successful read that showed none. The probe
only observes: nothing it meets ends ``run`` (and so never the device network around it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from cloudless.lib.clock import Clock
from cloudless.network.errors import NetworkEdgeError
from cloudless.network.nebula_admin import Admin, hostmap
from cloudless.network.overlay_state import OverlayReport, lighthouse_missing_s

PERIOD_S = 10.0
log = logging.getLogger(__name__)


class OverlayProbe:
    def __init__(
        self,
        admin: Admin,
        lighthouses: Callable[[], Iterable[str]],
        clock: Clock,
        period: float = PERIOD_S,
    ) -> None:
        self.admin = admin
        self.lighthouses = lighthouses
        self.clock = clock
        self.period = period
        self.report: OverlayReport | None = None
        self._missing_since: float | None = None

    async def once(self) -> OverlayReport:
        try:
            tunnels = await hostmap(self.admin)
        except (NetworkEdgeError, OSError) as e:
            self.report = OverlayReport(error=str(e) or type(e).__name__)
            return self.report
        self._missing_since, missing = lighthouse_missing_s(
            tunnels, self.lighthouses(), self._missing_since, self.clock.monotonic()
        )
        self.report = OverlayReport(tunnels, round(missing, 1))
        return self.report

    async def run(self) -> None:
        while True:
            try:
                await self.once()
            except Exception as e:  # an observer's bug must not take the overlay down
                log.exception("overlay probe failed")
                self.report = OverlayReport(error=f"{type(e).__name__}: {e}")
            await self.clock.sleep(self.period)
