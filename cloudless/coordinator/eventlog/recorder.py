"""``EventRecorder``: how every part of the coordinator writes an event.

One recorder per coordinator, shared by the loops and the edges (they hold the recorder, not
each other). ``emit`` puts one event and logs its message; a store that does not answer
costs the event (logged), never the caller's operation. Security refusals are limited to
``SECURITY_EVENTS_PER_S`` per second, so a flood of bad requests cannot become a flood of
writes.
"""

from __future__ import annotations

import logging

from cloudless.coordinator.state.cluster import ClusterState, event
from cloudless.lib.clock import Clock
from cloudless.store.errors import StoreError

log = logging.getLogger("cloudless.coordinator.eventlog")


class EventRecorder:
    SECURITY_EVENTS_PER_S = 20

    def __init__(self, state: ClusterState, clock: Clock) -> None:
        self.state = state
        self.clock = clock
        self._sec_window = -1
        self._sec_count = 0

    async def emit(self, kind: str, message: str, **fields: str) -> None:
        """Record an event in the store (and the log); never raises a store error."""
        if kind == "security":
            second = int(self.clock.monotonic())
            if second != self._sec_window:
                self._sec_window, self._sec_count = second, 0
            self._sec_count += 1
            if self._sec_count > self.SECURITY_EVENTS_PER_S:
                return
        name, body = event(kind, message, self.clock.now(), **fields)
        log.info(message)
        try:
            await self.state.events.put(name, body)
        except StoreError as e:
            log.warning("event not recorded: %s (%s)", message, e)
