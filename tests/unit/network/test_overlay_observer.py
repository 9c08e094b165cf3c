"""The overlay observed end to end over the seams: an agent's probe (FakeAdmin, fake clock),
a lighthouse's published view and the leader's per-node records (MemoryStore), the endpoints
of an unreachable device left out, and ``net status`` / ``describe node`` documents."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloudless.coordinator.state.cluster import ClusterState
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.lib.clock import FakeClock
from cloudless.model.replica import ReplicaState
from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.controller import NetworkController
from cloudless.network.nebula_admin import ADDRMAP, HOSTMAP, AdminKeys, FakeAdmin, NebulaAdmin
from cloudless.network.observer import (
    LIGHTHOUSES,
    STALE_S,
    LighthouseWatch,
    OverlayObserver,
    overlay_records,
)
from cloudless.network.overlay_state import OverlayReport, Tunnel
from cloudless.network.probe import OverlayProbe
from cloudless.network.services import ServiceKey
from cloudless.network.state import assign_device, get_service
from cloudless.network.views import net_rows, network_status
from cloudless.scheduler.testing import node, replica, spec
from cloudless.store.fence import NO_FENCE
from cloudless.store.memory import MemoryStore

CONFIG = AddressPlanConfig(lighthouse="192.168.77.1:4242")
PLAN = CONFIG.plan()
LH = str(PLAN.lighthouse_ip)  # 100.127.255.254
A, B = str(PLAN.addresses(0).overlay_ip), str(PLAN.addresses(1).overlay_ip)  # .1, .2


def hostmap(*entries: tuple[str, str | None]) -> str:
    """Nebula 1.6's ``list-hostmap -json`` for (peer, "ip:port" or None when relayed)."""
    out = []
    for peer, remote in entries:
        cur = None
        if remote:
            ip, port = remote.split(":")
            cur = {"ip": ip, "port": int(port)}
        out.append({"vpnIp": peer, "currentRemote": cur, "currentRelaysToMe": [] if cur else [LH]})
    return json.dumps(out)


def addrmap(reported: dict[str, str]) -> str:
    return json.dumps(
        [{"vpnIp": ip, "addrs": {ip: {"reported": [a], "relay": []}}} for ip, a in reported.items()]
    )


async def test_probe_counts_time_without_a_lighthouse() -> None:
    clock = FakeClock()
    admin = FakeAdmin({HOSTMAP: hostmap((B, "192.168.77.11:4242"))})
    probe = OverlayProbe(admin, lambda: [LH], clock)
    r = await probe.once()
    assert r == OverlayReport((Tunnel(B, "192.168.77.11:4242"),), 0.0)
    clock.advance(35)
    assert (await probe.once()).lighthouses_missing_s == 35.0  # first look at 0, now 35
    admin.outputs[HOSTMAP] = hostmap((LH, "192.168.77.1:4242"))
    assert (await probe.once()).lighthouses_missing_s == 0.0
    admin.down = "connection refused"
    r = await probe.once()
    assert r.tunnels == () and "connection refused" in r.error


async def test_lighthouse_view_is_written_on_change_and_refreshed() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    admin = FakeAdmin(
        {HOSTMAP: hostmap((A, "192.168.77.253:4242")), ADDRMAP: addrmap({A: "192.168.88.10:4242"})}
    )
    watch = LighthouseWatch(store, admin, LH, clock)
    v = await watch.once()
    assert v.seen_map() == {A: "192.168.77.253:4242"}
    assert v.reported_map() == {A: ("192.168.88.10:4242",)}
    rev = (await LIGHTHOUSES.bind(store).get(LH)).mod_revision  # type: ignore[union-attr]
    clock.advance(10)
    await watch.once()  # same view, 10 s later: no write
    assert (await LIGHTHOUSES.bind(store).get(LH)).mod_revision == rev  # type: ignore[union-attr]
    clock.advance(60)
    await watch.once()  # 70 s after the last write: refreshed so readers know it is alive
    assert (await LIGHTHOUSES.bind(store).get(LH)).mod_revision > rev  # type: ignore[union-attr]
    admin.down = "nebula is not running"
    assert "not running" in (await watch.once()).error


async def observed(
    store: MemoryStore, clock: FakeClock, reports: dict[str, OverlayReport], seen: dict[str, str]
) -> OverlayObserver:
    for n in ("a", "b"):
        await assign_device(store, PLAN, n)
    admin = FakeAdmin(
        {
            HOSTMAP: hostmap(*seen.items()),
            ADDRMAP: addrmap({A: "192.168.88.10:4242", B: "192.168.77.11:4242"}),
        }
    )
    await LighthouseWatch(store, admin, LH, clock).once()
    obs = OverlayObserver(store, PLAN, clock, lambda: reports)
    await obs.once(NO_FENCE)
    return obs


async def test_observer_records_nat_paths_and_reachability() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    reports = {
        "a": OverlayReport((Tunnel(B, "192.168.77.11:4242"), Tunnel(LH, "192.168.77.1:4242"))),
        "b": OverlayReport((Tunnel(A, "192.168.77.253:4242"), Tunnel(LH, "192.168.77.1:4242"))),
    }
    seen = {A: "192.168.77.253:4242", B: "192.168.77.11:4242"}
    await observed(store, clock, reports, seen)
    recs = await overlay_records(store)
    # a: lighthouse and b both see 192.168.77.253:4242, not its own 192.168.88.10 -> cone
    assert (recs["a"].nat, recs["a"].reachable) == ("cone", True)
    assert (recs["b"].nat, recs["b"].reachable) == ("none", True)
    doc = network_status(CONFIG, {}, {}, {}, recs)
    assert doc["nodes"] == []  # no device records passed: nothing listed
    from cloudless.network.state import list_devices

    doc = network_status(CONFIG, await list_devices(store), {"a": "dev-a", "b": "dev-b"}, {}, recs)
    rows = {r[0]: r for r in net_rows(doc)}
    assert rows["dev-a"][4:7] == ["cone", "2 direct, 0 relayed", "yes"]
    assert doc["nodes"][0]["paths"][0]["peer_name"] == "dev-b"
    assert doc["nodes"][0]["paths"][1]["peer_name"] == "lighthouse"


async def test_stale_lighthouse_view_is_not_used() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    obs = await observed(store, clock, {}, {A: "192.168.77.253:4242"})
    assert (await overlay_records(store))["a"].reachable is True
    clock.advance(STALE_S + 1)  # the lighthouse's coordinator stopped writing
    await obs.once(NO_FENCE)
    rec = (await overlay_records(store))["a"]
    assert (rec.nat, rec.reachable) == ("unknown", None)


async def test_unreachable_device_is_left_out_of_endpoints() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    # b reaches nothing: no lighthouse sighting, and its agent has had no lighthouse for 40 s
    reports = {"b": OverlayReport((), 40.0)}
    obs = await observed(store, clock, reports, {A: "192.168.77.253:4242"})
    recs = await overlay_records(store)
    assert recs["b"].reachable is False
    assert "no tunnel to any lighthouse for 40s" in recs["b"].reach_reason

    state = ClusterState(store)
    for n in ("a", "b"):
        await state.nodes.put(n, node(n))
    await state.workloads.put("web", WorkloadRecord(spec("web", ports=(80,))))
    for rid, n, ip in (("web-0", "a", "10.42.0.5"), ("web-1", "b", "10.42.1.5")):
        r = replace(replica(rid, "web", n), observed=ReplicaState.RUNNING, endpoint=f"{ip}:80")
        await state.replicas.put(f"web/{rid}", r)
    ctl = NetworkController(state, PLAN, clock)
    plan = await ctl.reconcile_once(NO_FENCE)
    rec = await get_service(store, ServiceKey("default", "web"))
    assert rec is not None
    assert [e.replica for e in rec.endpoints] == ["web-0"]
    assert rec.total == 2
    assert any("web-1: device b is unreachable" in p for p in plan.problems)

    # b's tunnel comes back: the observer flips it, the controller puts web-1 back
    reports["b"] = OverlayReport((Tunnel(LH, "192.168.77.1:4242"),))
    await obs.once(NO_FENCE)
    await ctl.reconcile_once(NO_FENCE)
    rec = await get_service(store, ServiceKey("default", "web"))
    assert rec is not None and [e.replica for e in rec.endpoints] == ["web-0", "web-1"]


def test_admin_keys_are_made_once_and_pinned(tmp_path: Path) -> None:
    keys = AdminKeys(tmp_path / "admin")
    s1 = keys.ensure(4242)
    s2 = keys.ensure(4242)
    assert s1 == s2  # the same keys the second time
    assert s1.listen == "127.0.0.1:4242" and s1.public_key.startswith("ssh-ed25519 ")
    for p in (keys.host_key, keys.client_key, keys.known_hosts):
        assert p.stat().st_mode & 0o777 == 0o600
    host = serialization.load_ssh_private_key(keys.host_key.read_bytes(), None)
    assert isinstance(host, Ed25519PrivateKey)
    pub = host.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    assert keys.known_hosts.read_text() == f"[127.0.0.1]:4242 {pub.decode()}\n"
    argv = NebulaAdmin(keys, 4242, host_argv=("ip", "netns", "exec", "x")).argv("list-hostmap")
    assert argv[:4] == ["ip", "netns", "exec", "x"]
    assert "StrictHostKeyChecking=yes" in argv and argv[-2:] == [
        "cloudless@127.0.0.1",
        "list-hostmap",
    ]


def test_admin_keys_refuse_a_foreign_key(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    from cloudless.network.errors import NetworkEdgeError

    keys = AdminKeys(tmp_path)
    tmp_path.mkdir(exist_ok=True)
    k = ec.generate_private_key(ec.SECP256R1())
    keys.host_key.write_bytes(
        k.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(NetworkEdgeError, match="not an ed25519 key"):
        keys.ensure(4242)
