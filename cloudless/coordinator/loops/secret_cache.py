"""Decrypted secret and config values in the coordinator's memory, for the dispatcher's
assignments.

The only place values exist in clear on a coordinator. ``run()`` lists one table (secrets, or
configs) and follows its watch (re-listing after any store error), opening each sealed value
with the cluster key. Values are kept by their *key* in assignments: a secret's name, a
config's ``config_key(name)`` (a config record left in the secrets table by an earlier version
is keyed as a config too, so it reaches replicas as one). ``on_change(keys)`` tells the
dispatcher which values changed so it re-pushes the assignments of the nodes whose replicas use
them. A value that cannot be opened is left out (the replica then fails on its node with a
reason) and logged by name only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from cloudless.lib.clock import Clock, SystemClock
from cloudless.lib.errors import CloudlessError
from cloudless.model.registry_auth import CONFIG_TYPE
from cloudless.model.secrets import config_key
from cloudless.security.secretbox import Sealed, SecretBox
from cloudless.store.errors import StoreError
from cloudless.store.protocol import Store
from cloudless.store.table import Table
from cloudless.store.tables import TableSpec
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
        table: TableSpec[dict[str, Any]] = SECRETS,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.table: Table[dict[str, Any]] = table.bind(store)
        self.box = box
        self.on_change = on_change
        self._values: dict[str, bytes] = {}  # by key
        self._keys: dict[str, str] = {}  # record name -> its key

    def get(self, key: str) -> bytes | None:
        """The value of the secret named ``key``, or of the config whose ``config_key`` it is."""
        return self._values.get(key)

    def _open(self, name: str, data: dict[str, Any]) -> str:
        """Keep the record's value under its key (dropped if it cannot be opened); the key."""
        old = self._keys.pop(name, None)
        if old is not None:
            self._values.pop(old, None)
        try:
            sealed = Sealed.from_dict(data)
        except (KeyError, ValueError) as e:
            log.error("secret %s is unusable: %s", name, type(e).__name__)
            return old or name
        key = config_key(name) if sealed.type == CONFIG_TYPE else name
        self._keys[name] = key
        try:
            self._values[key] = self.box.open(sealed)
        except CloudlessError as e:
            log.error("secret %s is unusable: %s", name, e.message)
        return key

    def _drop(self, name: str) -> str:
        key = self._keys.pop(name, name)
        self._values.pop(key, None)
        return key

    async def run(self) -> None:
        while True:
            try:
                listing = await self.table.list()
                before = dict(self._values)
                self._values.clear()
                self._keys.clear()
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
                        keys = {self._drop(ev.name)}
                    else:
                        old = self._keys.get(ev.name)
                        keys = {self._open(ev.name, ev.record.value)} | ({old} if old else set())
                    self.on_change(keys)
            except StoreError as e:
                log.warning("secrets watch: %s; listing again", e)
                await self.clock.sleep(1.0)
