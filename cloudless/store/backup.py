"""Backups: save a snapshot over the client API; restore it into a new data dir.

``save_snapshot`` streams etcd's Maintenance.Snapshot (consistent, with an integrity hash)
from one member. ``restore_snapshot`` runs ``etcdctl snapshot restore`` (etcd has no client
call for restore: it writes a data dir offline), creating a *new* single-member cluster
from the snapshot; grow it again with ``membership.join``. Procedure: docs/store.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cloudless.store.errors import StoreError
from cloudless.store.etcd import EtcdStore
from cloudless.store.etcd_admin import EtcdAdmin
from cloudless.store.etcd_process import MemberConfig

DEFAULT_ETCDCTL = "/usr/bin/etcdctl"


@dataclass(frozen=True)
class SnapshotInfo:
    path: Path
    size: int
    sha256: str


async def save_snapshot(store: EtcdStore, dest: Path) -> SnapshotInfo:
    size = await EtcdAdmin(store).snapshot(dest)
    digest = await asyncio.to_thread(lambda: hashlib.sha256(dest.read_bytes()).hexdigest())
    return SnapshotInfo(dest, size, digest)


async def restore_snapshot(
    snapshot: Path, config: MemberConfig, *, etcdctl: str = DEFAULT_ETCDCTL
) -> MemberConfig:
    """Restore ``snapshot`` into ``config.data_dir`` (which must not exist) as a new
    one-member cluster; returns the config to start it with."""
    _check_restore(snapshot, config, etcdctl)
    proc = await asyncio.create_subprocess_exec(
        etcdctl,
        "snapshot",
        "restore",
        str(snapshot),
        f"--name={config.name}",
        f"--data-dir={config.data_dir}",
        f"--initial-cluster={config.name}={config.peer_url}",
        f"--initial-advertise-peer-urls={config.peer_url}",
        f"--initial-cluster-token={config.cluster_token}",
        env={**os.environ, "ETCDCTL_API": "3"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise StoreError(
            f"etcdctl snapshot restore of {snapshot} failed (exit {proc.returncode}): "
            f"{out.decode(errors='replace').strip()[-500:]}"
        )
    return config


def _check_restore(snapshot: Path, config: MemberConfig, etcdctl: str) -> None:
    if shutil.which(etcdctl) is None:
        raise StoreError(
            f"etcdctl not found at {etcdctl}: install it with `apt-get install etcd-client`"
        )
    if config.data_dir.exists():
        raise StoreError(f"restore target {config.data_dir} exists: restore into a new, empty path")
    if not snapshot.is_file():
        raise StoreError(f"snapshot {snapshot} does not exist")
