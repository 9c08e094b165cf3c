"""A multi-device network lab in namespaces, for integration tests and benchmarks.

``NetLab`` builds, entirely inside network namespaces it names ``clnet<pid><tag>-...``:

* **switches**: a namespace holding a bridge ``br0``; devices and routers plug into it with
  veth pairs created directly inside the namespaces (nothing in the root namespace);
* **routers**: a namespace with ``wan`` on one switch and ``lan`` on another, forwarding and
  masquerading ``lan`` traffic (``--random-fully`` for a symmetric NAT);
* **devices**: a namespace with ``eth0`` on a switch (default route via its router when NATed),
  forwarding on, a CNI bridge network for its slot and containers as namespaces;
* **nebula** on every device from one CA, the first device the lighthouse and relay; with
  ``admin=True`` each also serves its admin interface (``Device.admin`` reads it).

``close()`` kills every process and removes every namespace with the lab's prefix (also after
a failure half-way). Traffic never leaves the lab's namespaces.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudless.network.addressing import AddressPlan, DeviceAddresses
from cloudless.network.cni import Attachment, CniInvoker, bridge_conflist
from cloudless.network.nebula import NebulaCA, NebulaSupervisor
from cloudless.network.nebula_admin import AdminKeys, NebulaAdmin
from cloudless.network.nebula_config import NebulaSettings, groups_from_labels, render_config
from cloudless.network.testing import PREFIX, Namespaces, run

CLONE_NEWNET = 0x40000000


def bind_in_netns(ns: str, kind: int, addr: tuple[str, int]) -> socket.socket:
    """A socket of ``kind`` (SOCK_DGRAM/SOCK_STREAM) bound to ``addr`` inside namespace ``ns``
    (created on a helper thread that enters ``ns``; the caller's namespace is untouched)."""
    out: list[Any] = []

    def work() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {ns}")
            try:
                s = socket.socket(socket.AF_INET, kind)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(addr)
                if kind == socket.SOCK_STREAM:
                    s.listen(128)
                s.setblocking(False)
                out.append(s)
            finally:
                if libc.setns(own, CLONE_NEWNET) != 0:
                    out.append(OSError(ctypes.get_errno(), "setns back"))
        except OSError as e:
            out.append(e)
        finally:
            os.close(own)
            os.close(target)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    for x in out:
        if isinstance(x, Exception):
            raise x
    return out[0]  # type: ignore[no-any-return]


@dataclass
class Device:
    name: str
    ns: str
    ip: str  # on its switch
    addresses: DeviceAddresses
    cni: CniInvoker
    behind_nat: bool = False
    nebula: NebulaSupervisor | None = None
    admin: NebulaAdmin | None = None
    containers: dict[str, Attachment] = field(default_factory=dict)

    @property
    def argv(self) -> list[str]:
        return ["ip", "netns", "exec", self.ns]


class NetLab:
    def __init__(self, tag: str, workdir: Path, plan: AddressPlan, base: str = PREFIX) -> None:
        self.nss = Namespaces(tag, base)
        self.dir = workdir
        self.plan = plan
        self.devices: dict[str, Device] = {}
        self.switch_nets: dict[str, str] = {}
        self._veth = 0
        self._etc: list[Path] = []

    def ns(self, name: str) -> str:
        return f"{self.nss.prefix}-{name}"

    def sh(self, ns: str, cmd: str, check: bool = True) -> str:
        return self.nss.sh(ns, cmd, check=check)

    def switch(self, name: str, subnet: str) -> str:
        ns = self.nss.create(f"sw{name}")
        run(["ip", "-n", ns, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", ns, "link", "set", "br0", "up"])
        self.switch_nets[name] = subnet
        return ns

    def _plug(self, ns: str, ifname: str, switch: str, cidr: str) -> None:
        self._veth += 1
        sw = self.ns(f"sw{switch}")
        port = f"p{self._veth}"
        run(["ip", "link", "add", ifname, "netns", ns, "type", "veth", "peer", port, "netns", sw])
        run(["ip", "-n", sw, "link", "set", port, "master", "br0", "up"])
        run(["ip", "-n", ns, "addr", "add", cidr, "dev", ifname])
        run(["ip", "-n", ns, "link", "set", ifname, "up"])

    def router(
        self, name: str, wan: str, wan_cidr: str, lan: str, lan_cidr: str, *, symmetric: bool
    ) -> str:
        ns = self.nss.create(name)
        self._plug(ns, "wan", wan, wan_cidr)
        self._plug(ns, "lan", lan, lan_cidr)
        self.sh(ns, "sysctl -qw net.ipv4.ip_forward=1")
        extra = " --random-fully" if symmetric else ""
        self.sh(ns, f"iptables -t nat -A POSTROUTING -o wan -j MASQUERADE{extra}")
        return ns

    def device(
        self, name: str, slot: int, switch: str, cidr: str, gateway: str | None = None
    ) -> Device:
        ns = self.nss.create(name)
        self._plug(ns, "eth0", switch, cidr)
        if gateway:
            run(["ip", "-n", ns, "route", "add", "default", "via", gateway])
        self.sh(ns, "sysctl -qw net.ipv4.ip_forward=1")
        addrs = self.plan.addresses(slot)
        conf = bridge_conflist(addrs, data_dir=str(self.dir / name / "ipam"))
        cni = CniInvoker(conf, str(self.dir / name / "cni"), host_argv=("ip", "netns", "exec", ns))
        d = Device(name, ns, cidr.split("/")[0], addrs, cni, behind_nat=gateway is not None)
        self.devices[name] = d
        return d

    async def container(self, dev: Device, name: str, dns: str | None = None) -> Attachment:
        """A container namespace on ``dev`` with an interface from its CNI network. ``dns``
        becomes its resolv.conf nameserver (``ip netns exec`` bind-mounts /etc/netns/<ns>)."""
        ns = self.nss.create(f"{dev.name}-{name}")
        a = await dev.cni.add(name, Namespaces.path(ns))
        dev.containers[name] = a
        if dns:
            etc = Path("/etc/netns") / ns
            etc.mkdir(parents=True, exist_ok=True)
            self._etc.append(etc)
            (etc / "resolv.conf").write_text(
                f"nameserver {dns}\nsearch default.cloudless cloudless\noptions ndots:2\n"
            )
        return a

    def container_ns(self, dev: Device, name: str) -> str:
        return self.ns(f"{dev.name}-{name}")

    async def nebula_everywhere(
        self, lighthouse: str, *, relays: bool = True, admin: bool = False
    ) -> NebulaCA:
        ca = NebulaCA(self.dir / "nebula-ca")
        await ca.ensure("cloudless-lab")
        lh = self.devices[lighthouse]
        lh_ip = str(lh.addresses.overlay_ip)
        for d in self.devices.values():
            crt, key = await ca.issue(
                d.name,
                d.addresses,
                groups_from_labels({}, lighthouse=d.name == lighthouse),
                self.dir / d.name / "nebula",
            )
            settings = None
            if admin:
                keys = AdminKeys(self.dir / d.name / "admin")
                settings = keys.ensure(4242)
                d.admin = NebulaAdmin(keys, 4242, host_argv=d.argv)
            s = NebulaSettings(
                name=d.name,
                addresses=d.addresses,
                plan=self.plan,
                ca_path=str(ca.crt),
                cert_path=str(crt),
                key_path=str(key),
                lighthouses={lh_ip: [f"{lh.ip}:4242"]},
                am_lighthouse=d.name == lighthouse,
                behind_nat=d.behind_nat,
                relays=(lh_ip,) if relays else (),
                admin=settings,
            )
            d.nebula = NebulaSupervisor(self.dir / d.name / "nebula-run", host_argv=d.argv)
            await d.nebula.apply(render_config(s))
        return ca

    def close(self) -> None:
        for etc in self._etc:
            for f in etc.iterdir():
                f.unlink()
            etc.rmdir()
        self.nss.close()
