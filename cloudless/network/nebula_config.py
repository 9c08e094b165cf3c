"""Nebula configuration and certificate commands for one device (no I/O).

What the rendered config guarantees, with the Nebula 1.6 pitfall each point answers:

* ``tun.unsafe_routes`` holds a route for *every other slot's* container subnet via that slot's
  overlay IP (``AddressPlan.all_routes``), so it never changes while devices join and leave
  (1.6 ignores route changes on reload). ``restart_needed`` says when a restart is still due.
* ``pki.disconnect_invalid`` is on and ``pki.blocklist`` lists removed devices' certificate
  fingerprints: a blocklisted peer loses its live tunnels, not only new handshakes.
* ``relay.relays`` (the relays peers may use to reach *this* device) is set only for a device
  that needs one (behind NAT); a public device lists none, since a 1.6 tunnel that started
  relayed can stay relayed forever. Lighthouses are relays (``am_relay``); every device may use
  relays (``use_relays``) to reach a NATed one.
* ``lighthouse.local_allow_list`` restricts the addresses advertised to lighthouses to the
  ranges given (the LAN, the NAT's inside); without those, it withholds the ranges given in
  ``withhold`` (the agent passes the cluster's: container bridges, the overlay, services),
  so peers are never sent to a device's bridge address.
* ``listen.read_buffer``/``write_buffer`` are raised (10 MiB) against drops under load.
* The tun MTU is the overlay's (1300); container interfaces use the same MTU.
* ``sshd`` (``AdminSettings``), when given, listens on loopback only with one authorized key:
  the agent and the coordinator read the hostmap and the lighthouse's address map through it
  (``nebula_admin``). Port 22 is refused (Nebula refuses it too).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from cloudless.network.addressing import AddressPlan, DeviceAddresses
from cloudless.network.errors import NetworkConfigError

MTU = 1300
BUFFER_BYTES = 10 * 1024 * 1024
DEFAULT_PORT = 4242


@dataclass(frozen=True, order=True)
class NebulaVersion:
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> NebulaVersion:
        """From ``nebula -version`` output ("Version: 1.6.1")."""
        m = re.search(r"(\d+)\.(\d+)\.(\d+)", text)
        if m is None:
            raise NetworkConfigError(f"nebula -version printed {text.strip()!r}: no version in it")
        return cls(int(m[1]), int(m[2]), int(m[3]))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def supported(self) -> bool:
        """Relays and ``disconnect_invalid`` exist from 1.6.0."""
        return (self.major, self.minor) >= (1, 6)


@dataclass(frozen=True)
class AdminSettings:
    """Nebula's ssh admin interface: where it listens, its host key file, the one user."""

    listen: str  # "127.0.0.1:PORT"
    host_key: str
    user: str
    public_key: str  # "ssh-ed25519 AAAA..."

    def validate(self) -> None:
        host, _, port = self.listen.rpartition(":")
        if host not in ("127.0.0.1", "::1", "[::1]") or not port.isdigit():
            raise NetworkConfigError(
                f"sshd.listen {self.listen!r}: must be a loopback address with a port"
            )
        if not 0 < int(port) < 65536 or int(port) == 22:
            raise NetworkConfigError(f"sshd.listen {self.listen!r}: port 1-65535, not 22")
        if not self.public_key.startswith("ssh-ed25519 "):
            raise NetworkConfigError("sshd.public_key: an ssh-ed25519 public key is expected")


@dataclass(frozen=True)
class NebulaSettings:
    name: str
    addresses: DeviceAddresses
    plan: AddressPlan
    ca_path: str
    cert_path: str
    key_path: str
    lighthouses: Mapping[str, Sequence[str]]  # overlay IP -> reachable "ip:port" addresses
    am_lighthouse: bool = False
    behind_nat: bool = False
    relays: tuple[str, ...] = ()  # overlay IPs of relays (the coordinators)
    blocklist: tuple[str, ...] = ()
    advertise: tuple[str, ...] = ()  # ranges whose addresses may be advertised (empty: all)
    withhold: tuple[str, ...] = ()  # without ``advertise``: ranges never advertised
    listen_host: str = "0.0.0.0"
    listen_port: int = DEFAULT_PORT
    tun_dev: str = "nebula1"
    mtu: int = MTU
    buffer_bytes: int = BUFFER_BYTES
    log_level: str = "info"
    admin: AdminSettings | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def render_config(s: NebulaSettings) -> dict[str, Any]:
    """The config as a mapping (see the module guarantees)."""
    own = str(s.addresses.overlay_ip)
    lighthouse_ips = sorted(ip for ip in s.lighthouses if ip != own)
    cfg: dict[str, Any] = {
        "pki": {
            "ca": s.ca_path,
            "cert": s.cert_path,
            "key": s.key_path,
            "blocklist": sorted(s.blocklist),
            "disconnect_invalid": True,
        },
        "static_host_map": {ip: list(s.lighthouses[ip]) for ip in lighthouse_ips},
        "lighthouse": {
            "am_lighthouse": s.am_lighthouse,
            "interval": 10,
            "hosts": [] if s.am_lighthouse else lighthouse_ips,
        },
        "listen": {
            "host": s.listen_host,
            "port": s.listen_port,
            "read_buffer": s.buffer_bytes,
            "write_buffer": s.buffer_bytes,
        },
        "punchy": {"punch": True, "respond": True, "delay": "1s"},
        "relay": {
            "am_relay": s.am_lighthouse,
            "use_relays": True,
            "relays": [r for r in s.relays if r != own] if s.behind_nat else [],
        },
        "tun": {
            "disabled": False,
            "dev": s.tun_dev,
            "drop_local_broadcast": True,
            "drop_multicast": True,
            "tx_queue": 500,
            "mtu": s.mtu,
            "unsafe_routes": [
                {"route": str(net), "via": str(via), "mtu": s.mtu}
                for net, via in s.plan.all_routes(own_slot=s.addresses.slot)
            ],
        },
        "logging": {"level": s.log_level, "format": "text"},
        "handshakes": {"try_interval": "100ms", "retries": 20},
        "firewall": {
            "conntrack": {"tcp_timeout": "12m", "udp_timeout": "3m", "default_timeout": "10m"},
            "outbound": [{"port": "any", "proto": "any", "host": "any"}],
            "inbound": [{"port": "any", "proto": "any", "host": "any"}],
        },
    }
    if s.advertise:
        cfg["lighthouse"]["local_allow_list"] = {"0.0.0.0/0": False} | {
            r: True for r in s.advertise
        }
    elif s.withhold:  # all rules false: Nebula allows the rest
        cfg["lighthouse"]["local_allow_list"] = {r: False for r in s.withhold}
    if s.admin is not None:
        s.admin.validate()
        cfg["sshd"] = {
            "enabled": True,
            "listen": s.admin.listen,
            "host_key": s.admin.host_key,
            "authorized_users": [{"user": s.admin.user, "keys": [s.admin.public_key]}],
        }
    if s.am_lighthouse:
        # A lighthouse's own address must be the one in everyone's static_host_map.
        cfg["lighthouse"].pop("local_allow_list", None)
    cfg.update(s.extra)
    return cfg


def to_yaml(cfg: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(cfg), sort_keys=True)


def restart_needed(old: Mapping[str, Any], new: Mapping[str, Any], cert_changed: bool) -> str:
    """``"none"``, ``"reload"`` (SIGHUP) or ``"restart"`` to go from ``old`` to ``new``.

    Restart when the certificate changed (1.6 keeps the old one on live tunnels), when routes,
    the tun device or the listen socket changed (ignored on reload); reload for the rest
    (blocklist, firewall, lighthouse hosts)."""
    if cert_changed:
        return "restart"
    if old == new:
        return "none"
    if old.get("tun") != new.get("tun") or old.get("listen") != new.get("listen"):
        return "restart"
    if old.get("relay") != new.get("relay"):
        return "restart"
    return "reload"


RENEW_AT = 2 / 3  # of a certificate's life, as for node certificates (security.renewer)
CERT_HOURS = 8760  # a device certificate's life: a node certificate's (one year)


def renewal_due(issued_at: float, hours: int, now: float) -> bool:
    """Whether a device certificate issued at ``issued_at`` for ``hours`` is due for
    re-issue: 2/3 of its life gone (worked: 8760 h -> after 5840 h, day 243.3)."""
    return now >= issued_at + hours * 3600 * RENEW_AT


_GROUP = re.compile(r"^[A-Za-z0-9_.=:/-]{1,128}$")


def groups_from_labels(labels: Mapping[str, str], *, lighthouse: bool = False) -> list[str]:
    """Nebula groups for a device: ``cloudless``, ``lighthouse`` if it is one, ``key=value`` per
    label; a label that cannot be a group name (commas, spaces) is refused by name."""
    groups = ["cloudless"] + (["lighthouse"] if lighthouse else [])
    for k, v in sorted(labels.items()):
        g = f"{k}={v}"
        if not _GROUP.match(g):
            raise NetworkConfigError(
                f"label {k}={v!r} cannot be a Nebula group (letters, digits, _.=:/- only)"
            )
        groups.append(g)
    return groups


def ca_argv(name: str, out_crt: str, out_key: str, duration_hours: int = 87600) -> list[str]:
    """``nebula-cert ca`` for the cluster's Nebula CA (ed25519, default 10 years)."""
    return [
        *("nebula-cert", "ca", "-name", name, "-duration", f"{duration_hours}h"),
        *("-out-crt", out_crt, "-out-key", out_key),
    ]


def sign_argv(
    *,
    ca_crt: str,
    ca_key: str,
    name: str,
    addresses: DeviceAddresses,
    groups: Sequence[str],
    out_crt: str,
    out_key: str = "",
    in_pub: str = "",
    duration_hours: int = 8760,
) -> list[str]:
    """``nebula-cert sign`` for a device: its overlay IP, its container subnet in ``subnets``
    (so peers accept packets from its containers), its groups; for the public key in
    ``in_pub`` (the node made its key) or else for a new key written to ``out_key``."""
    if bool(out_key) == bool(in_pub):
        raise NetworkConfigError("nebula-cert sign: exactly one of out_key and in_pub")
    if not re.match(r"^[A-Za-z0-9_.-]{1,253}$", name):
        raise NetworkConfigError(f"nebula certificate name {name!r}: letters, digits, _.- only")
    return [
        *("nebula-cert", "sign", "-ca-crt", ca_crt, "-ca-key", ca_key, "-name", name),
        *("-ip", addresses.overlay_cidr, "-subnets", str(addresses.container_subnet)),
        *("-groups", ",".join(groups), "-duration", f"{duration_hours}h"),
        *("-out-crt", out_crt),
        *(("-in-pub", in_pub) if in_pub else ("-out-key", out_key)),
    ]
