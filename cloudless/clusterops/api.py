"""The control-plane operations on the user API.

* ``GET /v1/ca/status``: the trusted roots (issuing, next, previous) with their expiries, the
  root-rotation phase, this coordinator's own certificate and every user's certificate
  expiry (``cloudless ca status``). Node certificates are renewed by their agents and not
  recorded by the coordinator, so they are not listed.
* ``POST /v1/ca/rotate`` (``cloudless ca rotate``): start a root rotation
  (``rotation_runner``); ``409`` while one is in progress. ``{"overlap_s": N}`` keeps the old
  root trusted at least N seconds after every certificate was re-issued (time for users to
  run ``cloudless user renew``).
* ``POST /v1/ca/rotate/abort`` (``cloudless ca rotate --abort``): take the current rotation
  back to the old root while both are trusted (``trust``, ``issue``); ``409`` naming why
  when there is none or it is too late (``rotation_plan.abort_refusal``). ``{"overlap_s":
  N}`` (default: the rotation's) keeps the new root trusted N seconds after every
  certificate is back on the old one.
* ``POST /v1/users/renew`` (``cloudless user renew``): any caller renews its own user
  certificate from a CSR for the same identity and gets the current trust bundle.
* ``DELETE /v1/cluster/coordinators/{name}`` (``cloudless coordinator remove NAME``):
  removes the coordinator's etcd member if the remaining members keep a healthy quorum
  (``quorum.removal_refusal``; otherwise ``409`` with the reason and nothing changed), then
  its registration, and revokes its ``service/coordinator-NAME`` identity. The coordinator
  answering (the leader: writes are redirected to it) cannot remove itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from cryptography import x509

from cloudless.clusterops.etcd_tls import healthy_members
from cloudless.clusterops.quorum import Voter, removal_refusal
from cloudless.clusterops.rotation_plan import Rotation
from cloudless.clusterops.status import ca_status
from cloudless.coordinator.state.coordinators import coordinators_table, known_coordinators
from cloudless.coordinator.userapi.app import IDENTITY
from cloudless.coordinator.userapi.errors import ApiError
from cloudless.coordinator.userapi.errors import json_response as _json
from cloudless.lib.errors import Conflict, NotFound, ValidationError
from cloudless.network.observer import release_lighthouse
from cloudless.policy.access import CALLER
from cloudless.security.ca import BACKDATE_SECONDS
from cloudless.security.errors import SecurityError
from cloudless.security.identity import CertKind, SpiffeId
from cloudless.security.root_rotation import rotation_status
from cloudless.security.rotation import renew_certificate
from cloudless.store.codec import DictCodec
from cloudless.store.table import Table
from cloudless.store.tables import ROOT
from cloudless.store.tables.revocations import Revocation as StoredRevocation

if TYPE_CHECKING:
    from cloudless.coordinator.userapi.app import UserApi

REVOCATION_KEEP_S = 366 * 24 * 3600
MAX_OVERLAP_S = 30 * 24 * 3600


def public_rotation(rot: Rotation) -> dict[str, Any]:
    """A rotation record without its sealed key."""
    return {k: v for k, v in rot.to_dict().items() if k not in ("sealed_key", "cross_pem")}


class OpsApi:
    def __init__(self, api: UserApi) -> None:
        self.api = api

    async def ca_status(self, request: web.Request) -> web.Response:
        ca = self.api.ca
        rot = rotation_status(ca)
        own_path = ca.directory.parent / "tls" / "coordinator.crt"
        own = x509.load_pem_x509_certificate(own_path.read_bytes()) if own_path.exists() else None
        users = Table(self.api.state.store, f"{ROOT}users/", DictCodec("user"))
        rotation = self.api.rotation
        current = await rotation.current() if rotation is not None else None
        trusting = current is not None and current.phase == "trust"
        doc = ca_status(
            roots=ca.trust_bundle.roots,
            issuing=ca.digest,
            # during `ca rotate`'s trust phase the new root is trusted, not yet issuing
            next_digest=current.new_digest if current is not None and trusting else rot.next_digest,
            own=own,
            users=[r.value for r in (await users.list()).records],
            now=self.api.clock.now(),
            abandoned=(
                current.new_digest
                if current is not None and current.phase in ("revert", "untrust")
                else None
            ),
        )
        if current is not None:
            doc["rotation_run"] = public_rotation(current)
        return _json({"trust_domain": ca.trust_domain, **doc})

    async def endorsements(self, request: web.Request) -> web.Response:
        """Public: the current rotation's new root certified by the old one (PEM, or empty)."""
        rotation = self.api.rotation
        rot = await rotation.current() if rotation is not None else None
        pem = rot.cross_pem if rot is not None else ""
        return web.Response(text=pem, content_type="application/x-pem-file")

    async def rotate(self, request: web.Request) -> web.Response:
        body = await _body(request, known=("overlap_s",))
        overlap = _overlap(body)
        rotation = self.api.rotation
        if rotation is None:
            raise Conflict("this coordinator does not run root rotations")
        rot = await rotation.start(overlap_s=overlap, fence=self.api.fence())
        await self.api.recorder.emit(
            "ca", f"root rotation {rot.id} started (new root {rot.new_digest[:16]})"
        )
        return _json(public_rotation(rot), status=201)

    async def abort(self, request: web.Request) -> web.Response:
        body = await _body(request, known=("overlap_s",))
        overlap = _overlap(body) if "overlap_s" in body else None
        rotation = self.api.rotation
        if rotation is None:
            raise Conflict("this coordinator does not run root rotations")
        rot = await rotation.abort(overlap_s=overlap, fence=self.api.fence())
        await self.api.recorder.emit(
            "ca", f"root rotation {rot.id} aborted in phase {rot.aborted_from}: {rot.waiting}"
        )
        return _json(public_rotation(rot))

    async def renew_user(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        csr = body.get("csr_pem") if isinstance(body, dict) else None
        if not isinstance(csr, str) or "CERTIFICATE REQUEST" not in csr:
            raise ValidationError("csr_pem: required, a PEM certificate signing request")
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            raise ApiError(401, "unauthenticated", "a client certificate is required")
        current = x509.load_der_x509_certificate(der)
        sid = request[IDENTITY]
        if sid.kind is not CertKind.USER:
            raise ApiError(
                403, "forbidden", f"{sid.uri} is not a user: nodes renew over their agent stream"
            )
        caller = request.get(CALLER)
        if isinstance(caller, str):  # an identity with no user record: the reason
            raise ApiError(403, "forbidden", caller)
        life = current.not_valid_after_utc.timestamp() - current.not_valid_before_utc.timestamp()
        try:
            cert = renew_certificate(
                self.api.ca,
                current,
                csr.encode(),
                revocations=self.api.revocations,
                ttl_seconds=max(60, int(life - BACKDATE_SECONDS)),
            )
        except SecurityError as e:
            raise ApiError(400, e.code, f"csr_pem: {e.message}") from None
        leaf = x509.load_pem_x509_certificate(cert)
        users = Table(self.api.state.store, f"{ROOT}users/", DictCodec("user"))
        rec = await users.get(sid.name)
        if rec is not None:
            rec.value.update(
                serial=format(leaf.serial_number, "x"),
                expires_at=leaf.not_valid_after_utc.timestamp(),
            )
            await users.put(sid.name, rec.value)
        return _json({"cert_pem": cert.decode(), "ca_bundle_pem": self.api.ca.bundle_pem.decode()})

    async def remove_coordinator(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        coords = await known_coordinators(self.api.state.store)
        info = next((c for c in coords if c.name == name), None)
        if info is not None and info.api == self.api.leader_api():
            raise Conflict(
                f"coordinator {name} is the leader answering this request and cannot remove "
                "itself: stop it, wait for a new leader, then remove it"
            )
        removed_member = await self._remove_member(name, known=info is not None)
        await coordinators_table(self.api.state.store).delete(name)
        # its Nebula lighthouse goes from every device's list (and its overlay IP is freed)
        await release_lighthouse(self.api.state.store, name)
        sid = SpiffeId.service(f"coordinator-{name}", self.api.ca.trust_domain)
        now = self.api.clock.now()
        reason = "coordinator removed"
        self.api.revocations.revoke_identity(sid, reason=reason, at=now)
        await self.api.state.revocations.put(
            f"coordinator:{name}", StoredRevocation(sid.uri, reason, now, now + REVOCATION_KEEP_S)
        )
        await self.api.recorder.emit(
            "cluster", f"coordinator {name} removed (etcd member removed: {removed_member})"
        )
        return _json({"removed": name, "etcd_member_removed": removed_member})

    async def _remove_member(self, name: str, *, known: bool) -> bool:
        from cloudless.observability.store import unwrapped
        from cloudless.store.etcd import EtcdStore
        from cloudless.store.etcd_admin import EtcdAdmin

        store = unwrapped(self.api.state.store)
        if not isinstance(store, EtcdStore):
            if not known:
                raise NotFound(f"coordinator {name!r} not found: see `cloudless coordinator list`")
            return False
        admin = EtcdAdmin(store)
        members = await admin.members()
        target = next((m for m in members if m.name == name), None)
        if target is None:
            if not known:
                raise NotFound(f"coordinator {name!r} is neither registered nor an etcd member")
            return False
        healthy = await healthy_members(store, members)
        voters = [Voter(m.id, m.name or f"{m.id:x}", m.is_learner) for m in members]
        why = removal_refusal(voters, healthy, target.id)
        if why:
            raise Conflict(f"cannot remove coordinator {name}: {why}")
        await admin.remove_member(target.id)
        return True


async def _body(request: web.Request, *, known: tuple[str, ...]) -> dict[str, Any]:
    """The JSON object body (``{}`` when none), refusing unknown fields by name."""
    if not request.can_read_body:
        return {}
    try:
        raw = await request.json()
    except ValueError:
        raise ValidationError("body: not JSON") from None
    if not isinstance(raw, dict):
        raise ValidationError("body: expected a JSON object")
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValidationError([f"{k}: unknown field (known: {', '.join(known)})" for k in unknown])
    return raw


def _overlap(body: dict[str, Any]) -> float:
    overlap = body.get("overlap_s", 0)
    if isinstance(overlap, bool) or not isinstance(overlap, int | float):
        raise ValidationError(f"overlap_s: {overlap!r} must be a number of seconds")
    if not 0 <= overlap <= MAX_OVERLAP_S:
        raise ValidationError(f"overlap_s: {overlap} must be between 0 and {MAX_OVERLAP_S}")
    return float(overlap)


def install(app: web.Application, api: UserApi) -> OpsApi:
    ops = OpsApi(api)
    app.router.add_get("/v1/ca/status", ops.ca_status)
    app.router.add_post("/v1/ca/rotate", ops.rotate)
    app.router.add_post("/v1/ca/rotate/abort", ops.abort)
    app.router.add_get("/v1/ca/endorsements", ops.endorsements)
    app.router.add_post("/v1/users/renew", ops.renew_user)
    app.router.add_delete("/v1/cluster/coordinators/{name}", ops.remove_coordinator)
    return ops
