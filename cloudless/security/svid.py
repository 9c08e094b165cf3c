"""Workload identities (X.509 SVIDs): who may have one, for how long, and where it lives.

A replica's identity is ``spiffe://<trust domain>/workload/<replica id>`` (replica ids are
``<workload>-<suffix>``, so the workload is the id's prefix; the certificate's common name is
the workload). It is issued only to the agent of the node the replica is assigned to, while
the replica is meant to run (``issuance_refusal``), for ``clamp_ttl`` seconds (default one
hour, 1 minute to 1 day), with serverAuth and clientAuth so replicas can do mutual TLS with
each other and verify peers by SPIFFE ID against the bundle.

Inside the container, read-only at ``MOUNT_PATH``: ``svid.pem`` (certificate), ``svid.key``
(its key, made on the node, never sent) and ``bundle.pem`` (the roots to verify peers with;
two during a root rotation). The agent replaces the three files (rename) at 2/3 of the
certificate's life; a program re-reads them when it opens new connections.
"""

from __future__ import annotations

from cloudless.model.replica import DesiredState, Replica
from cloudless.security.identity import SpiffeId

MOUNT_PATH = "/run/cloudless/identity"
CERT_FILE, KEY_FILE, BUNDLE_FILE = "svid.pem", "svid.key", "bundle.pem"
DEFAULT_TTL_S = 3600
MIN_TTL_S = 60
MAX_TTL_S = 86_400


def workload_identity(replica_id: str, trust_domain: str) -> SpiffeId:
    return SpiffeId.workload(replica_id, trust_domain)


def clamp_ttl(requested: int) -> int:
    """0 (unset) means the default; otherwise within [MIN_TTL_S, MAX_TTL_S]."""
    if requested <= 0:
        return DEFAULT_TTL_S
    return max(MIN_TTL_S, min(MAX_TTL_S, requested))


def issuance_refusal(
    node_id: str, workload: str, replica_id: str, replica: Replica | None
) -> str | None:
    """Why ``node_id`` may not have ``replica_id``'s identity, or None (pure)."""
    if not replica_id.startswith(f"{workload}-"):
        return f"replica_id: {replica_id!r} is not a replica of workload {workload!r}"
    if replica is None:
        return f"replica {replica_id} of workload {workload} does not exist"
    if replica.node_id != node_id:
        where = f"node {replica.node_id}" if replica.node_id else "no node"
        return (
            f"replica {replica_id} is assigned to {where}, not to node {node_id}: an agent "
            "may only ask for the identities of replicas it runs"
        )
    if replica.desired is not DesiredState.RUNNING:
        return f"replica {replica_id} is being stopped: it gets no new identity"
    return None
