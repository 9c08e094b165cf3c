"""Overlay contract: nebula supervised in a namespace, and the fake. Plus the CA edge."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.errors import NetworkEdgeError
from cloudless.network.nebula import (
    FakeOverlay,
    NebulaCA,
    NebulaSupervisor,
    Overlay,
    nebula_version,
)
from cloudless.network.nebula_config import (
    NebulaSettings,
    groups_from_labels,
    render_config,
    to_yaml,
)
from cloudless.network.testing import Namespaces, run

PLAN = AddressPlanConfig(overlay_cidr="100.64.0.0/24").plan()
HAVE_NEBULA = shutil.which("nebula") is not None and shutil.which("nebula-cert") is not None


@dataclass
class Rig:
    overlay: Overlay
    config: dict[str, Any]
    real: bool


def lighthouse_config(d: Path, crt: Path, key: Path, **kw: Any) -> dict[str, Any]:
    s = NebulaSettings(
        name="lh",
        addresses=PLAN.addresses(0),
        plan=PLAN,
        ca_path=str(d / "ca" / "ca.crt"),
        cert_path=str(crt),
        key_path=str(key),
        lighthouses={},
        am_lighthouse=True,
        **kw,
    )
    return render_config(s)


@pytest.fixture(params=["fake", "nebula"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    if request.param == "fake":
        cfg = lighthouse_config(tmp_path, tmp_path / "h.crt", tmp_path / "h.key")
        fake = FakeOverlay()
        async with asyncio.TaskGroup() as tg:
            t = tg.create_task(fake.run())
            yield Rig(fake, cfg, False)
            t.cancel()
        return
    if not HAVE_NEBULA:
        pytest.skip("nebula/nebula-cert not installed (apt-get install nebula)")
    ns: Namespaces = request.getfixturevalue("namespaces")
    dev = ns.create("lh")
    ca = NebulaCA(tmp_path / "ca")
    await ca.ensure()
    crt, key = await ca.issue("lh", PLAN.addresses(0), ["cloudless"], tmp_path / "lh")
    cfg = lighthouse_config(tmp_path, crt, key)
    sup = NebulaSupervisor(tmp_path / "run", host_argv=("ip", "netns", "exec", dev))
    async with asyncio.TaskGroup() as tg:
        t = tg.create_task(sup.run())
        yield Rig(sup, cfg, True)
        t.cancel()
    assert run(["ip", "netns", "pids", dev], check=False).strip() == ""  # nebula reaped


async def test_start_reload_restart(rig: Rig) -> None:
    assert rig.overlay.pid is None
    assert await rig.overlay.apply(rig.config) == "start"
    await rig.overlay.wait_active(10)
    pid = rig.overlay.pid
    assert pid is not None
    assert await rig.overlay.apply(rig.config) == "none"
    blocked = dict(rig.config, pki=dict(rig.config["pki"], blocklist=["00" * 32]))
    assert await rig.overlay.apply(blocked) == "reload"
    assert rig.overlay.pid == pid  # SIGHUP, same process
    moved = dict(blocked, listen=dict(blocked["listen"], port=4343))
    assert await rig.overlay.apply(moved) == "restart"
    await asyncio.sleep(0)
    await rig.overlay.wait_active(10)
    assert rig.overlay.pid not in (None, pid)
    assert await rig.overlay.apply(moved, cert_changed=True) == "restart"
    await rig.overlay.wait_active(10)
    assert rig.overlay.restarts == 0  # asked-for restarts are not crashes


async def test_wait_active_without_config_fails(rig: Rig) -> None:
    with pytest.raises(NetworkEdgeError, match="did not come up"):
        await rig.overlay.wait_active(0.3)


@pytest.mark.skipif(not HAVE_NEBULA, reason="nebula not installed")
async def test_rendered_configs_pass_nebula_test(tmp_path: Path) -> None:
    """What render_config writes, nebula itself accepts (nebula -test)."""
    ca = NebulaCA(tmp_path / "ca")
    await ca.ensure()
    crt, key = await ca.issue("d1", PLAN.addresses(1), groups_from_labels({"zone": "a"}), tmp_path)
    s = NebulaSettings(
        name="d1",
        addresses=PLAN.addresses(1),
        plan=PLAN,
        ca_path=str(ca.crt),
        cert_path=str(crt),
        key_path=str(key),
        lighthouses={"100.64.0.1": ["192.0.2.1:4242"]},
        relays=("100.64.0.1",),
        behind_nat=True,
        blocklist=("ab" * 32,),
        advertise=("192.0.2.0/24",),
    )
    path = tmp_path / "c.yml"
    path.write_text(to_yaml(render_config(s)))
    run(["nebula", "-test", "-config", str(path)])  # non-zero exit on a faulty config


@pytest.mark.skipif(not HAVE_NEBULA, reason="nebula not installed")
async def test_ca_issue_and_fingerprint(tmp_path: Path) -> None:
    v = await nebula_version()
    assert v.supported, f"nebula {v} is older than 1.6"
    ca = NebulaCA(tmp_path / "ca")
    await ca.ensure()
    mtime = ca.crt.stat().st_mtime_ns
    await ca.ensure()  # exists: kept
    assert ca.crt.stat().st_mtime_ns == mtime
    crt, _ = await ca.issue("d1", PLAN.addresses(1), ["cloudless", "zone=a"], tmp_path / "d1")
    info = run(["nebula-cert", "print", "-json", "-path", str(crt)])
    assert '"100.64.0.2/24"' in info and '"10.42.1.0/24"' in info
    fp1 = await ca.fingerprint(crt)
    crt2, _ = await ca.issue("d1", PLAN.addresses(1), ["cloudless"], tmp_path / "d1")
    assert await ca.fingerprint(crt2) != fp1  # re-issued: a new certificate
    assert (crt2.stat().st_mode & 0o777) in (0o600, 0o644)
