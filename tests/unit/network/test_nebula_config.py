"""Nebula config rendering, restart decisions, versions and certificate commands."""

from __future__ import annotations

from typing import Any

import pytest

from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.errors import NetworkConfigError
from cloudless.network.nebula_config import (
    AdminSettings,
    NebulaSettings,
    NebulaVersion,
    ca_argv,
    groups_from_labels,
    render_config,
    restart_needed,
    sign_argv,
)

PLAN = AddressPlanConfig(overlay_cidr="100.64.0.0/29").plan()  # 6 slots
LH = {"100.64.0.1": ["192.168.1.10:4242"]}  # slot 0 is the lighthouse


def settings(slot: int = 2, **kw: Any) -> NebulaSettings:
    return NebulaSettings(
        name=f"dev{slot}",
        addresses=PLAN.addresses(slot),
        plan=PLAN,
        ca_path="/x/ca.crt",
        cert_path="/x/host.crt",
        key_path="/x/host.key",
        lighthouses=LH,
        relays=("100.64.0.1",),
        **kw,
    )


def test_routes_for_every_other_slot_from_the_start() -> None:
    routes = render_config(settings(slot=2))["tun"]["unsafe_routes"]
    # 5 slots (the lighthouse holds .6) - own = 4; slot k: 10.42.k.0/24 via 100.64.0.(k+1)
    assert len(routes) == 4
    assert {"route": "10.42.0.0/24", "via": "100.64.0.1", "mtu": 1300} in routes
    assert all(r["route"] != "10.42.2.0/24" for r in routes)


PITFALLS = [
    # (settings kwargs, path into the config, expected value)
    ({}, ("pki", "disconnect_invalid"), True),
    ({"blocklist": ("ff", "aa")}, ("pki", "blocklist"), ["aa", "ff"]),
    ({}, ("tun", "mtu"), 1300),
    ({}, ("listen", "read_buffer"), 10 * 1024 * 1024),
    ({}, ("listen", "write_buffer"), 10 * 1024 * 1024),
    # a public device lists no relays (1.6 may stay relayed forever); a NATed one does
    ({}, ("relay", "relays"), []),
    ({"behind_nat": True}, ("relay", "relays"), ["100.64.0.1"]),
    ({}, ("relay", "use_relays"), True),
    ({}, ("relay", "am_relay"), False),
    ({}, ("lighthouse", "hosts"), ["100.64.0.1"]),
    ({}, ("static_host_map",), {"100.64.0.1": ["192.168.1.10:4242"]}),
    (
        {"advertise": ("192.168.1.0/24",)},
        ("lighthouse", "local_allow_list"),
        {"0.0.0.0/0": False, "192.168.1.0/24": True},
    ),
    # the agent withholds the cluster's ranges: its bridge address is never advertised
    (
        {"withhold": ("10.42.0.0/16", "100.64.0.0/10")},
        ("lighthouse", "local_allow_list"),
        {"10.42.0.0/16": False, "100.64.0.0/10": False},
    ),
    # given both, the allow list wins (it already leaves the cluster's ranges out)
    (
        {"advertise": ("192.168.1.0/24",), "withhold": ("10.42.0.0/16",)},
        ("lighthouse", "local_allow_list"),
        {"0.0.0.0/0": False, "192.168.1.0/24": True},
    ),
]


@pytest.mark.parametrize(("kw", "path", "want"), PITFALLS)
def test_config_values(kw: dict[str, Any], path: tuple[str, ...], want: object) -> None:
    node: Any = render_config(settings(**kw))
    for p in path:
        node = node[p]
    assert node == want


def test_lighthouse_is_relay_and_lists_no_lighthouses() -> None:
    cfg = render_config(settings(slot=0, am_lighthouse=True, advertise=("10.0.0.0/8",)))
    assert cfg["lighthouse"]["am_lighthouse"] is True
    assert cfg["lighthouse"]["hosts"] == []
    assert cfg["relay"]["am_relay"] is True
    assert cfg["static_host_map"] == {}  # itself only
    assert "local_allow_list" not in cfg["lighthouse"]


def changed(path: tuple[str, ...], value: object) -> dict[str, Any]:
    cfg = render_config(settings())
    node: Any = cfg
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return cfg


RESTART = [
    # (new config, certificate changed, action)
    (render_config(settings()), False, "none"),
    (render_config(settings()), True, "restart"),  # 1.6: a new cert is not used on reload
    (changed(("pki", "blocklist"), ["aa"]), False, "reload"),
    (changed(("firewall", "inbound"), []), False, "reload"),
    (changed(("tun", "unsafe_routes"), []), False, "restart"),  # ignored on reload
    (changed(("listen", "port"), 4343), False, "restart"),
    (changed(("relay", "relays"), ["100.64.0.1"]), False, "restart"),
]


@pytest.mark.parametrize(("new", "cert", "action"), RESTART)
def test_restart_or_reload(new: dict[str, Any], cert: bool, action: str) -> None:
    assert restart_needed(render_config(settings()), new, cert) == action


VERSIONS = [
    ("Version: 1.6.1\n", NebulaVersion(1, 6, 1), True),
    ("Version: 1.9.5", NebulaVersion(1, 9, 5), True),
    ("nebula version 1.5.2", NebulaVersion(1, 5, 2), False),
]


@pytest.mark.parametrize(("text", "version", "supported"), VERSIONS)
def test_version(text: str, version: NebulaVersion, supported: bool) -> None:
    v = NebulaVersion.parse(text)
    assert (v, v.supported) == (version, supported)


def test_version_garbage_named() -> None:
    with pytest.raises(NetworkConfigError, match="no version in it"):
        NebulaVersion.parse("command not found")


def test_certificate_commands() -> None:
    argv = sign_argv(
        ca_crt="ca.crt",
        ca_key="ca.key",
        name="dev2",
        addresses=PLAN.addresses(2),
        groups=groups_from_labels({"zone": "eu"}),
        out_crt="h.crt",
        out_key="h.key",
    )
    flags = dict(zip(argv[2::2], argv[3::2], strict=True))
    # slot 2: overlay 100.64.0.3 with the overlay's /29; subnet 10.42.2.0/24
    assert flags["-ip"] == "100.64.0.3/29"
    assert flags["-subnets"] == "10.42.2.0/24"
    assert flags["-groups"] == "cloudless,zone=eu"
    assert ca_argv("c", "a", "b")[:2] == ["nebula-cert", "ca"]


BAD_LABELS = [({"zone": "eu,us"}, "cannot be a Nebula group"), ({"a b": "c"}, "cannot be")]


@pytest.mark.parametrize(("labels", "why"), BAD_LABELS)
def test_bad_labels_refused(labels: dict[str, str], why: str) -> None:
    with pytest.raises(NetworkConfigError, match=why):
        groups_from_labels(labels)


def test_bad_cert_name_refused() -> None:
    with pytest.raises(NetworkConfigError, match="letters, digits"):
        sign_argv(
            ca_crt="c",
            ca_key="k",
            name="a b",
            addresses=PLAN.addresses(1),
            groups=["cloudless"],
            out_crt="o",
            out_key="k",
        )


ADMIN = AdminSettings("127.0.0.1:4242", "/x/ssh_host", "cloudless", "ssh-ed25519 AAAAC3Nza x")


def test_admin_interface_on_loopback_with_one_key() -> None:
    cfg = render_config(settings(admin=ADMIN))
    assert cfg["sshd"] == {
        "enabled": True,
        "listen": "127.0.0.1:4242",
        "host_key": "/x/ssh_host",
        "authorized_users": [{"user": "cloudless", "keys": ["ssh-ed25519 AAAAC3Nza x"]}],
    }
    assert "sshd" not in render_config(settings())
    # turning it on is a reload, not a restart (Nebula reconfigures its sshd on SIGHUP)
    assert restart_needed(render_config(settings()), cfg, cert_changed=False) == "reload"


@pytest.mark.parametrize(
    ("admin", "field"),
    [
        (AdminSettings("0.0.0.0:4242", "/k", "u", "ssh-ed25519 A"), "loopback"),
        (AdminSettings("127.0.0.1:22", "/k", "u", "ssh-ed25519 A"), "not 22"),
        (AdminSettings("127.0.0.1:0", "/k", "u", "ssh-ed25519 A"), "port 1-65535"),
        (AdminSettings("127.0.0.1", "/k", "u", "ssh-ed25519 A"), "loopback address with a port"),
        (AdminSettings("127.0.0.1:4242", "/k", "u", "ssh-rsa A"), "sshd.public_key"),
    ],
)
def test_admin_interface_refused(admin: AdminSettings, field: str) -> None:
    with pytest.raises(NetworkConfigError, match=field):
        render_config(settings(admin=admin))
