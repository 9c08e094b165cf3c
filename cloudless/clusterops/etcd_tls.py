"""The embedded etcd member's TLS follows the cluster CA through a root rotation.

What etcd 3.4 (Debian 12's ``etcd-server`` 3.4.23) re-reads and what it does not, checked
against real etcd in ``tests/integration/store/test_etcd_tls_reload.py``:

* its certificate and key files (``--cert-file``/``--key-file``, the peer ones too) are read
  again for every new TLS handshake, serving and dialling: replacing the files is enough;
* its trusted-CA file is read once, at start: trusting another root needs a restart.

So (``etcd_tls_plan``, pure), on each coordinator:

1. the member and client certificates are re-issued from the issuing root when another root
   signed them (no restart; the coordinator's own etcd client is rebuilt on the new files);
2. when the roots the CA trusts differ from those in the member's trusted-CA file, the file is
   rewritten with the CA's roots and the member restarted, **one member at a time**: a
   coordinator restarts its member only when every coordinator ahead of it (by name) has
   applied the rotation's phase, and only if the other voting members hold a quorum meanwhile
   (``quorum.restart_refusal``). That happens at ``trust`` (the new root added), at
   ``retire`` (the old root dropped: etcd stops taking certificates it signed) and, after an
   abort, at ``untrust`` (the new root dropped).

The rotation's phases order this so that no member ever meets a certificate it does not
trust: every member trusts the new root (restart, ``trust``) before any certificate comes from
it (``issue``), and drops the old root (``retire``) only after every coordinator has re-issued
its member and client certificates (the leader moves to ``retire`` once all applied
``issue``); an abort re-issues from the old root (``revert``), which every member still
trusts, before the new root is dropped (``untrust``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509

from cloudless.clusterops.quorum import Voter, restart_refusal
from cloudless.security.bundle import TrustBundle, certificate_digest, load_pem_certificates
from cloudless.security.ca import CertificateAuthority
from cloudless.store.errors import StoreError
from cloudless.store.tls import ClientTls

if TYPE_CHECKING:
    from cloudless.store.etcd import EtcdStore
    from cloudless.store.etcd_process import EtcdMember

log = logging.getLogger("cloudless.ca_rotation")


@dataclass(frozen=True)
class EtcdTlsState:
    """What the member runs with: the roots in its trusted-CA file (as of its last start) and
    the roots that signed its certificate and this coordinator's client certificate."""

    trusted: tuple[str, ...]
    member_issuer: str
    client_issuer: str


@dataclass(frozen=True)
class EtcdTlsPlan:
    reissue: bool  # new member and client certificates from the issuing root
    restart: bool  # rewrite the trusted-CA file and restart the member
    wait: str = ""  # why the restart must wait for its turn ("" = go)


def etcd_tls_plan(
    state: EtcdTlsState,
    bundle: Collection[str],
    issuing: str,
    before_me: Sequence[str],
) -> EtcdTlsPlan:
    reissue = state.member_issuer != issuing or state.client_issuer != issuing
    restart = set(bundle) != set(state.trusted)
    wait = ""
    if restart and before_me:
        wait = (
            "etcd members restart one at a time, in coordinator name order: waiting for "
            f"{', '.join(sorted(before_me)[:5])} to restart theirs"
        )
    return EtcdTlsPlan(reissue, restart, wait)


@dataclass(frozen=True)
class EtcdTlsFiles:
    ca_file: Path
    member_cert: Path
    client_cert: Path
    client_key: Path

    def client_tls(self) -> ClientTls:
        return ClientTls.from_files(self.ca_file, self.client_cert, self.client_key)


def _issuer(bundle: TrustBundle, path: Path) -> str:
    try:
        root = bundle.issuer_of(x509.load_pem_x509_certificate(path.read_bytes()))
    except (OSError, ValueError):
        return ""
    return certificate_digest(root) if root is not None else ""


def read_state(ca: CertificateAuthority, files: EtcdTlsFiles, trusted_pem: bytes) -> EtcdTlsState:
    """``trusted_pem``: the trusted-CA file as the member last read it (at its start)."""
    everything = TrustBundle.of(
        [*ca.trust_bundle.roots, *(load_pem_certificates(trusted_pem) if trusted_pem else [])]
    )
    return EtcdTlsState(
        tuple(certificate_digest(r) for r in load_pem_certificates(trusted_pem))
        if trusted_pem
        else (),
        _issuer(everything, files.member_cert),
        _issuer(everything, files.client_cert),
    )


async def healthy_members(store: EtcdStore, members: Sequence[Any]) -> set[int]:
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


class EtcdTlsFollower:
    """Acts out ``etcd_tls_plan`` for one coordinator's embedded member (see module doc).

    ``reissue`` writes new member and client certificates from the CA's issuing root."""

    def __init__(
        self,
        ca: CertificateAuthority,
        files: EtcdTlsFiles,
        member: EtcdMember,
        store: EtcdStore,
        reissue: Callable[[], None],
    ) -> None:
        self.ca = ca
        self.files = files
        self.member = member
        self.store = store
        self.reissue = reissue
        self.restarts = 0
        self.reissues = 0
        self._restart_owed = False  # the file was rewritten but the restart failed

    async def renew(self) -> None:
        """New member and client certificates from the issuing root (with the coordinator's
        own renewal); never restarts the member."""
        await self._reissue()

    async def _reissue(self) -> None:
        self.reissue()
        self.reissues += 1
        await self.store.reload_tls(self.files.client_tls())
        log.info("etcd %s: certificates re-issued from the issuing root", self.member.config.name)

    async def follow(self, before_me: Sequence[str]) -> str:
        """Bring the member's TLS to the CA's; ``""`` when it is there, else why it waits."""
        running_with = self.files.ca_file.read_bytes() if self.files.ca_file.exists() else b""
        state = read_state(self.ca, self.files, running_with)
        plan = etcd_tls_plan(state, self.ca.trust_bundle.digests, self.ca.digest, before_me)
        if plan.reissue:
            await self._reissue()
        if not (plan.restart or self._restart_owed):
            return ""
        if plan.wait and not self._restart_owed:
            return plan.wait
        why, endpoints = await self._quorum_refusal()
        if why:
            return why
        from cloudless.security._files import write_private

        # the coordinator's own etcd client (and its lease keepers) move to the other
        # members while its own restarts, then come back to it first
        await self.store.reload_tls(self.files.client_tls(), [*endpoints[1:], endpoints[0]])

        write_private(self.files.ca_file, self.ca.trust_bundle.pem)
        self._restart_owed = True
        log.info(
            "etcd %s: restarting to trust the CA's roots (%s)",
            self.member.config.name,
            ", ".join(d[:16] for d in self.ca.trust_bundle.digests),
        )
        await self.member.restart()
        self._restart_owed = False
        self.restarts += 1
        await self.store.reload_tls(self.files.client_tls(), endpoints)
        return ""

    async def _quorum_refusal(self) -> tuple[str | None, list[str]]:
        """Why the member may not restart now (None: it may), and every member's client
        endpoint, this member's first."""
        from cloudless.store.etcd_admin import EtcdAdmin

        try:
            members = await EtcdAdmin(self.store).members()
        except StoreError as e:
            return f"etcd membership unknown ({e}): not restarting the member", []
        me = next((m for m in members if m.name == self.member.config.name), None)
        if me is None:
            why = f"etcd member {self.member.config.name} is not in the cluster's member list"
            return why, []
        healthy = await healthy_members(self.store, members)
        voters = [Voter(m.id, m.name or f"{m.id:x}", m.is_learner) for m in members]
        own = self.member.config.endpoint
        others = [u.split("://")[-1] for m in members if m is not me for u in m.client_urls[:1]]
        return restart_refusal(voters, healthy, me.id), [own, *(e for e in others if e != own)]
