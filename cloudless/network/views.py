"""The network as the user API and the CLI show it (pure): ``describe service``, ``net status``.

``service_detail`` adds to ``state.service_view`` what a user needs to act: the names that
resolve to the VIP, and why fewer endpoints are ready than replicas exist. ``network_status``
lists the plan, the lighthouse and every node's slot (overlay IP, container subnet).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.state import DeviceNet, ServiceRecord, service_view


def service_detail(s: ServiceRecord, node_names: Mapping[str, str]) -> dict[str, Any]:
    v: dict[str, Any] = service_view(s)
    v["names"] = [f"{s.name}.{s.namespace}.cloudless", f"{s.name} (from namespace {s.namespace})"]
    zone = f"{s.name}.{s.namespace}.cloudless"
    v["srv"] = [f"_{p.name or p.port}._{p.protocol}.{zone}" for p in s.ports]
    v["endpoints"] = [
        {**e, "node_name": node_names.get(str(e["node"]), str(e["node"]))} for e in v["endpoints"]
    ]
    missing = s.total - len(s.endpoints)
    v["not_ready"] = (
        f"{missing} of {s.total} replicas are not endpoints: not running yet, not ready, or "
        "reporting no address in their node's container subnet (a node without container "
        "networking reports a host port, which a VIP cannot reach)"
        if missing > 0
        else ""
    )
    return v


def network_status(
    config: AddressPlanConfig | None,
    devices: Mapping[str, DeviceNet],
    node_names: Mapping[str, str],
    reported: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``reported``: each node's network as its agent says (the leader's memory; "" when
    not known here, e.g. on a follower)."""
    if config is None:
        return {"enabled": False, "reason": "the coordinator runs without --network"}
    plan = config.plan()
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
            }
            for node_id, d in sorted(devices.items(), key=lambda kv: kv[1].slot)
        ],
    }


NET_HEADERS = ["NODE", "SLOT", "OVERLAY IP", "CONTAINER SUBNET", "AGENT SAYS"]


def net_rows(view: Mapping[str, Any]) -> list[list[str]]:
    return [
        [
            str(n["name"]),
            str(n["slot"]),
            str(n["overlay_ip"]),
            str(n["subnet"]),
            str(n.get("agent") or "?"),
        ]
        for n in view.get("nodes", [])
    ]
