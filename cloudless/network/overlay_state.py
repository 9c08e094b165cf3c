"""The overlay as Nebula sees it, and what that says about each device (pure).

Inputs are Nebula's own admin data (its ``sshd`` commands, read by ``nebula_admin``):

* ``parse_hostmap`` reads ``list-hostmap -json``: one ``Tunnel`` per peer, *direct* when it has
  a current remote address (the ``ip:port`` the peer's packets come from), *relayed* when it
  has none and runs through relays. Nebula 1.6 writes addresses as ``{"ip", "port"}`` objects
  (``null`` when relayed) and the peer as ``vpnIp``; 1.9 writes ``"ip:port"`` strings (``""``);
  1.10 lists ``vpnAddrs``. All three are read.
* ``parse_addrmap`` reads a lighthouse's ``list-lighthouse-addrmap -json``: per device, the
  addresses it *reported* (its own interface addresses, after ``local_allow_list``).

``classify`` decides, for one device, from every lighthouse's view (``LighthouseView``: who it
has direct tunnels with, from which address, and what each device reported) and every agent's
report (``OverlayReport``: its tunnels, and how long it has had none to a lighthouse):

* **NAT type** (``none``/``cone``/``symmetric``/``nat``/``unknown``). An *observation* is the
  address a lighthouse or a peer with a direct tunnel sees the device's packets come from.
  Observations that are one of the device's reported addresses crossed no NAT (a LAN peer, a
  public device). Rules, in order: no observation -> ``unknown``; none crossed a NAT ->
  ``none``; two observers see different mapped addresses -> ``symmetric`` (the NAT maps every
  destination to its own port: the classic two-observer test; hole punching fails between two
  such devices, a relay carries them); two or more see one mapping -> ``cone``; a single
  observer -> ``nat`` (behind NAT, mapping type not known until a second observer sees it).
* **Paths**: each of the device's tunnels, direct (with the address) or relayed (with the
  relays), from its own report.
* **Reachability** (``True``/``False``/``None`` = not known): reachable when a lighthouse (every
  lighthouse is a relay) has a direct tunnel with it, or its report shows one; *unreachable*
  only on positive evidence: its agent reports no tunnel to any lighthouse for at least
  ``grace_s`` (a NAT or firewall drops its UDP, so no relay reaches it either). Missing data
  is never read as unreachable.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.network.errors import NetworkConfigError, NetworkEdgeError

NAT_NONE = "none"
NAT_CONE = "cone"
NAT_SYMMETRIC = "symmetric"
NAT_UNKNOWN_TYPE = "nat"
NAT_UNKNOWN = "unknown"
GRACE_S = 30.0


@dataclass(frozen=True)
class Tunnel:
    """One peer in a device's hostmap: ``remote`` is where its packets come from ("" when
    relayed); ``relays`` are the relays the tunnel runs through."""

    peer: str
    remote: str = ""
    relays: tuple[str, ...] = ()

    @property
    def direct(self) -> bool:
        return bool(self.remote)


@dataclass(frozen=True)
class OverlayReport:
    """What an agent reports of its overlay. ``lighthouses_missing_s``: for how long it has
    had no direct tunnel to any lighthouse (0: it has one); ``error``: why it could not read
    Nebula's state (then ``tunnels`` is empty)."""

    tunnels: tuple[Tunnel, ...] = ()
    lighthouses_missing_s: float = 0.0
    error: str = ""


@dataclass(frozen=True)
class Sighting:
    device: str  # overlay IP
    address: str  # "ip:port" its packets come from


@dataclass(frozen=True)
class Advertised:
    device: str
    addresses: tuple[str, ...]  # "ip:port" it reported to the lighthouse


@dataclass(frozen=True)
class LighthouseView:
    """One lighthouse's view: its direct tunnels and what each device reported to it."""

    lighthouse: str  # its overlay IP
    seen: tuple[Sighting, ...] = ()
    reported: tuple[Advertised, ...] = ()
    observed_at: float = 0.0
    error: str = ""
    coordinator: str = ""  # the coordinator running it
    address: str = ""  # "ip:port" devices reach it at

    def seen_map(self) -> dict[str, str]:
        return {s.device: s.address for s in self.seen}

    def reported_map(self) -> dict[str, tuple[str, ...]]:
        return {a.device: a.addresses for a in self.reported}


@dataclass(frozen=True)
class OverlayPath:
    peer: str
    direct: bool
    via: str  # the peer's address when direct, the relays when relayed


@dataclass(frozen=True)
class DeviceOverlay:
    overlay_ip: str
    nat: str
    nat_reason: str
    paths: tuple[OverlayPath, ...]
    reachable: bool | None
    reach_reason: str

    def summary(self, names: Mapping[str, str]) -> str:
        """``3 direct, 1 relayed (d4 via 100.127.255.254)``."""
        direct = [p for p in self.paths if p.direct]
        relayed = [p for p in self.paths if not p.direct]
        text = f"{len(direct)} direct, {len(relayed)} relayed"
        if relayed:
            text += " (" + ", ".join(f"{names.get(p.peer, p.peer)} via {p.via}" for p in relayed)
            text += ")"
        return text


# ---- parsing Nebula's admin output -----------------------------------------------------------


def _addr(v: Any, where: str) -> str:
    """``"ip:port"`` from 1.6's ``{"ip", "port"}``, 1.9's ``"ip:port"``, or "" for none."""
    if v is None or v == "":
        return ""
    if isinstance(v, dict):
        ip, port = v.get("ip"), v.get("port")
        if not isinstance(ip, str) or not isinstance(port, int):
            raise NetworkEdgeError(f"{where}: {v!r} is not an address")
        text = f"{ip}:{port}"
    elif isinstance(v, str):
        text = v
    else:
        raise NetworkEdgeError(f"{where}: {v!r} is not an address")
    host, sep, port_s = text.rpartition(":")
    try:
        ipaddress.ip_address(host.strip("[]"))
        ok = sep == ":" and 0 <= int(port_s) <= 65535
    except ValueError:
        ok = False
    if not ok:
        raise NetworkEdgeError(f"{where}: {text!r} is not ip:port")
    return text


def _ip(v: Any, where: str) -> str:
    if not isinstance(v, str):
        raise NetworkEdgeError(f"{where}: {v!r} is not an IP address")
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        raise NetworkEdgeError(f"{where}: {v!r} is not an IP address") from None


def _load(text: str, command: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise NetworkEdgeError(f"nebula `{command}` did not print JSON: {e}") from None


def parse_hostmap(text: str) -> tuple[Tunnel, ...]:
    """Tunnels from ``list-hostmap -json`` (see the module docstring for the formats)."""
    data = _load(text, "list-hostmap -json")
    if data is None:
        return ()
    if not isinstance(data, list):
        raise NetworkEdgeError("nebula `list-hostmap -json`: expected a list of hosts")
    out = []
    for i, h in enumerate(data):
        where = f"list-hostmap[{i}]"
        if not isinstance(h, dict):
            raise NetworkEdgeError(f"{where}: not an object")
        if "vpnAddrs" in h:
            addrs = h["vpnAddrs"]
            if not isinstance(addrs, list) or not addrs:
                raise NetworkEdgeError(f"{where}.vpnAddrs: expected a non-empty list")
            peer = _ip(addrs[0], f"{where}.vpnAddrs[0]")
        else:
            peer = _ip(h.get("vpnIp"), f"{where}.vpnIp")
        remote = _addr(h.get("currentRemote"), f"{where}.currentRemote")
        relays = tuple(
            _ip(r, f"{where}.currentRelaysToMe[{j}]")
            for j, r in enumerate(h.get("currentRelaysToMe") or [])
        )
        out.append(Tunnel(peer, remote, relays))
    return tuple(sorted(out, key=lambda t: ipaddress.ip_address(t.peer)))


def parse_addrmap(text: str) -> dict[str, tuple[str, ...]]:
    """Per device (overlay IP), the addresses it reported, from ``list-lighthouse-addrmap
    -json`` (``[{"vpnIp", "addrs": {owner: {"learned", "reported", "relay"}}}]``)."""
    data = _load(text, "list-lighthouse-addrmap -json")
    if data is None:
        return {}
    if not isinstance(data, list):
        raise NetworkEdgeError("nebula `list-lighthouse-addrmap -json`: expected a list")
    out: dict[str, tuple[str, ...]] = {}
    for i, entry in enumerate(data):
        where = f"list-lighthouse-addrmap[{i}]"
        if not isinstance(entry, dict):
            raise NetworkEdgeError(f"{where}: not an object")
        ip = _ip(entry.get("vpnIp"), f"{where}.vpnIp")
        owners = entry.get("addrs") or {}
        if not isinstance(owners, dict):
            raise NetworkEdgeError(f"{where}.addrs: not an object")
        reported: list[str] = []
        for owner, cache in sorted(owners.items()):
            if not isinstance(cache, dict):
                raise NetworkEdgeError(f"{where}.addrs[{owner}]: not an object")
            for j, a in enumerate(cache.get("reported") or []):
                reported.append(_addr(a, f"{where}.addrs[{owner}].reported[{j}]"))
        out[ip] = tuple(sorted(set(reported)))
    return out


# ---- deciding ----------------------------------------------------------------------------------


def _host(addr: str) -> str:
    return addr.rpartition(":")[0].strip("[]")


def _observations(
    device: str, views: Sequence[LighthouseView], reports: Mapping[str, OverlayReport]
) -> list[tuple[str, str]]:
    """``(observer, address)``: where each lighthouse and each direct peer sees ``device``."""
    obs = []
    for v in views:
        addr = v.seen_map().get(device)
        if addr:
            obs.append((f"lighthouse {v.lighthouse}", addr))
    for peer, rep in sorted(reports.items()):
        if peer == device:
            continue
        for t in rep.tunnels:
            if t.peer == device and t.direct:
                obs.append((f"peer {peer}", t.remote))
    return obs


def nat_type(
    device: str, views: Sequence[LighthouseView], reports: Mapping[str, OverlayReport]
) -> tuple[str, str]:
    """``(type, reason)`` by the rules in the module docstring."""
    reported: set[str] = set()
    for v in views:
        reported.update(_host(a) for a in v.reported_map().get(device, ()))
    obs = _observations(device, views, reports)
    if not obs:
        return NAT_UNKNOWN, "no lighthouse or peer has a direct tunnel to it yet"
    if not reported:
        return NAT_UNKNOWN, (
            f"{obs[0][0]} sees it at {obs[0][1]}, but no lighthouse knows the addresses it "
            "reported, so whether a NAT is in between is not known"
        )
    external = [(who, a) for who, a in obs if _host(a) not in reported]
    if not external:
        who, a = obs[0]
        return NAT_NONE, f"{who} sees its own address {a}: no NAT in between"
    mapped = sorted({a for _, a in external})
    own = ", ".join(sorted(reported))
    if len(mapped) > 1:
        shown = "; ".join(f"{who} sees {a}" for who, a in external[:3])
        return NAT_SYMMETRIC, (
            f"behind a NAT that maps each destination to its own port ({shown}; its own "
            f"addresses: {own}): hole punching fails towards other NATed devices, a relay "
            "carries those paths"
        )
    observers = sorted({who for who, _ in external})
    if len(observers) > 1:
        return NAT_CONE, (
            f"behind NAT at {mapped[0]}, the same mapping for {len(observers)} observers "
            f"({', '.join(observers)}; its own addresses: {own}): hole punching works"
        )
    return NAT_UNKNOWN_TYPE, (
        f"behind NAT at {mapped[0]} as {observers[0]} sees it (its own addresses: {own}); "
        "whether the mapping is the same towards every peer is known once a second "
        "lighthouse or a direct peer sees it"
    )


def reachability(
    device: str,
    report: OverlayReport | None,
    views: Sequence[LighthouseView],
    lighthouses: Iterable[str],
    *,
    grace_s: float = GRACE_S,
) -> tuple[bool | None, str]:
    """``(reachable, reason)`` by the rules in the module docstring."""
    lh = set(lighthouses)
    for v in views:
        addr = v.seen_map().get(device)
        if addr:
            return True, f"lighthouse {v.lighthouse} has a direct tunnel to it (from {addr})"
    if report is None:
        return None, "its agent has not reported its overlay"
    if report.error:
        return None, f"its agent cannot read the overlay: {report.error}"
    for t in report.tunnels:
        if t.peer in lh and t.direct:
            return True, f"it has a direct tunnel to lighthouse {t.peer} (at {t.remote})"
    if report.lighthouses_missing_s >= grace_s:
        return False, (
            f"no tunnel to any lighthouse for {report.lighthouses_missing_s:.0f}s: a NAT or "
            "firewall drops its UDP to the lighthouses, so no relay reaches it either "
            "(open UDP to the lighthouse port, or check its nebula log)"
        )
    return None, f"no tunnel to a lighthouse yet ({report.lighthouses_missing_s:.0f}s)"


def paths(report: OverlayReport | None) -> tuple[OverlayPath, ...]:
    if report is None:
        return ()
    return tuple(
        OverlayPath(t.peer, True, t.remote)
        if t.direct
        else OverlayPath(t.peer, False, ",".join(t.relays) or "a relay")
        for t in report.tunnels
    )


PUBLIC_BEHIND_NAT = (
    "; its agent runs with --public, so it offers no relays, yet it is behind NAT: devices "
    "that cannot punch through to it have no path (restart its agent without --public)"
)


def classify(
    device: str,
    views: Sequence[LighthouseView],
    reports: Mapping[str, OverlayReport],
    lighthouses: Iterable[str],
    *,
    grace_s: float = GRACE_S,
    public: bool = False,
) -> DeviceOverlay:
    """One device's NAT type, paths and reachability (``reports`` by overlay IP); a device
    declared ``public`` that is seen behind NAT gets the mismatch named in its NAT reason."""
    nat, why = nat_type(device, views, reports)
    if public and nat in (NAT_CONE, NAT_SYMMETRIC, NAT_UNKNOWN_TYPE):
        why += PUBLIC_BEHIND_NAT
    report = reports.get(device)
    reach, reach_why = reachability(device, report, views, lighthouses, grace_s=grace_s)
    return DeviceOverlay(device, nat, why, paths(report), reach, reach_why)


def lighthouse_missing_s(
    tunnels: Sequence[Tunnel], lighthouses: Iterable[str], missing_since: float | None, now: float
) -> tuple[float | None, float]:
    """The agent's bookkeeping: ``(missing_since, missing_for_s)`` after one look at its
    hostmap (``missing_since`` None: it has a direct tunnel to a lighthouse)."""
    lh = set(lighthouses)
    if any(t.peer in lh and t.direct for t in tunnels):
        return None, 0.0
    since = now if missing_since is None else missing_since
    return since, now - since


# ---- the heartbeat field --------------------------------------------------------------------


def report_to_pb(r: OverlayReport) -> pb.OverlayReport:
    return pb.OverlayReport(
        tunnels=[
            pb.OverlayTunnel(peer=t.peer, remote=t.remote, relays=t.relays) for t in r.tunnels
        ],
        lighthouses_missing_s=r.lighthouses_missing_s,
        error=r.error,
    )


def report_from_pb(m: pb.OverlayReport) -> OverlayReport:
    """The report, or ``NetworkConfigError`` naming the field that does not parse."""
    tunnels = []
    for i, t in enumerate(m.tunnels):
        where = f"overlay.tunnels[{i}]"
        try:
            peer = _ip(t.peer, f"{where}.peer")
            remote = _addr(t.remote, f"{where}.remote")
            relays = tuple(_ip(x, f"{where}.relays[{j}]") for j, x in enumerate(t.relays))
        except NetworkEdgeError as e:
            raise NetworkConfigError(str(e)) from None
        tunnels.append(Tunnel(peer, remote, relays))
    if not m.lighthouses_missing_s >= 0:  # also refuses NaN
        raise NetworkConfigError(
            f"overlay.lighthouses_missing_s: {m.lighthouses_missing_s} is not a duration"
        )
    return OverlayReport(tuple(tunnels), m.lighthouses_missing_s, m.error)
