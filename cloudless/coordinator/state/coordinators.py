"""The coordinators table: each coordinator registers where it serves (API, agent and
enrollment endpoints, its etcd client address); agents, joiners and the user API read it.
A record that does not decode as ``CoordinatorInfo`` is skipped, not an error."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from cloudless.store.codec import DictCodec
from cloudless.store.protocol import Store
from cloudless.store.table import Table
from cloudless.store.tables import ROOT


@dataclass(frozen=True)
class CoordinatorInfo:
    name: str
    api: str
    agent: str
    enroll: str
    etcd_client: str = ""


def coordinators_table(store: Store) -> Table[dict[str, Any]]:
    return Table(store, ROOT + "coordinators/", DictCodec("coordinator", required=("name",)))


async def register(store: Store, info: CoordinatorInfo) -> None:
    await coordinators_table(store).put(info.name, asdict(info))


async def known_coordinators(store: Store) -> list[CoordinatorInfo]:
    listing = await coordinators_table(store).list()
    out = []
    for r in listing.records:
        try:
            out.append(CoordinatorInfo(**r.value))
        except TypeError:
            continue
    return out


def etcd_endpoints(own: str, coordinators: list[CoordinatorInfo]) -> list[str]:
    """Every registered etcd member's client address, ``own`` first (the coordinator's own
    member answers fastest; the others let its store and lease keepers carry on while its
    member restarts). Empty addresses (memory store) and repeats are dropped."""
    others = sorted({c.etcd_client for c in coordinators if c.etcd_client and c.etcd_client != own})
    return [own, *others] if own else others
