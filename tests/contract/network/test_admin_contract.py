"""The Nebula admin seam (``nebula_admin.Admin``): ``FakeAdmin`` and the real ``NebulaAdmin``
(ssh to a lighthouse's ``sshd`` in a namespace, host key pinned) pass one suite: the two
commands the overlay report needs parse, and a Nebula that is gone is a NetworkEdgeError
saying why, never another exception."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloudless.network.errors import NetworkEdgeError
from cloudless.network.nebula import NebulaCA, NebulaSupervisor
from cloudless.network.nebula_admin import (
    ADDRMAP,
    HOSTMAP,
    Admin,
    AdminKeys,
    FakeAdmin,
    NebulaAdmin,
    addrmap,
    hostmap,
)
from cloudless.network.nebula_config import groups_from_labels
from cloudless.network.testing import Namespaces
from tests.contract.network.test_nebula_contract import HAVE_NEBULA, PLAN, lighthouse_config

HAVE_SSH = shutil.which("ssh") is not None


class Rig:
    def __init__(self, admin: Admin, stop: object) -> None:
        self.admin = admin
        self.stop = stop  # makes the next command fail as a stopped Nebula would


@pytest.fixture(params=["fake", "nebula"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    if request.param == "fake":
        fake = FakeAdmin({HOSTMAP: "[]", ADDRMAP: "[]"})

        def down() -> None:
            fake.down = "connection refused"

        yield Rig(fake, down)
        return
    if not (HAVE_NEBULA and HAVE_SSH):
        pytest.skip("nebula, nebula-cert or ssh not installed (nebula, openssh-client)")
    ns: Namespaces = request.getfixturevalue("namespaces")
    dev = ns.create("lh")
    ca = NebulaCA(tmp_path / "ca")
    await ca.ensure()
    crt, key = await ca.issue("lh", PLAN.addresses(0), groups_from_labels({}), tmp_path / "lh")
    keys = AdminKeys(tmp_path / "admin")
    cfg = lighthouse_config(tmp_path, crt, key, admin=keys.ensure(4242))
    cfg["tun"] = {"disabled": True}
    argv = ("ip", "netns", "exec", dev)
    sup = NebulaSupervisor(tmp_path / "run", host_argv=argv)
    await sup.apply(cfg)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(sup.run())
        await sup.wait_active(15)
        admin = NebulaAdmin(keys, 4242, host_argv=argv, timeout=5)
        for _ in range(50):  # sshd starts right after the interface
            try:
                await admin.command("version")
                break
            except NetworkEdgeError:
                await asyncio.sleep(0.1)

        def down() -> None:
            task.cancel()

        yield Rig(admin, down)
        task.cancel()


async def test_hostmap_and_addrmap_parse(rig: Rig) -> None:
    assert await hostmap(rig.admin) == ()  # a lighthouse nobody has met yet
    assert await addrmap(rig.admin) == {}


async def test_a_stopped_nebula_is_an_edge_error(rig: Rig) -> None:
    assert callable(rig.stop)
    rig.stop()
    with pytest.raises(NetworkEdgeError):
        for _ in range(50):  # until the process is stopped and reaped
            await hostmap(rig.admin)
            await asyncio.sleep(0.1)


async def test_a_foreign_host_key_is_refused(tmp_path: Path, rig: Rig) -> None:
    if isinstance(rig.admin, FakeAdmin):
        pytest.skip("pinning is the real interface's")
    assert isinstance(rig.admin, NebulaAdmin)
    other = AdminKeys(tmp_path / "other")
    other.ensure(4242)  # another host key pinned for the same port
    other.client_key.write_bytes(rig.admin.keys.client_key.read_bytes())
    impostor = NebulaAdmin(other, 4242, host_argv=rig.admin.host_argv, timeout=5)
    with pytest.raises(NetworkEdgeError, match="nebula admin on port 4242"):
        await impostor.command("version")
