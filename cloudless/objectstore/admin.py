"""What the ``cloudless s3`` commands do, over a ``Store`` (etcd in production): access keys,
buckets and permissions, and the layout (show, stage, preview with what moves, apply).

Every refusal is a ``CloudlessError`` naming the problem; output is plain text lines.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from cloudless.lib.clock import Clock
from cloudless.lib.errors import CloudlessError, NotFound, ValidationError
from cloudless.objectstore import history as h
from cloudless.objectstore.layout import NodeRole, Plan
from cloudless.objectstore.layout_store import LayoutStore
from cloudless.objectstore.s3.errors import S3Error
from cloudless.objectstore.s3.iam import AccessKey, Bucket, Iam
from cloudless.security.secretbox import SecretBox
from cloudless.store.protocol import Store

if TYPE_CHECKING:
    from cloudless.objectstore.members import StorageNode


def _user_error(e: S3Error) -> CloudlessError:
    return CloudlessError(e.message, code=e.code)


async def create_key(
    store: Store, clock: Clock, name: str, box: SecretBox | None = None
) -> AccessKey:
    """A new key, its secret in clear in the answer only; stored sealed under ``box`` (the
    coordinator's secret box; ``None`` stores it as is, for loopback test stores)."""
    if not name or len(name) > 64 or not name.isprintable():
        raise ValidationError(f"key name {name!r}: 1-64 printable characters")
    return await Iam(store, clock).create_key(name, box)


async def delete_key(store: Store, clock: Clock, key_id: str) -> list[str]:
    """Delete an access key and its grants (``Iam.delete_key``): the buckets it lost them on."""
    if not key_id.isalnum() or not key_id.isascii() or len(key_id) > 128:
        raise ValidationError(
            f"id: {key_id[:140]!r} is not an access key id (1-128 letters and digits, as "
            "`cloudless s3 key list` shows them)"
        )
    revoked = await Iam(store, clock).delete_key(key_id)
    if revoked is None:
        raise NotFound(f"access key {key_id!r} not found: list them with `cloudless s3 key list`")
    return revoked


async def create_bucket(store: Store, clock: Clock, name: str, owner: str) -> Bucket:
    iam = Iam(store, clock)
    if await iam.key(owner) is None:
        raise CloudlessError(f"access key {owner!r} does not exist: create it first")
    try:
        return await iam.create_bucket(name, owner)
    except S3Error as e:
        raise _user_error(e) from None


async def allow(store: Store, clock: Clock, bucket: str, key_id: str, perm: str) -> Bucket:
    iam = Iam(store, clock)
    if await iam.key(key_id) is None:
        raise CloudlessError(f"access key {key_id!r} does not exist")
    try:
        return await iam.allow(bucket, key_id, perm)
    except S3Error as e:
        raise _user_error(e) from None


def render_history(hist: h.LayoutHistory) -> list[str]:
    if hist.current is None:
        lines = ["no layout yet"]
    else:
        cur = hist.current
        counts = cur.counts()
        lines = [
            f"layout version {cur.version}, replication {cur.replication}, live versions "
            + ", ".join(str(v.version) for v in hist.versions),
        ]
        for node, role in sorted(cur.roles.items()):
            kind = "gateway" if not role.stores else f"{counts.get(node, 0)} partitions"
            synced = hist.synced.get(node, 0)
            lines.append(
                f"  {node}  zone {role.zone}  capacity {role.capacity}  {kind}  synced v{synced}"
            )
    waiting = h.waiting_on(hist)
    if waiting:
        lines.append(
            "transition waits for: " + "; ".join(f"{n} {why}" for n, why in waiting.items())
        )
    if hist.removed:
        lines.append(
            "removed by an operator (not added back automatically): "
            + ", ".join(sorted(hist.removed))
        )
    if hist.staged_roles or hist.staged_replication:
        lines.append("staged:")
        if hist.staged_replication:
            lines.append(f"  replication -> {hist.staged_replication}")
        for node, r in sorted(hist.staged_roles.items()):
            what = "remove" if r is None else f"zone {r.zone} capacity {r.capacity}"
            lines.append(f"  {node}: {what}")
    return lines


def render_plan(plan: Plan) -> list[str]:
    gained = Counter(n for _, n in plan.moves)
    lines = [
        f"replication {plan.replication}, zone redundancy {plan.zone_redundancy}, "
        f"{len(plan.moves)} partition copies move",
    ]
    for node, count in sorted(plan.counts().items()):
        lines.append(
            f"  {node}: {count} partitions (ideal {plan.ideal[node]:.1f}), "
            f"receives {gained.get(node, 0)}"
        )
    lines += [f"  note: {n}" for n in plan.notes]
    return lines


async def stage(store: Store, node: str, zone: str | None, capacity: int | None) -> list[str]:
    """Stage ``node`` with a role, or its removal when ``zone`` is None."""
    role = None if zone is None else NodeRole(zone, capacity or 0)
    return render_history(await LayoutStore(store).stage(node, role))


async def apply(store: Store, expect_version: int) -> list[str]:
    hist, plan = await LayoutStore(store).apply(expect_version)
    return [f"applied layout version {hist.version()}", *render_plan(plan)]


async def status(store: Store) -> list[str]:
    """The registered store nodes (addresses, zone, capacity, beat counter, in the layout or
    not) and the layout."""
    from cloudless.objectstore.members import NODES

    hist = await LayoutStore(store).show()
    nodes = [r.value for r in (await NODES.bind(store).list()).records]
    roles = hist.current.roles if hist.current else {}
    lines = [f"{len(nodes)} registered object-store nodes"]
    for n in sorted(nodes, key=lambda n: n.name):
        kind = "gateway" if n.capacity == 0 else f"storage {n.capacity} bytes"
        where = "in layout" if n.name in roles else "not in layout"
        lines.append(
            f"  {n.name}  zone {n.zone}  {kind}  {where}  beat {n.beat}  "
            f"peer {n.rpc_url}  s3 {n.s3_url or '-'}{disk_text(n)}"
        )
    return lines + render_history(hist)


def disk_text(n: StorageNode) -> str:
    """A storage node's disk for ``status``: free of total, and a warning while it refuses
    writes for want of room ("" for a gateway or a node that did not report it)."""
    if n.capacity == 0 or n.disk_size <= 0:
        return ""
    gib = 1 << 30
    text = f"  disk {n.disk_free / gib:.1f} of {n.disk_size / gib:.1f} GiB free"
    if n.refusing_writes:
        text += "  REFUSING WRITES: its disk is full"
    return text
