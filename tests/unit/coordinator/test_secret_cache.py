"""The coordinator's value cache keys each value as assignments carry it: a secret by its name,
a config by ``config/<name>`` (also a config left in the secrets table by an earlier version),
so a secret and a config of one name reach replicas as two values."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from cloudless.coordinator.loops.secret_cache import SecretCache
from cloudless.lib.clock import FakeClock
from cloudless.security.secretbox import SecretBox
from cloudless.store.memory import MemoryStore
from cloudless.store.tables.secrets import CONFIGS, SECRETS

BOX = SecretBox(lambda g: bytes([g]) * 32)


def sealed(name: str, value: bytes, kind: str = "opaque") -> dict[str, object]:
    return replace(BOX.seal(name, value), type=kind).to_dict()


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_values_are_keyed_by_kind_and_changes_name_their_keys() -> None:
    store = MemoryStore(FakeClock())
    secrets, configs = SECRETS.bind(store), CONFIGS.bind(store)
    await secrets.put("app", sealed("app", b"s3cret"))
    await secrets.put("old", sealed("old", b"v=1", "config"))  # left by an earlier version
    await configs.put("app", sealed("app", b"a=1", "config"))
    changes: list[set[str]] = []
    on_secrets = SecretCache(store, BOX, changes.append)
    on_configs = SecretCache(store, BOX, changes.append, table=CONFIGS)
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(on_secrets.run()), tg.create_task(on_configs.run())]
        await settle()
        assert on_secrets.get("app") == b"s3cret"
        assert on_secrets.get("config/old") == b"v=1" and on_secrets.get("old") is None
        assert on_configs.get("config/app") == b"a=1" and on_configs.get("app") is None
        assert sorted(map(sorted, changes)) == [["app", "config/old"], ["config/app"]]
        changes.clear()
        # the left-over config moves to its own table (one transaction in the API)
        await secrets.delete("old")
        await configs.put("old", sealed("old", b"v=1", "config"))
        await settle()
        assert on_secrets.get("config/old") is None and on_configs.get("config/old") == b"v=1"
        assert changes == [{"config/old"}, {"config/old"}]
        changes.clear()
        await configs.put("app", sealed("app", b"a=2", "config"))
        await settle()
        assert on_configs.get("config/app") == b"a=2" and changes == [{"config/app"}]
        for t in tasks:
            t.cancel()
