"""Container interfaces through the standard CNI plugins, per the CNI spec (1.0.0).

``bridge_conflist`` (pure) renders the device's network: ``bridge`` (gateway on the bridge,
container MTU = the overlay's, hairpin on, **no ipMasq**: cluster traffic keeps its source; the
nft table masquerades only what leaves the cluster) with ``host-local`` IPAM over the device's
container subnet, then ``portmap`` for ports published on the device. ``loopback`` brings up
``lo`` in the container.

``CniInvoker`` is the real edge: ADD runs the plugins in order, each with the previous result
as ``prevResult``; DEL runs them in reverse; CHECK in order with the cached result. Each plugin
gets ``CNI_COMMAND``, ``CNI_CONTAINERID``, ``CNI_NETNS``, ``CNI_IFNAME``, ``CNI_PATH`` in its
environment and its config as JSON on stdin. The ADD result is cached on disk so that DEL and
CHECK get ``prevResult`` and ``attached()`` can list containers to clean up after the agent was
down.

Contract of ``ContainerNetwork`` (passed by ``CniInvoker`` and ``FakeContainerNetwork``):

* ``add`` gives the container an address of the device's subnet; adding an attached container
  again returns its attachment unchanged. A failed ADD leaves nothing behind (no lease).
* ``delete`` is idempotent and works when the container's namespace is already gone (the lease
  is released all the same).
* ``check`` raises NetworkEdgeError for a container that is not attached.
* ``attached`` lists the container IDs holding an attachment; ``leases`` maps every leased
  address to its container ID (IPAM's own record, which outlives a crashed agent's cache).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cloudless.lib.waits import within
from cloudless.network.addressing import DeviceAddresses
from cloudless.network.errors import NetworkEdgeError

CNI_VERSION = "1.0.0"
CNI_PATH = "/usr/lib/cni"
IFNAME = "eth0"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class PortMapping:
    host_port: int
    container_port: int
    protocol: str = "tcp"


@dataclass(frozen=True)
class Attachment:
    container_id: str
    ip: str  # "10.42.1.5"
    gateway: str
    prefixlen: int
    mac: str = ""

    @property
    def cidr(self) -> str:
        return f"{self.ip}/{self.prefixlen}"


def bridge_conflist(
    addresses: DeviceAddresses,
    *,
    bridge: str = "cl0",
    mtu: int = 1300,
    data_dir: str = "/var/lib/cloudless/cni/networks",
    name: str = "cloudless",
) -> dict[str, Any]:
    """The device's network configuration list (see the module docstring)."""
    return {
        "cniVersion": CNI_VERSION,
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "mtu": mtu,
                "ipam": {
                    "type": "host-local",
                    "dataDir": data_dir,
                    "ranges": [
                        [
                            {
                                "subnet": str(addresses.container_subnet),
                                "gateway": str(addresses.gateway),
                            }
                        ]
                    ],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }


def _check_id(container_id: str) -> None:
    if not _ID.match(container_id):
        raise NetworkEdgeError(
            f"container id {container_id!r}: letters, digits and _.- only, at most 128 characters"
        )


class ContainerNetwork(Protocol):
    async def add(
        self, container_id: str, netns: str, ports: Sequence[PortMapping] = ()
    ) -> Attachment: ...

    async def check(self, container_id: str, netns: str) -> None: ...

    async def delete(self, container_id: str, netns: str) -> None: ...

    async def attached(self) -> list[str]: ...

    async def leases(self) -> dict[str, str]: ...


def _attachment(container_id: str, result: dict[str, Any]) -> Attachment:
    ips = result.get("ips") or []
    if not ips:
        raise NetworkEdgeError(f"CNI ADD for {container_id} returned no address: {result}")
    iface = ips[0].get("interface")
    mac = ""
    if isinstance(iface, int) and iface < len(result.get("interfaces", [])):
        mac = result["interfaces"][iface].get("mac", "")
    addr = ipaddress.IPv4Interface(ips[0]["address"])
    return Attachment(
        container_id, str(addr.ip), ips[0].get("gateway", ""), addr.network.prefixlen, mac
    )


@dataclass
class CniInvoker:
    """The real edge (see the module contract).

    ``host_argv`` prefixes every plugin run (``["ip", "netns", "exec", ns]`` puts the device in a
    namespace, for tests); ``state_dir`` keeps one cached ADD result per container.
    """

    conflist: dict[str, Any]
    state_dir: str
    cni_path: str = CNI_PATH
    host_argv: Sequence[str] = ()
    timeout: float = 30.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def _cache(self, container_id: str) -> Path:
        return Path(self.state_dir) / f"{self.conflist['name']}-{container_id}.json"

    async def _plugin(
        self,
        command: str,
        plugin: dict[str, Any],
        container_id: str,
        netns: str,
        prev: dict[str, Any] | None,
        runtime: dict[str, Any],
    ) -> dict[str, Any]:
        conf = dict(plugin)
        conf["cniVersion"] = self.conflist["cniVersion"]
        conf["name"] = self.conflist["name"]
        caps = plugin.get("capabilities", {})
        rc = {k: v for k, v in runtime.items() if caps.get(k)}
        if rc:
            conf["runtimeConfig"] = rc
        if prev is not None:
            conf["prevResult"] = prev
        kind = str(plugin["type"])
        binary = os.path.join(self.cni_path, kind)
        if not _exists(binary):
            raise NetworkEdgeError(
                f"CNI plugin {kind} not found in {self.cni_path}; "
                "install containernetworking-plugins"
            )
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns,
            "CNI_IFNAME": IFNAME if kind != "loopback" else "lo",
            "CNI_PATH": self.cni_path,
        }
        proc = await asyncio.create_subprocess_exec(
            *self.host_argv,
            binary,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        try:
            out, err = await within(self.timeout, proc.communicate(json.dumps(conf).encode()))
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise NetworkEdgeError(f"CNI {kind} {command} took over {self.timeout}s") from None
        if proc.returncode != 0:
            msg = (out or err).decode(errors="replace").strip()
            with contextlib.suppress(ValueError):
                e = json.loads(msg)
                msg = f"{e.get('msg', '')} {e.get('details', '')}".strip()
            raise NetworkEdgeError(f"CNI {kind} {command} for {container_id} failed: {msg}")
        if not out.strip():
            return prev or {}
        result: dict[str, Any] = json.loads(out)
        return result

    async def _loopback(self, command: str, container_id: str, netns: str) -> None:
        lo = {"type": "loopback"}
        await self._plugin(command, lo, container_id, netns, None, {})

    async def add(
        self, container_id: str, netns: str, ports: Sequence[PortMapping] = ()
    ) -> Attachment:
        _check_id(container_id)
        async with self._lock:
            cached = self._read(container_id)
            if cached is not None:
                return _attachment(container_id, cached["result"])
            runtime = {
                "portMappings": [
                    {
                        "hostPort": p.host_port,
                        "containerPort": p.container_port,
                        "protocol": p.protocol,
                    }
                    for p in ports
                ]
            }
            result: dict[str, Any] | None = None
            try:
                await self._loopback("ADD", container_id, netns)
                for plugin in self.conflist["plugins"]:
                    result = await self._plugin("ADD", plugin, container_id, netns, result, runtime)
            except BaseException:
                await self._del_all(container_id, netns, result, runtime)
                raise
            assert result is not None
            self._write(container_id, {"netns": netns, "runtime": runtime, "result": result})
            return _attachment(container_id, result)

    async def check(self, container_id: str, netns: str) -> None:
        _check_id(container_id)
        cached = self._read(container_id)
        if cached is None:
            raise NetworkEdgeError(f"container {container_id} has no network attachment")
        for plugin in self.conflist["plugins"]:
            await self._plugin(
                "CHECK", plugin, container_id, netns, cached["result"], cached["runtime"]
            )

    async def delete(self, container_id: str, netns: str) -> None:
        _check_id(container_id)
        async with self._lock:
            cached = self._read(container_id)
            prev = cached["result"] if cached else None
            runtime = cached["runtime"] if cached else {}
            if not _exists(netns):
                netns = ""  # spec: DEL must work when the namespace is gone
            await self._del_all(container_id, netns, prev, runtime)
            with contextlib.suppress(FileNotFoundError):
                self._cache(container_id).unlink()

    async def _del_all(
        self,
        container_id: str,
        netns: str,
        prev: dict[str, Any] | None,
        runtime: dict[str, Any],
    ) -> None:
        errors = []
        for plugin in reversed(self.conflist["plugins"]):
            try:
                await self._plugin("DEL", plugin, container_id, netns, prev, runtime)
            except NetworkEdgeError as e:
                errors.append(str(e))
        if errors:
            raise NetworkEdgeError("; ".join(errors))

    async def attached(self) -> list[str]:
        return _cached_ids(Path(self.state_dir), f"{self.conflist['name']}-")

    async def leases(self) -> dict[str, str]:
        ipam = self.conflist["plugins"][0]["ipam"]
        return _host_local_leases(Path(ipam["dataDir"]) / self.conflist["name"])

    def _read(self, container_id: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self._cache(container_id).read_text())
        except (FileNotFoundError, ValueError):
            return None
        return data

    def _write(self, container_id: str, data: dict[str, Any]) -> None:
        path = self._cache(container_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)


def _exists(path: str) -> bool:
    return os.path.exists(path)


def _cached_ids(d: Path, prefix: str) -> list[str]:
    if not d.is_dir():
        return []
    return sorted(
        p.name[len(prefix) : -len(".json")]
        for p in d.iterdir()
        if p.name.startswith(prefix) and p.name.endswith(".json")
    )


def _host_local_leases(d: Path) -> dict[str, str]:
    """host-local keeps one file per leased address, named by it, holding the container ID."""
    if not d.is_dir():
        return {}
    out = {}
    for p in d.iterdir():
        with contextlib.suppress(ValueError):
            ipaddress.IPv4Address(p.name)
            out[p.name] = p.read_text().split()[0] if p.read_text().strip() else ""
    return out


class FakeContainerNetwork:
    """An in-memory ContainerNetwork over one subnet; ``fail_next_add`` injects a plugin error.
    ``netns_exists`` stands in for the namespace path check (ADD needs it, DEL does not)."""

    def __init__(self, addresses: DeviceAddresses) -> None:
        self.addresses = addresses
        self.leased: dict[str, Attachment] = {}
        self.fail_next_add: str | None = None
        self.gone_netns: set[str] = set()

    async def add(
        self, container_id: str, netns: str, ports: Sequence[PortMapping] = ()
    ) -> Attachment:
        _check_id(container_id)
        if container_id in self.leased:
            return self.leased[container_id]
        if self.fail_next_add is not None:
            msg, self.fail_next_add = self.fail_next_add, None
            raise NetworkEdgeError(f"CNI bridge ADD for {container_id} failed: {msg}")
        if netns in self.gone_netns or not netns:
            raise NetworkEdgeError(f"CNI bridge ADD for {container_id} failed: no netns {netns}")
        taken = {a.ip for a in self.leased.values()}
        for ip in self.addresses.container_subnet.hosts():
            if ip != self.addresses.gateway and str(ip) not in taken:
                a = Attachment(
                    container_id,
                    str(ip),
                    str(self.addresses.gateway),
                    self.addresses.container_subnet.prefixlen,
                )
                self.leased[container_id] = a
                return a
        raise NetworkEdgeError(
            f"CNI host-local ADD for {container_id} failed: no IP addresses available in "
            f"range set {self.addresses.container_subnet}"
        )

    async def check(self, container_id: str, netns: str) -> None:
        if container_id not in self.leased:
            raise NetworkEdgeError(f"container {container_id} has no network attachment")

    async def delete(self, container_id: str, netns: str) -> None:
        _check_id(container_id)
        self.leased.pop(container_id, None)

    async def attached(self) -> list[str]:
        return sorted(self.leased)

    async def leases(self) -> dict[str, str]:
        return {a.ip: cid for cid, a in self.leased.items()}


def stale_containers(attached: Sequence[str], leases: dict[str, str], live: set[str]) -> list[str]:
    """Containers holding an attachment or an IPAM lease that are not running any more (they
    died while the agent was down): each needs a CNI DEL."""
    return sorted((set(attached) | set(leases.values())) - live - {""})


async def collect_garbage(net: ContainerNetwork, live: set[str]) -> list[str]:
    """DEL every stale container's attachment (see ``stale_containers``); returns their IDs.
    Their namespaces are gone, so the DEL runs without one (the spec allows it)."""
    stale = stale_containers(await net.attached(), await net.leases(), live)
    for cid in stale:
        await net.delete(cid, "")
    return stale
