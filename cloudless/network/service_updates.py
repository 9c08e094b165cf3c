"""Service-table changes on the agent stream. Pure.

The coordinator numbers its service table (``NetworkConfig.services_revision``) and, when only
services changed for a device, sends it the services that changed since the table it last sent
(``table_update``: each added or changed service whole, the keys of the removed ones) instead
of the whole config. The agent patches its copy (``apply_update``) only when that copy is at
the update's ``base``; otherwise the update is refused (``StaleServicesUpdate``) and the
device keeps its table until the next whole config, which the coordinator sends whenever it
did not send the device the table the update starts from. Applying the updates from ``base``
in order gives exactly the table a whole config at ``revision`` carries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.network.errors import NetworkConfigError


class StaleServicesUpdate(NetworkConfigError):
    """The update starts from another table than the device holds."""


def service_key(m: pb.NetworkService) -> str:
    return f"{m.namespace}/{m.name}"


def _order(m: pb.NetworkService) -> tuple[str, str]:
    return (m.namespace, m.name)  # the order network_config writes services in


def by_key(services: Iterable[pb.NetworkService]) -> dict[str, pb.NetworkService]:
    return {service_key(s): s for s in services}


def table_update(
    old: Mapping[str, pb.NetworkService],
    new: Mapping[str, pb.NetworkService],
    base: int,
    revision: int,
) -> pb.NetworkServicesUpdate | None:
    """What turns table ``old`` (at ``base``) into ``new`` (at ``revision``); None if equal."""
    upserts = sorted((s for k, s in new.items() if old.get(k) != s), key=_order)
    removed = sorted(set(old) - set(new))
    if not upserts and not removed:
        return None
    return pb.NetworkServicesUpdate(base=base, revision=revision, upserts=upserts, removed=removed)


def apply_update(cfg: pb.NetworkConfig, update: pb.NetworkServicesUpdate) -> pb.NetworkConfig:
    """``cfg`` with ``update`` applied (a new message; ``cfg`` is not changed)."""
    if cfg.services_revision != update.base:
        raise StaleServicesUpdate(
            f"network.services_update: it changes service table revision {update.base}, this "
            f"device holds revision {cfg.services_revision}; keeping it until the coordinator "
            "sends the whole table"
        )
    table = by_key(cfg.services)
    for key in update.removed:
        table.pop(key, None)
    table.update(by_key(update.upserts))
    out = pb.NetworkConfig()
    out.CopyFrom(cfg)
    del out.services[:]
    out.services.extend(sorted(table.values(), key=_order))
    out.services_revision = update.revision
    return out
