"""The mTLS authorizer: given a peer certificate, allow or deny, always with a reason.

``Authorizer.authorize`` is pure apart from reading the injected clock and the shared
``RevocationList``. It never raises for a bad peer: it returns a ``Decision`` whose ``reason``
is user-facing and whose ``code`` is the ``SecurityError.code`` of the refusal, so logs and RPC
status details say *why* ("certificate_revoked: serial 1f… revoked at …: node removed").

Checks, in order (the first failure decides):

1. a certificate was presented at all                 (``no_certificate``)
2. ``verify.verify_static`` (trusted root, usage for the role, one SPIFFE ID; remembered
   per certificate) then ``verify.check_live`` (validity, trust domain, not revoked; every
   call)                                               (their error codes)
3. expected kind, e.g. only nodes may heartbeat       (``wrong_identity_kind``)
4. claimed identity: "only node X may speak as node X" (``identity_mismatch``)
5. an explicit allow-list, e.g. only the coordinator  (``not_allowed``)
6. extra rules: callables returning a deny reason or None
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from cloudless.lib.clock import Clock, SystemClock
from cloudless.security.bundle import TrustBundle
from cloudless.security.errors import PermissionDenied, SecurityError
from cloudless.security.identity import CertKind, SpiffeId, load_certificate
from cloudless.security.revocation import RevocationList
from cloudless.security.verify import Role, VerifiedPeer, check_live, verify_static

Rule = Callable[[VerifiedPeer], str | None]


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    code: str
    identity: SpiffeId | None = None
    peer: VerifiedPeer | None = None

    def require(self) -> SpiffeId:
        """The peer's identity, or ``PermissionDenied`` carrying the reason."""
        if not self.allowed or self.identity is None:
            raise PermissionDenied(f"permission denied: {self.reason}", reason_code=self.code)
        return self.identity

    def __bool__(self) -> bool:
        return self.allowed


def _deny(code: str, reason: str, sid: SpiffeId | None = None) -> Decision:
    return Decision(False, reason, code, sid)


class Authorizer:
    def __init__(
        self,
        bundle: TrustBundle | Callable[[], TrustBundle],
        *,
        trust_domain: str,
        revocations: RevocationList | None = None,
        clock: Clock | None = None,
        rules: Sequence[Rule] = (),
        cache_size: int = 4096,
    ) -> None:
        self.bundle = bundle
        self.trust_domain = trust_domain
        self.revocations = revocations if revocations is not None else RevocationList()
        self.clock: Clock = clock or SystemClock()
        self.rules = tuple(rules)
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[bytes, Role, tuple[str, ...]], VerifiedPeer] = OrderedDict()

    @property
    def bundle(self) -> TrustBundle:
        """The roots trusted right now: a fixed bundle, or read from a source on every call
        (e.g. ``lambda: ca.trust_bundle``, so root rotations apply without rewiring)."""
        src = self._bundle_source
        return src if isinstance(src, TrustBundle) else src()

    @bundle.setter
    def bundle(self, value: TrustBundle | Callable[[], TrustBundle]) -> None:
        self._bundle_source = value

    def authorize(
        self,
        cert: x509.Certificate | bytes | str | None,
        *,
        role: Role = Role.CLIENT,
        expected_kind: CertKind | Collection[CertKind] | None = None,
        claimed: SpiffeId | None = None,
        allowed: Collection[SpiffeId] | None = None,
    ) -> Decision:
        if cert is None:
            return _deny(
                "no_certificate",
                "the peer presented no certificate: connect with mutual TLS using a Cloudless "
                "certificate",
            )
        try:
            peer = self._static(cert, role)
            check_live(
                peer,
                self.clock.now(),
                trust_domain=self.trust_domain,
                revocations=self.revocations,
            )
        except SecurityError as exc:
            return _deny(exc.code, exc.message)
        sid = peer.spiffe_id
        kinds = _kinds(expected_kind)
        if kinds and sid.kind not in kinds:
            want = " or ".join(sorted(k.value for k in kinds))
            return _deny(
                "wrong_identity_kind",
                f"{sid} is a {sid.kind.value}; only a {want} may do this",
                sid,
            )
        if claimed is not None and claimed != sid:
            return _deny(
                "identity_mismatch",
                f"{sid} may not act as {claimed}: a peer speaks only for itself",
                sid,
            )
        if allowed is not None and sid not in allowed:
            return _deny("not_allowed", f"{sid} is not among the identities allowed here", sid)
        for rule in self.rules:
            why = rule(peer)
            if why:
                return _deny("policy", why, sid)
        return Decision(True, f"{sid} verified", "ok", sid, peer)

    def _static(self, cert: x509.Certificate | bytes | str, role: Role) -> VerifiedPeer:
        """``verify_static``, remembered per (certificate bytes, role, bundle) in a small LRU.

        The signature check against an RSA-4096 root dominates an authorization; a peer
        presents the same certificate on every RPC, so it is done once per certificate.
        Validity, trust domain and revocation are still checked on every call.
        """
        if isinstance(cert, x509.Certificate):
            raw = cert.fingerprint(hashes.SHA256())
        else:
            raw = cert.encode() if isinstance(cert, str) else bytes(cert)
        bundle = self.bundle
        key = (raw, role, bundle.digests)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        peer = verify_static(load_certificate(cert), bundle, role)
        self._cache[key] = peer
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return peer


def _kinds(expected: CertKind | Collection[CertKind] | None) -> frozenset[CertKind]:
    if expected is None:
        return frozenset()
    if isinstance(expected, CertKind):
        return frozenset({expected})
    return frozenset(expected)
