"""The control-plane operations on the user API.

* ``GET /v1/ca/status``: the trusted roots (issuing, next, previous) with their expiries, the
  root-rotation phase, this coordinator's own certificate and every user's certificate
  expiry (``cloudless ca status``). Node certificates are renewed by their agents and not
  recorded by the coordinator, so they are not listed.
* ``DELETE /v1/cluster/coordinators/{name}`` (``cloudless coordinator remove NAME``):
  removes the coordinator's etcd member if the remaining members keep a healthy quorum
  (``quorum.removal_refusal``; otherwise ``409`` with the reason and nothing changed), then
  its registration, and revokes its ``service/coordinator-NAME`` identity. The coordinator
  answering (the leader: writes are redirected to it) cannot remove itself.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web
from cryptography import x509

from cloudless.clusterops.quorum import Voter, removal_refusal
from cloudless.clusterops.status import ca_status
from cloudless.coordinator.state.coordinators import coordinators_table, known_coordinators
from cloudless.coordinator.userapi.errors import json_response as _json
from cloudless.lib.errors import Conflict, NotFound
from cloudless.security.identity import SpiffeId
from cloudless.security.root_rotation import rotation_status
from cloudless.store.codec import DictCodec
from cloudless.store.errors import StoreError
from cloudless.store.table import Table
from cloudless.store.tables import ROOT
from cloudless.store.tables.revocations import Revocation as StoredRevocation

if TYPE_CHECKING:
    from cloudless.coordinator.userapi.app import UserApi
    from cloudless.store.etcd import EtcdStore

REVOCATION_KEEP_S = 366 * 24 * 3600


class OpsApi:
    def __init__(self, api: UserApi) -> None:
        self.api = api

    async def ca_status(self, request: web.Request) -> web.Response:
        ca = self.api.ca
        rot = rotation_status(ca)
        own_path = ca.directory.parent / "tls" / "coordinator.crt"
        own = x509.load_pem_x509_certificate(own_path.read_bytes()) if own_path.exists() else None
        users = Table(self.api.state.store, f"{ROOT}users/", DictCodec("user"))
        doc = ca_status(
            roots=ca.trust_bundle.roots,
            issuing=ca.digest,
            next_digest=rot.next_digest,
            own=own,
            users=[r.value for r in (await users.list()).records],
            now=self.api.clock.now(),
        )
        return _json({"trust_domain": ca.trust_domain, **doc})

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
        healthy = await _healthy(store, members)
        voters = [Voter(m.id, m.name or f"{m.id:x}", m.is_learner) for m in members]
        why = removal_refusal(voters, healthy, target.id)
        if why:
            raise Conflict(f"cannot remove coordinator {name}: {why}")
        await admin.remove_member(target.id)
        return True


async def _healthy(store: EtcdStore, members: list[Any]) -> set[int]:
    """Members that answer a status call within a second (over the store's client TLS)."""
    from cloudless.store.etcd_admin import endpoint_status

    async def one(m: Any) -> int | None:
        for url in m.client_urls:
            try:
                st = await endpoint_status(url.split("://")[-1], store._tls, rpc_timeout=1.0)
            except StoreError:
                continue
            return int(st.member_id) or int(m.id)
        return None

    answers = await asyncio.gather(*(one(m) for m in members))
    return {a for a in answers if a is not None}


def install(app: web.Application, api: UserApi) -> OpsApi:
    ops = OpsApi(api)
    app.router.add_get("/v1/ca/status", ops.ca_status)
    app.router.add_delete("/v1/cluster/coordinators/{name}", ops.remove_coordinator)
    return ops
