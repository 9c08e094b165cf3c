"""The object store's S3 API as a cluster service (pure).

``services.S3_SERVICE`` is ``s3.system`` (DNS ``s3.system.cloudless``, also ``s3.cloudless``),
port ``services.S3_PORT``, with one endpoint per device serving the S3 API: storage nodes and
gateways alike, from their registrations in the object store (``objectstore-nodes/<node>``,
``objectstore.members.StorageNode``).

Rules of ``s3_endpoints``:

* a registration is an endpoint when its ``s3_gateway`` is ``<gateway>:<S3_PORT>`` with
  ``<gateway>`` the container bridge address of the device's slot: the VIP keeps the port, and
  the device delivers the packet to the agent's socket on every address (from a container of
  another device it crosses the overlay, which routes every slot's subnet);
* every other registration is counted in ``total`` and named in ``ignored`` with why:
  - its beat has stood still for ``stale_s`` or longer as this observer timed it (the agent
    and its S3 API stopped, or it lost the coordinators);
  - no ``s3_gateway``: the S3 API is not serving (no layout yet, or it stopped), listens on one
    address only, or the device runs without container networking;
  - its device holds no address slot, the address is not that slot's bridge address, or the
    port is not ``S3_PORT``;
  - its device is unreachable over the overlay;
* endpoints are sorted by address (``services.endpoint_set``'s order); the service balances
  ``local-first``: a device serving S3 sends its own workloads to its own API, which reaches
  every replica (Garage's advice: a gateway next to each client); other devices pick at
  random.

The service exists while any node is registered (``wanted``), so a cluster without an object
store has no ``s3`` name.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from cloudless.network.addressing import DeviceAddresses
from cloudless.network.services import (
    S3_PORT,
    S3_SERVICE,
    Endpoint,
    EndpointSet,
    ServicePort,
    ServiceSpec,
)
from cloudless.objectstore.members import StorageNode

REPLICA = "s3"  # an endpoint's replica label; the node is its ``device_id``
STALE_S = 20.0  # four beats of the default 5 s


def s3_spec() -> ServiceSpec:
    return ServiceSpec(S3_SERVICE, (ServicePort(S3_PORT, "tcp", "s3"),), balance="local-first")


def wanted(nodes: Mapping[str, StorageNode]) -> bool:
    return bool(nodes)


def _why_not(
    node: StorageNode,
    silent_s: float,
    dev: DeviceAddresses | None,
    cut_off: str | None,
    stale_s: float,
) -> str | None:
    if silent_s >= stale_s:
        return f"its registration has not beaten for {silent_s:.0f} s (stale after {stale_s:.0f} s)"
    if not node.s3_gateway:
        return (
            "its S3 API is not serving on the device's container network (no layout yet, "
            "stopped, --s3-listen on one address only, or no container networking there)"
        )
    if dev is None:
        return "its device has no address slot"
    host, _, port = node.s3_gateway.rpartition(":")
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        return f"s3_gateway {node.s3_gateway!r} is not <IPv4>:<port>"
    if ip != dev.gateway:
        return f"s3_gateway {node.s3_gateway} is not its device's bridge address {dev.gateway}"
    if port != str(S3_PORT):
        return (
            f"its S3 API listens on port {port}; the service's port is {S3_PORT} "
            f"(--s3-listen 0.0.0.0:{S3_PORT})"
        )
    if cut_off is not None:
        return f"its device is unreachable: {cut_off}"
    return None


def s3_endpoints(
    nodes: Mapping[str, StorageNode],
    silent_s: Mapping[str, float],
    devices: Mapping[str, DeviceAddresses],
    unreachable: Mapping[str, str] | None = None,
    stale_s: float = STALE_S,
) -> EndpointSet:
    """The endpoints of the S3 service (see the module rules). ``nodes``: registrations by
    node id; ``silent_s``: seconds since each one's beat last moved (missing: just seen)."""
    eps: list[Endpoint] = []
    ignored: list[str] = []
    for name, node in sorted(nodes.items()):
        dev = devices.get(name)
        why = _why_not(node, silent_s.get(name, 0.0), dev, (unreachable or {}).get(name), stale_s)
        if why is not None:
            ignored.append(f"{name}: {why}")
            continue
        assert dev is not None
        eps.append(Endpoint(dev.gateway, REPLICA, name))
    return EndpointSet(S3_SERVICE, tuple(sorted(eps)), len(nodes), tuple(ignored))
