"""The network as the user API and the CLI show it (pure): ``describe service``, ``net status``.

``service_detail`` adds to ``state.service_view`` what a user needs to act: the names that
resolve to the VIP, and why fewer endpoints are ready than replicas exist. ``network_status``
lists the plan, the lighthouse and every node's slot (overlay IP, container subnet) with its
overlay as observed (``observer``: NAT type, direct and relayed paths, reachability);
``node_overlay`` is the part ``describe node`` shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.overlay_state import DeviceOverlay
from cloudless.network.services import ZONE_ALIASES, ServiceKey
from cloudless.network.state import DeviceNet, ServiceRecord, service_view

NOT_OBSERVED = "not observed yet (the leader classifies every 10 s from the lighthouses' views)"


def node_overlay(o: DeviceOverlay | None, by_overlay_ip: Mapping[str, str]) -> dict[str, Any]:
    """One node's overlay as observed; ``by_overlay_ip`` names peers (overlay IP -> name)."""
    if o is None:
        return {
            "nat": "unknown",
            "nat_reason": NOT_OBSERVED,
            "reachable": None,
            "reach_reason": NOT_OBSERVED,
            "paths": [],
            "summary": "-",
        }
    return {
        "nat": o.nat,
        "nat_reason": o.nat_reason,
        "reachable": o.reachable,
        "reach_reason": o.reach_reason,
        "paths": [
            {
                "peer": p.peer,
                "peer_name": by_overlay_ip.get(p.peer, p.peer),
                "path": "direct" if p.direct else "relayed",
                "via": p.via,
            }
            for p in o.paths
        ],
        "summary": o.summary(by_overlay_ip),
    }


def service_detail(s: ServiceRecord, node_names: Mapping[str, str]) -> dict[str, Any]:
    v: dict[str, Any] = service_view(s)
    v["names"] = [f"{s.name}.{s.namespace}.cloudless", f"{s.name} (from namespace {s.namespace})"]
    alias = ZONE_ALIASES.get(ServiceKey(s.namespace, s.name))
    if alias is not None:
        v["names"].append(f"{alias}.cloudless")
    zone = f"{s.name}.{s.namespace}.cloudless"
    v["srv"] = [f"_{p.name or p.port}._{p.protocol}.{zone}" for p in s.ports]
    v["endpoints"] = [
        {**e, "node_name": node_names.get(str(e["node"]), str(e["node"]))} for e in v["endpoints"]
    ]
    missing = s.total - len(s.endpoints)
    v["not_ready"] = (
        f"{missing} of {s.total} replicas are not endpoints: not running yet, not ready, "
        "reporting no address in their node's container subnet (a node without container "
        "networking reports a host port, which a VIP cannot reach), or on a node no other "
        "node can reach over the overlay (`cloudless describe node` says why)"
        if missing > 0
        else ""
    )
    return v


def network_status(
    config: AddressPlanConfig | None,
    devices: Mapping[str, DeviceNet],
    node_names: Mapping[str, str],
    reported: Mapping[str, str] | None = None,
    overlay: Mapping[str, DeviceOverlay] | None = None,
) -> dict[str, Any]:
    """``reported``: each node's network as its agent says (the leader's memory; "" when
    not known here, e.g. on a follower); ``overlay``: the observed overlay by node id."""
    if config is None:
        return {"enabled": False, "reason": "the coordinator runs without --network"}
    plan = config.plan()
    by_ip = {d.overlay_ip: node_names.get(n, n) for n, d in devices.items()}
    by_ip[str(plan.lighthouse_ip)] = "lighthouse"
    return {
        "enabled": True,
        "overlay": config.overlay_cidr,
        "containers": f"{config.container_cidr} (/{config.container_prefix} per node)",
        "services": config.service_cidr,
        "slots": {"used": len(devices), "total": plan.slots},
        "lighthouse": (
            {"overlay_ip": str(plan.lighthouse_ip), "address": config.lighthouse}
            if config.lighthouse
            else None
        ),
        "nodes": [
            {
                "node": node_id,
                "name": node_names.get(node_id, node_id),
                "slot": d.slot,
                "overlay_ip": d.overlay_ip,
                "subnet": d.container_subnet,
                "agent": (reported or {}).get(node_id, ""),
                **node_overlay((overlay or {}).get(node_id), by_ip),
            }
            for node_id, d in sorted(devices.items(), key=lambda kv: kv[1].slot)
        ],
    }


NET_HEADERS = [
    "NODE",
    "SLOT",
    "OVERLAY IP",
    "CONTAINER SUBNET",
    "NAT",
    "PATHS",
    "REACHABLE",
    "AGENT SAYS",
]


def _reach(n: Mapping[str, Any]) -> str:
    r = n.get("reachable")
    if r is None:
        return "?"
    return "yes" if r else f"NO: {n.get('reach_reason', '')}"


def net_rows(view: Mapping[str, Any]) -> list[list[str]]:
    return [
        [
            str(n["name"]),
            str(n["slot"]),
            str(n["overlay_ip"]),
            str(n["subnet"]),
            str(n.get("nat") or "unknown"),
            str(n.get("summary") or "-"),
            _reach(n),
            str(n.get("agent") or "?"),
        ]
        for n in view.get("nodes", [])
    ]
