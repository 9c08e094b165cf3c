"""Coordinator configuration and on-disk layout."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cloudless.coordinator.deciders.membership import MembershipConfig
from cloudless.coordinator.eventlog.window import EventBounds
from cloudless.lib.keepalive import Keepalive
from cloudless.network.addressing import AddressPlanConfig
from cloudless.scheduler.config import SchedulerConfig
from cloudless.security._files import write_private as _write_file


@dataclass(frozen=True)
class CoordinatorConfig:
    data_dir: Path
    name: str = "coord-1"
    host: str = "127.0.0.1"  # the address this coordinator binds and advertises
    api_port: int = 8443
    agent_port: int = 7443  # mutual TLS: the agents' control stream
    enroll_port: int = 7444  # server TLS only: enrollment of nodes without a certificate
    etcd_client_port: int = 2379
    etcd_peer_port: int = 2380
    store: Literal["etcd", "memory"] = "etcd"
    bootstrap: bool = False
    join: str = ""  # API URL of a coordinator of the cluster to join
    join_token: str = ""
    trust_domain: str = "cloudless"
    root_key_size: int = 4096
    bcrypt_cost: int = 10
    # The leader's lease. A leader that dies is deposed by the followers within ~0.3 s
    # (below); the TTL only bounds how long a leader that is cut off, or frozen, keeps the
    # role. 5 s rides out the multi-second stalls of a loaded machine (at 3 s a 5,000-node
    # run lost its leader to one and every agent reconnected at once).
    election_ttl: int = 5
    # A follower that loses its connection to the leader's agent port and cannot re-make it
    # within this grace deposes the leader's term (cloudless/coordinator/loops/leader_watch.py).
    leader_death_grace_s: float = 0.3
    leader_wait_s: float = 30.0
    etcd_heartbeat_ms: int = 100
    etcd_election_ms: int = 1000
    # `cloudless ca rotate` also moves the embedded etcd member's TLS (clusterops.etcd_tls):
    # certificates re-issued, trusted roots widened by one member restart at a time
    # (docs/security.md, "The embedded etcd follows the rotation"). False: etcd keeps the
    # root and certificates it started with (``--no-etcd-follows-rotation``).
    etcd_follows_rotation: bool = True
    membership: MembershipConfig = field(default_factory=MembershipConfig)
    keepalive: Keepalive = field(default_factory=Keepalive)
    # "HOST:PORT": also serve /metrics there, in plain HTTP (bind it where only the
    # operator's Prometheus reaches); "" serves /metrics only on the user API (mutual TLS).
    metrics_listen: str = ""
    # The events the cluster keeps (count and age); the leader deletes the rest.
    events: EventBounds = field(default_factory=EventBounds)
    # Container networking (cloudless/network): None leaves the network controller off.
    network: AddressPlanConfig | None = None
    # Default placement strategy and the five factor weights (``--scheduler``).
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)

    @property
    def api_url(self) -> str:
        return f"https://{self.host}:{self.api_port}"

    @property
    def agent_endpoint(self) -> str:
        return f"{self.host}:{self.agent_port}"

    @property
    def enroll_endpoint(self) -> str:
        return f"{self.host}:{self.enroll_port}"

    @property
    def ca_dir(self) -> Path:
        return self.data_dir / "ca"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def etcd_dir(self) -> Path:
        return self.data_dir / "etcd" / self.name

    @property
    def admin_dir(self) -> Path:
        return self.data_dir / "admin"


def write_private(path: Path, data: bytes) -> None:
    """A 0600 file, its directory created 0700 if missing."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_file(path, data)
