"""Removing a coordinator from a three-member etcd cluster (real etcd on loopback): with one
member dead, removing a healthy one would leave no quorum and is refused with nothing
changed; removing the dead one succeeds and etcd is left with two voting members."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from cloudless.cli.client import ApiError, Client, ClientConfig
from cloudless.coordinator.wiring.process import Coordinator
from cloudless.observability.store import unwrapped
from cloudless.store.etcd import EtcdStore
from cloudless.store.etcd_admin import EtcdAdmin

from .test_ha import config

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd not installed")


async def _members(c: Coordinator) -> list[str]:
    store = unwrapped(c.store)
    assert isinstance(store, EtcdStore)
    return sorted(m.name for m in await EtcdAdmin(store).members())


async def test_remove_coordinator_keeps_quorum(tmp_path: Path) -> None:
    coords: dict[str, Coordinator] = {}
    tasks: dict[str, asyncio.Task[None]] = {}
    try:
        c1 = Coordinator(config(tmp_path, "c1", bootstrap=True))
        coords["c1"], tasks["c1"] = c1, asyncio.create_task(c1.run())
        await asyncio.wait_for(c1.ready.wait(), 60)
        admin = tmp_path / "c1" / "admin" / "config.json"
        client = Client(ClientConfig.load(admin))
        for name in ("c2", "c3"):
            tok = await asyncio.to_thread(client.create_token, use="coordinator-join")
            c = Coordinator(config(tmp_path, name, join=c1.config.api_url, join_token=tok))
            coords[name], tasks[name] = c, asyncio.create_task(c.run())
            await asyncio.wait_for(c.ready.wait(), 90)
        assert await _members(c1) == ["c1", "c2", "c3"]

        leader = next(n for n, c in coords.items() if c.election.is_leader())
        dead, healthy = [n for n in coords if n != leader]
        coords[dead].etcd.kill()  # type: ignore[union-attr]
        tasks[dead].cancel()
        await asyncio.gather(tasks[dead], return_exceptions=True)
        cfg = ClientConfig.load(admin)
        cfg.servers = [coords[leader].config.api_url]
        client = Client(cfg)

        # 3 voters, one dead: removing the healthy follower leaves 2 (leader + dead), quorum
        # 2, 1 healthy -> refused; nothing changes
        with pytest.raises(ApiError) as e:
            await asyncio.to_thread(client.call, "DELETE", f"/v1/cluster/coordinators/{healthy}")
        assert e.value.status == 409 and "quorum" in e.value.message, e.value.message
        assert await _members(coords[leader]) == ["c1", "c2", "c3"]

        # removing the dead one leaves 2 healthy of 2, quorum 2 -> done
        res = await asyncio.to_thread(client.call, "DELETE", f"/v1/cluster/coordinators/{dead}")
        assert res["etcd_member_removed"] is True
        assert await _members(coords[leader]) == sorted([leader, healthy])
        listed = await asyncio.to_thread(client.call, "GET", "/v1/cluster/coordinators")
        assert sorted(c["name"] for c in listed["coordinators"]) == sorted([leader, healthy])
        spec = b"name: still\nimage: busybox\nresources: {cpu: 10m, memory: 1Mi}\n"
        await asyncio.to_thread(client.apply, spec)  # the two left still have a quorum
    finally:
        for t in tasks.values():
            t.cancel()
        await asyncio.wait_for(asyncio.gather(*tasks.values(), return_exceptions=True), 60)
