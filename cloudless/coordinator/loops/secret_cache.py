"""Decrypted secret values in the coordinator's memory, for the dispatcher's assignments.

The only place values exist in clear on a coordinator. ``run()`` lists the secrets table and
follows its watch (re-listing after any store error), opening each sealed value with the
cluster key; ``on_change(names)`` tells the dispatcher which secrets changed so it re-pushes
the assignments of the nodes whose replicas use them. A value that cannot be opened is left out
(the replica then fails on its node with a reason) and logged by name only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from cloudless.lib.clock import Clock, SystemClock
from cloudless.lib.errors import CloudlessError
from cloudless.security.secretbox import Sealed, SecretBox
from cloudless.store.errors import StoreError
from cloudless.store.protocol import Store
from cloudless.store.table import Table
from cloudless.store.tables.secrets import SECRETS
from cloudless.store.types import EventType

log = logging.getLogger("cloudless.coordinator.secrets")


class SecretCache:
    def __init__(
        self,
        store: Store,
        box: SecretBox,
        on_change: Callable[[set[str]], None] = lambda n: None,
        clock: Clock | None = None,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.table: Table[dict[str, Any]] = SECRETS.bind(store)
        self.box = box
        self.on_change = on_change
        self._values: dict[str, bytes] = {}

    def get(self, name: str) -> bytes | None:
        return self._values.get(name)

    def _open(self, name: str, data: dict[str, Any]) -> None:
        try:
            self._values[name] = self.box.open(Sealed.from_dict(data))
        except (CloudlessError, KeyError, ValueError) as e:
            self._values.pop(name, None)
            log.error("secret %s is unusable: %s", name, getattr(e, "message", type(e).__name__))

    async def run(self) -> None:
        while True:
            try:
                listing = await self.table.list()
                before = dict(self._values)
                self._values.clear()
                for rec in listing.records:
                    self._open(rec.name, rec.value)
                changed = {
                    n
                    for n in before.keys() | self._values.keys()
                    if before.get(n) != self._values.get(n)
                }
                if changed:
                    self.on_change(changed)
                async for ev in self.table.watch(start_revision=listing.revision + 1):
                    if ev.type is EventType.DELETE or ev.record is None:
                        self._values.pop(ev.name, None)
                    else:
                        self._open(ev.name, ev.record.value)
                    self.on_change({ev.name})
            except StoreError as e:
                log.warning("secrets watch: %s; listing again", e)
                await self.clock.sleep(1.0)
