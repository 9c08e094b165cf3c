"""Issued device certificates, kept in the store so every coordinator that leads sees them.

Table (under ``/cloudless/``)::

    network-certs/<node-id>   IssuedCert: the node's current Nebula certificate, what it was
                              issued for (slot, the node's public key), when, for how long,
                              and its fingerprint

Rules (pure: ``current``, ``blocklist``, ``expired``):

* a record is the node's current certificate while it was issued for the node's slot and
  public key and is not due for renewal (2/3 of its life, ``renewal_due``); else the leader
  signs a new one and replaces the record, so a new leader re-issues nothing that is current;
* the blocklist is the fingerprints of records whose node holds no address slot (removed
  nodes) and whose certificate has not expired; expired ones are deleted (Nebula refuses an
  expired certificate anyway), so the table holds at most one record per node ever removed
  within a certificate's life.

A node that sent no public key (an agent from before node-made keys) gets a key made by the
leader; that key is kept on the leader's disk only, so another leader issues it a new one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cloudless.network.nebula_config import renewal_due
from cloudless.store.codec import DataclassCodec
from cloudless.store.tables import TableSpec


@dataclass(frozen=True)
class IssuedCert:
    slot: int
    for_key: str  # the node's public key PEM; "" = a key made by the coordinator
    issued_at: float
    hours: int
    cert: str  # PEM
    fingerprint: str


CERTS = TableSpec("network-certs", DataclassCodec(IssuedCert, kind="network_cert"))


def current(rec: IssuedCert | None, slot: int, public_key: str, now: float) -> bool:
    """Whether ``rec`` is still the certificate to send (see the module rules)."""
    return (
        rec is not None
        and rec.slot == slot
        and rec.for_key == public_key
        and not renewal_due(rec.issued_at, rec.hours, now)
    )


def expired(rec: IssuedCert, now: float) -> bool:
    return now >= rec.issued_at + rec.hours * 3600


def blocklist(records: Mapping[str, IssuedCert], holders: set[str], now: float) -> list[str]:
    """Fingerprints of the unexpired certificates of nodes that hold no slot."""
    return sorted(
        r.fingerprint
        for n, r in records.items()
        if n not in holders and not expired(r, now) and r.fingerprint
    )
