"""Container-to-container TCP throughput and latency across devices (iperf3, one stream),
plain routed vs over Nebula (direct, through a NAT, through the relay); connection setup
through a VIP vs straight to the endpoint; time for traffic to flow again after a nebula
restart. Everything runs in namespaces of a ``NetLab``."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import percentile
from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.lab import NetLab
from cloudless.network.nebula import NebulaCA
from cloudless.network.nft import NftContext, render
from cloudless.network.nft_apply import NftApplier
from cloudless.network.services import Endpoint, Service, ServiceKey, ServicePort, ServiceSpec
from cloudless.network.testing import run

PLAN = AddressPlanConfig(overlay_cidr="100.64.0.0/24", container_cidr="10.42.0.0/20").plan()
SECONDS = 3

CONNECT = """
import socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = []
for _ in range(n):
    t0 = time.perf_counter()
    s = socket.create_connection((host, port), timeout=3)
    out.append((time.perf_counter() - t0) * 1000)
    s.close()
print(" ".join(f"{x:.4f}" for x in out))
"""


def iperf(lab: NetLab, server_ns: str, client_ns: str, ip: str) -> dict[str, Any]:
    srv = lab.nss.popen(server_ns, ["iperf3", "-s", "-1", "-p", "5201"])
    try:
        time.sleep(0.3)
        out = run(
            [
                "ip",
                "netns",
                "exec",
                client_ns,
                "iperf3",
                "-c",
                ip,
                "-p",
                "5201",
                "-t",
                str(SECONDS),
                "-J",
            ]
        )
    finally:
        srv.kill()
        srv.wait()
    end = json.loads(out)["end"]
    ping = run(
        ["ip", "netns", "exec", client_ns, "busybox", "ping", "-c", "20", "-A", "-q", ip],
        check=False,
    )
    m = re.search(r"= [\d.]+/([\d.]+)/", ping)
    return {
        "mbit_s": round(end["sum_received"]["bits_per_second"] / 1e6, 1),
        "retransmits": end["sum_sent"].get("retransmits"),
        "rtt_avg_ms": float(m.group(1)) if m else None,
        "sender_cpu_pct": round(end["cpu_utilization_percent"]["host_total"], 1),
    }


async def until(ns: str, ip: str, reachable: bool, t0: float, limit: float = 30.0) -> float:
    """Seconds from ``t0`` until one ping from ``ns`` to ``ip`` succeeds (or fails)."""
    while time.monotonic() - t0 < limit:
        out = await asyncio.to_thread(
            run, ["ip", "netns", "exec", ns, "busybox", "ping", "-c1", "-W1", ip], check=False
        )
        if (" 0% packet loss" in out) == reachable:
            break
    return time.monotonic() - t0


def hand_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """What someone following Nebula's example config would run between two hosts."""
    out = {k: v for k, v in cfg.items() if k not in ("relay", "handshakes")}
    out["listen"] = {"host": "0.0.0.0", "port": cfg["listen"]["port"]}
    out["tun"] = {k: v for k, v in cfg["tun"].items() if k != "unsafe_routes"}
    out["punchy"] = {"punch": True}
    out["pki"] = {k: v for k, v in cfg["pki"].items() if k in ("ca", "cert", "key")}
    return out


def connect_ms(lab: NetLab, ns: str, ip: str, port: int, n: int = 200) -> list[float]:
    out = run(["ip", "netns", "exec", ns, sys.executable, "-c", CONNECT, ip, str(port), str(n)])
    return [float(x) for x in out.split()]


async def scenario(tmp: Path) -> dict[str, Any]:
    lab = NetLab("p", tmp, PLAN)
    res: dict[str, Any] = {"seconds_per_run": SECONDS, "streams": 1}
    try:
        lab.switch("pub", "192.168.77.0/24")
        lab.switch("pa", "192.168.88.0/24")
        lab.switch("ps", "192.168.99.0/24")
        lab.router("nata", "pub", "192.168.77.253/24", "pa", "192.168.88.1/24", symmetric=False)
        lab.router("nats", "pub", "192.168.77.254/24", "ps", "192.168.99.1/24", symmetric=True)
        lab.device("lh", 0, "pub", "192.168.77.1/24")
        d1 = lab.device("d1", 1, "pub", "192.168.77.11/24")
        d2 = lab.device("d2", 2, "pub", "192.168.77.12/24")
        d3 = lab.device("d3", 3, "pa", "192.168.88.10/24", gateway="192.168.88.1")
        d4 = lab.device("d4", 4, "ps", "192.168.99.10/24", gateway="192.168.99.1")
        c = {d.name: await lab.container(d, "c") for d in (d1, d2, d3, d4)}
        ns = {d.name: lab.container_ns(d, "c") for d in (d1, d2, d3, d4)}

        # plain routed bridges (no overlay): static routes between d1 and d2
        run(["ip", "-n", d1.ns, "route", "add", "10.42.2.0/24", "via", "192.168.77.12"])
        run(["ip", "-n", d2.ns, "route", "add", "10.42.1.0/24", "via", "192.168.77.11"])
        res["plain_routed"] = iperf(lab, ns["d2"], ns["d1"], c["d2"].ip)
        run(["ip", "-n", d1.ns, "route", "del", "10.42.2.0/24"])
        run(["ip", "-n", d2.ns, "route", "del", "10.42.1.0/24"])

        await lab.nebula_everywhere("lh")
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(d.nebula.run()) for d in lab.devices.values() if d.nebula]
            for d in lab.devices.values():
                assert d.nebula is not None
                await d.nebula.wait_active(15)
            for a, b in (("d1", "d2"), ("d1", "d3"), ("d3", "d4")):  # warm the tunnels
                for _ in range(50):
                    ok = await asyncio.to_thread(
                        run,
                        ["ip", "netns", "exec", ns[a], "busybox", "ping", "-c1", "-W1", c[b].ip],
                        check=False,
                    )
                    if " 0% packet loss" in ok:
                        break
            res["nebula_direct"] = await asyncio.to_thread(
                iperf, lab, ns["d2"], ns["d1"], c["d2"].ip
            )
            res["nebula_device_to_device"] = await asyncio.to_thread(
                iperf, lab, d2.ns, d1.ns, str(d2.addresses.overlay_ip)
            )
            res["nebula_through_nat"] = await asyncio.to_thread(
                iperf, lab, ns["d3"], ns["d1"], c["d3"].ip
            )
            res["nebula_relayed"] = await asyncio.to_thread(
                iperf, lab, ns["d4"], ns["d3"], c["d4"].ip
            )
            logs = [ln for d in (d3, d4) if d.nebula for ln in d.nebula.log]
            res["nebula_relayed"]["relay_seen_in_logs"] = any("via relay" in ln for ln in logs)

            # connection setup through a VIP vs straight to the endpoint (d1 -> d2, over nebula)
            spec = ServiceSpec(ServiceKey("default", "perf"), (ServicePort(5201),))
            svc = Service(
                spec,
                ipaddress.IPv4Address("10.43.0.9"),
                (Endpoint(ipaddress.IPv4Address(c["d2"].ip), "perf-0", "d2"),),
            )
            ctx = NftContext(d1.addresses.container_subnet, PLAN.containers, PLAN.cluster_ranges())
            await NftApplier(host_argv=d1.argv).apply(render(ctx, [svc]))
            srv = lab.nss.popen(ns["d2"], ["busybox", "httpd", "-f", "-p", "5201", "-h", str(tmp)])
            try:
                await asyncio.sleep(0.3)
                direct: list[float] = []
                via: list[float] = []
                for _ in range(4):  # interleaved, so drift hits both alike
                    direct += await asyncio.to_thread(
                        connect_ms, lab, ns["d1"], c["d2"].ip, 5201, 50
                    )
                    via += await asyncio.to_thread(connect_ms, lab, ns["d1"], "10.43.0.9", 5201, 50)
            finally:
                srv.kill()
                srv.wait()
            res["connect_ms"] = {
                "direct_p50": round(percentile(direct, 50), 3),
                "vip_p50": round(percentile(via, 50), 3),
                "vip_over_direct_p50": round(percentile(via, 50) / percentile(direct, 50), 3),
                "n": len(direct),
                "goal": "P50 through the VIP <= 1.1x straight to the endpoint",
            }

            # nebula restarted -> traffic flowing again, on a public device (d2) and on the
            # device behind the symmetric NAT (d4: a NATed device (re)joining)
            for dev, key in (
                (d2, "nebula_restart_to_traffic_s"),
                (d4, "natted_rejoin_to_first_packet_s"),
            ):
                took = []
                for _ in range(3):
                    assert dev.nebula is not None and dev.nebula.config is not None
                    t0 = time.monotonic()
                    await dev.nebula.apply(dev.nebula.config, cert_changed=True)  # a restart
                    took.append(await until(ns["d1"], c[dev.name].ip, True, t0))
                res[key] = {
                    "runs": [round(x, 2) for x in took],
                    "p50": round(percentile(took, 50), 2),
                    "max": round(max(took), 2),
                    "goal": "P50 <= 1 s" if dev is d2 else "P95 <= 5 s",
                }

            # d4 removed: its certificate blocklisted on every other device (reload)
            fp = await NebulaCA(tmp / "nebula-ca").fingerprint(d4.nebula.config["pki"]["cert"])  # type: ignore[union-attr,index]
            t0 = time.monotonic()
            for dev in lab.devices.values():
                if dev is not d4 and dev.nebula is not None and dev.nebula.config is not None:
                    cfg = dict(dev.nebula.config)
                    cfg["pki"] = dict(cfg["pki"], blocklist=[fp])
                    await dev.nebula.apply(cfg)
            gone = await until(ns["d1"], c["d4"].ip, False, t0)
            res["removed_device_loses_overlay_s"] = {
                "seconds": round(gone, 2),
                "how": "blocklist pushed by reload, pki.disconnect_invalid on",
                "goal": "a removed device loses the overlay within seconds",
            }

            # raw Nebula "configured by hand" on the same path: the example config's defaults
            # (no socket buffers, no relays, no unsafe routes), device to device
            for d in (d1, d2):
                assert d.nebula is not None and d.nebula.config is not None
                await d.nebula.apply(hand_config(d.nebula.config), cert_changed=True)
            for d in (d1, d2):
                assert d.nebula is not None
                await d.nebula.wait_active(15)
            for _ in range(50):
                ok = await asyncio.to_thread(
                    run,
                    ["ip", "netns", "exec", d1.ns, "busybox", "ping", "-c1", "-W1", "100.64.0.3"],
                    check=False,
                )
                if " 0% packet loss" in ok:
                    break
            res["nebula_by_hand_device_to_device"] = await asyncio.to_thread(
                iperf, lab, d2.ns, d1.ns, str(d2.addresses.overlay_ip)
            )
            ours = res["nebula_device_to_device"]["mbit_s"]
            hand = res["nebula_by_hand_device_to_device"]["mbit_s"]
            res["ours_over_by_hand"] = {
                "ratio": round(ours / hand, 3) if hand else None,
                "goal": ">= 0.9x raw Nebula configured by hand on the same path",
            }
            for t in tasks:
                t.cancel()
    finally:
        lab.close()
    return res


def measure() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="clnet-bench-") as tmp:
        return asyncio.run(scenario(Path(tmp)))


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
