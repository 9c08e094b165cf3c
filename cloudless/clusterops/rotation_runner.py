"""Root rotation and the coordinator's own certificate, acted out (``rotation_plan`` decides).

Store keys under ``ca-rotation/``: ``rotation`` (the shared ``Rotation`` record),
``applied-<coordinator>`` (the phase each coordinator has applied) and ``node-<id>`` (the
roots each node reported trusting and the root that signed its certificate, written by the
leader's hub when they change).

* ``RootRotation.start`` (the leader, on ``POST /v1/ca/rotate``): a new root; its key sealed
  under a key derived from the old root key, so only coordinators can open it.
* ``RootRotation.follow`` (every coordinator): applies each phase to its own CA directory,
  re-issues its own certificate after the switch, calls ``reload`` so its servers hand out
  the new certificate and trust at the next handshake, then records the phase it applied.
* ``RootRotation.lead`` (the leader): advances the record when ``next_step`` says so.
* ``RootRotation.abort`` (the leader, on ``POST /v1/ca/rotate/abort``): turns the record back
  towards the old root (``aborting``), compare-and-swap against the leader's own advance.
* With an embedded etcd, ``follow`` also brings the member's TLS along (``etcd_tls``): its
  certificates from the issuing root, its trusted-CA file restarted in, one member at a time.
* ``RootRotation.keep_own_certificate`` (every coordinator): re-issues this coordinator's
  certificate at 2/3 of its life (``rotation.renewal_due``), without a restart.
* ``AgentTrust`` (the leader's hub): fills a heartbeat's ack with the bundle the agent should
  trust and whether to renew, and records what the agent reported.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.clusterops.etcd_tls import EtcdTlsFollower
from cloudless.clusterops.rotation_plan import (
    APPLIED_PREFIX,
    ROTATION_KEY,
    NodeTrust,
    Rotation,
    RotationView,
    abort_refusal,
    aborting,
    advanced,
    next_step,
)
from cloudless.coordinator.state.coordinators import known_coordinators
from cloudless.lib.clock import Clock
from cloudless.lib.errors import Conflict
from cloudless.lib.ids import IdSource, RandomIds
from cloudless.model.node import NodeState
from cloudless.security._files import write_private
from cloudless.security.bundle import certificate_digest
from cloudless.security.ca import CertificateAuthority, new_root
from cloudless.security.errors import CaStateError
from cloudless.security.keys import private_key_pem
from cloudless.security.root_rotation import (
    NEXT_CERT_FILE,
    NEXT_KEY_FILE,
    endorse,
    forget_previous_root,
    keep_previous_root,
    switch_back,
    switch_to_next_root,
)
from cloudless.security.rotation import renewal_due
from cloudless.store.codec import DictCodec
from cloudless.store.errors import StoreError
from cloudless.store.fence import NO_FENCE, Fence
from cloudless.store.protocol import Store
from cloudless.store.table import Table
from cloudless.store.tables import ROOT

log = logging.getLogger("cloudless.ca_rotation")

SEAL_PURPOSE = "ca-rotation"
NODE_PREFIX = "node-"


def rotation_table(store: Store) -> Table[dict[str, Any]]:
    return Table(store, ROOT + "ca-rotation/", DictCodec("ca_rotation"))


def seal_root_key(ca: CertificateAuthority, key_pem: bytes, rotation_id: str) -> str:
    nonce = os.urandom(12)
    ct = AESGCM(ca.derived_key(SEAL_PURPOSE)).encrypt(nonce, key_pem, rotation_id.encode())
    return base64.b64encode(nonce + ct).decode()


def open_root_key(ca: CertificateAuthority, rot: Rotation) -> bytes:
    """The new root's key; needs the *old* root key (call before switching)."""
    raw = rot.sealed_bytes()
    return AESGCM(ca.derived_key(SEAL_PURPOSE)).decrypt(raw[:12], raw[12:], rot.id.encode())


class RootRotation:
    def __init__(
        self,
        store: Store,
        ca: CertificateAuthority,
        name: str,
        clock: Clock,
        *,
        reissue_own: Callable[[], None],
        reload: Callable[[], None],
        own_certificate: Callable[[], bytes],
        ids: IdSource | None = None,
        rng: random.Random | None = None,
        emit: Callable[[str], Awaitable[None]] | None = None,
        poll_s: float = 0.5,
        etcd: EtcdTlsFollower | None = None,
    ) -> None:
        self.etcd = etcd
        self._etcd_wait = ""
        self.table = rotation_table(store)
        self.store = store
        self.ca = ca
        self.name = name
        self.clock = clock
        self.reissue_own = reissue_own
        self.reload = reload
        self.own_certificate = own_certificate
        self.ids = ids or RandomIds()
        self.rng = rng or random.Random()
        self.emit = emit
        self.poll_s = poll_s
        self.applied: tuple[str, str] | None = None
        self.own_renewals = 0

    # ---- start (leader, from the API) -------------------------------------------------------

    async def current(self) -> Rotation | None:
        rec = await self.table.get(ROTATION_KEY)
        return Rotation.from_dict(rec.value) if rec is not None else None

    async def start(self, *, overlap_s: float = 0.0, fence: Fence = NO_FENCE) -> Rotation:
        cur = await self.current()
        if cur is not None and cur.active:
            raise Conflict(
                f"root rotation {cur.id} is in phase {cur.phase} ({cur.waiting or 'starting'}): "
                "wait for it to finish (`cloudless ca status`)"
            )
        if (self.ca.directory / NEXT_CERT_FILE).exists():
            raise Conflict(
                f"{self.ca.directory / NEXT_CERT_FILE} exists: a manual rotation is in progress "
                "on this coordinator; finish it or remove the file"
            )
        size = self.ca.root.public_key().key_size  # type: ignore[union-attr]
        key, root = await asyncio.to_thread(new_root, self.ca.trust_domain, self.clock.now(), size)
        rid = self.ids.new_id("rot-")
        now = self.clock.now()
        rot = Rotation(
            id=rid,
            phase="trust",
            old_digest=self.ca.digest,
            new_digest=certificate_digest(root),
            new_cert_pem=root.public_bytes(serialization.Encoding.PEM).decode(),
            sealed_key=seal_root_key(self.ca, private_key_pem(key), rid),
            cross_pem=endorse(self.ca, root).decode(),
            started_at=now,
            overlap_s=overlap_s,
            updated_at=now,
            waiting="coordinators start trusting the new root",
        )
        await self.table.put(ROTATION_KEY, rot.to_dict(), fence=fence)
        return rot

    # ---- follow (every coordinator) ---------------------------------------------------------

    async def follow(self) -> None:
        while True:
            try:
                rot = await self.current()
                if rot is not None:
                    await self.apply(rot)
            except (StoreError, CaStateError, TimeoutError) as e:
                log.warning("root rotation: %s; retrying", e)
            await self.clock.sleep(self.poll_s)

    async def apply(self, rot: Rotation) -> None:
        """Bring this coordinator's CA (and its etcd member's TLS) to ``rot.phase``
        (idempotent), then record it. Returns without recording while the etcd member waits
        for its turn to restart."""
        if self.applied == (rot.id, rot.phase):
            return
        if self._apply_ca(rot):
            self.reload()
            log.info("root rotation %s: applied %s", rot.id, rot.phase)
        if self.etcd is not None:
            wait = await self.etcd.follow(await self._before_me(rot))
            if wait:
                if wait != self._etcd_wait:
                    log.info("root rotation %s (%s): %s", rot.id, rot.phase, wait)
                self._etcd_wait = wait
                return
        self._etcd_wait = ""
        await self.table.put(APPLIED_PREFIX + self.name, {"id": rot.id, "phase": rot.phase})
        self.applied = (rot.id, rot.phase)

    def _apply_ca(self, rot: Rotation) -> bool:
        """Whether the CA changed. The new root is trusted from ``trust`` until ``retire``
        (or ``untrust``); it issues in ``issue``..``done``; the old root issues again from
        ``revert`` on and is dropped at ``retire``."""
        ca, changed, phase = self.ca, False, rot.phase
        if phase in ("trust", "issue", "revert") and rot.new_digest not in ca.trust_bundle.digests:
            ca.add_trusted_root(rot.new_cert_pem.encode())
            changed = True
        if phase in ("issue", "retire", "done") and ca.digest != rot.new_digest:
            key_pem = open_root_key(ca, rot)
            write_private(ca.directory / NEXT_KEY_FILE, key_pem)
            write_private(ca.directory / NEXT_CERT_FILE, rot.new_cert_pem.encode())
            keep_previous_root(ca)
            switch_to_next_root(ca)
            self.reissue_own()
            changed = True
        if phase in ("revert", "untrust", "aborted") and ca.digest == rot.new_digest:
            switch_back(ca, rot.old_digest)
            self.reissue_own()
            changed = True
        if phase in ("retire", "done") and rot.old_digest in ca.trust_bundle.digests:
            ca.remove_trusted_root(rot.old_digest)
            forget_previous_root(ca)
            changed = True
        if phase in ("untrust", "aborted") and rot.new_digest in ca.trust_bundle.digests:
            ca.remove_trusted_root(rot.new_digest)
            (ca.directory / NEXT_KEY_FILE).unlink(missing_ok=True)
            (ca.directory / NEXT_CERT_FILE).unlink(missing_ok=True)
            changed = True
        return changed

    async def _before_me(self, rot: Rotation) -> list[str]:
        """Coordinators ahead of this one (by name) that have not applied ``rot.phase``: etcd
        members restart one at a time, in name order."""
        names = sorted(c.name for c in await known_coordinators(self.store))
        applied = {
            r.name[len(APPLIED_PREFIX) :]: r.value
            for r in (await self.table.list()).records
            if r.name.startswith(APPLIED_PREFIX)
        }
        here = rot.index(rot.phase)
        return [
            n
            for n in names
            if n < self.name
            and (
                applied.get(n, {}).get("id") != rot.id
                or rot.index(str(applied[n].get("phase"))) < here
            )
        ]

    async def abort(self, *, overlap_s: float | None = None, fence: Fence = NO_FENCE) -> Rotation:
        """Take the current rotation back to the old root (``rotation_plan.aborting``);
        ``overlap_s`` (default: the rotation's) keeps the new root trusted that long after
        every certificate is back. ``Conflict`` naming why when it is too late or there is
        nothing to abort."""
        for _ in range(8):
            rec = await self.table.get(ROTATION_KEY)
            rot = Rotation.from_dict(rec.value) if rec is not None else None
            why = abort_refusal(rot)
            if why:
                raise Conflict(why)
            assert rot is not None and rec is not None
            new = aborting(rot, self.clock.now())
            if overlap_s is not None:
                new = replace(new, overlap_s=overlap_s)
            if await self.table.cas(
                ROTATION_KEY, new.to_dict(), expect=rec.mod_revision, fence=fence
            ):
                return new
        raise Conflict("the rotation record kept changing under the abort: try again")

    # ---- lead (the leader) ------------------------------------------------------------------

    async def lead(self, fence: Fence) -> None:
        while True:
            rec = await self.table.get(ROTATION_KEY)
            rot = Rotation.from_dict(rec.value) if rec is not None else None
            if rec is not None and rot is not None and rot.active:
                view = await self.view(rot)
                new = advanced(rot, next_step(view), self.clock.now())
                written: int | None = rec.mod_revision
                if new.phase != rot.phase or new.waiting != rot.waiting:
                    # an abort may have changed the record meanwhile: it wins
                    written = await self.table.cas(
                        ROTATION_KEY, new.to_dict(), expect=rec.mod_revision, fence=fence
                    )
                if written is not None and new.phase != rot.phase:
                    log.info("root rotation %s: %s -> %s", rot.id, rot.phase, new.phase)
                    if self.emit is not None:
                        await self.emit(f"root rotation {rot.id}: {new.phase} ({new.waiting})")
            await self.clock.sleep(self.poll_s)

    async def view(self, rot: Rotation) -> RotationView:
        from cloudless.coordinator.state.cluster import ClusterState

        listing = await self.table.list()
        applied: dict[str, tuple[str, str]] = {}
        reported: dict[str, dict[str, Any]] = {}
        for r in listing.records:
            if r.name.startswith(APPLIED_PREFIX):
                applied[r.name[len(APPLIED_PREFIX) :]] = (r.value["id"], r.value["phase"])
            elif r.name.startswith(NODE_PREFIX):
                reported[r.name[len(NODE_PREFIX) :]] = r.value
        nodes = await ClusterState(self.store).nodes.list()
        trust = tuple(
            NodeTrust(
                n.value.id,
                n.value.state is NodeState.READY,
                tuple(reported.get(n.value.id, {}).get("trusted", ())),
                str(reported.get(n.value.id, {}).get("issuer", "")),
            )
            for n in nodes.records
            if n.value.state is not NodeState.REMOVED
        )
        coords = tuple(c.name for c in await known_coordinators(self.store))
        return RotationView(rot, self.clock.now(), coords, applied, trust)

    # ---- the coordinator's own certificate --------------------------------------------------

    async def keep_own_certificate(self) -> None:
        """Re-issue this coordinator's certificate (and its etcd member's and etcd client's,
        issued with it at the first start) at 2/3 of its life, forever."""
        while True:
            plan = renewal_due(self.own_certificate(), self.clock.now(), self.rng)
            if plan.renew_at > self.clock.now():
                await self.clock.sleep(min(3600.0, plan.renew_at - self.clock.now()))
                continue
            self.reissue_own()
            self.reload()
            if self.etcd is not None:  # issued with it at the first start: as old
                try:
                    await self.etcd.renew()
                except StoreError as e:
                    log.warning("etcd certificates not renewed: %s", e)
            self.own_renewals += 1
            log.info("coordinator %s renewed its own certificate", self.name)


class AgentTrust:
    """The leader hub's side of rotation for agents: advice per heartbeat, and a store write
    only when what a node reports changes.

    Renewals are paced: at most ``renewals_per_s`` agents are told ``renew_now`` per second
    (a token bucket on the injected clock), and an agent told is not told again for
    ``retell_s``, so a rotation of thousands of agents does not make them all renew (a TLS
    handshake and a root-key signature each) in the same second."""

    def __init__(
        self,
        store: Store,
        ca: CertificateAuthority,
        clock: Clock,
        *,
        renewals_per_s: float = 20.0,
        retell_s: float = 30.0,
    ) -> None:
        self.table = rotation_table(store)
        self.ca = ca
        self.clock = clock
        self.rate = renewals_per_s
        self.retell_s = retell_s
        self._last: dict[str, tuple[tuple[str, ...], str]] = {}
        self._told: dict[str, float] = {}
        self._tokens = renewals_per_s
        self._refilled = clock.monotonic()

    def advise(self, node_id: str, hb: pb.Heartbeat, reply: pb.HeartbeatAck) -> None:
        """Agents that report nothing (older agents) are told nothing."""
        if not hb.trusted_roots:
            return
        bundle = self.ca.trust_bundle
        if set(hb.trusted_roots) != set(bundle.digests):
            reply.ca_bundle_pem = bundle.pem
        if hb.cert_issuer and hb.cert_issuer != self.ca.digest:
            now = self.clock.monotonic()
            if now - self._told.get(node_id, -1e18) < self.retell_s:
                return  # told already; its renewal is under way
            self._tokens = min(self.rate, self._tokens + (now - self._refilled) * self.rate)
            self._refilled = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                self._told[node_id] = now
                reply.renew_now = True

    async def record(self, node_id: str, hb: pb.Heartbeat, fence: Fence) -> None:
        if not hb.trusted_roots:
            return
        seen = (tuple(sorted(hb.trusted_roots)), hb.cert_issuer)
        if self._last.get(node_id) == seen:
            return
        self._told.pop(node_id, None)  # what it reports changed: advise afresh
        await self.table.put(
            NODE_PREFIX + node_id, {"trusted": list(seen[0]), "issuer": seen[1]}, fence=fence
        )
        self._last[node_id] = seen
