"""The coordinator's side of enrolment: a join token plus a CSR in, a certificate out.

``enroll`` is the whole critical path, in an order that never burns a token on a bad request:

1. ``TokenManager.verify`` — format, cluster, signature, expiry, use, store state, bcrypt;
2. ``CertificateAuthority.check_csr`` — the CSR parses, its signature verifies, it names the
   identity being enrolled, its key is acceptable;
3. ``TokenManager.redeem`` — atomic mark-used (exactly one of concurrent callers wins);
4. sign.

Token use decides the identity: a ``node-enrollment`` token yields a ``node`` certificate for
the node id the caller asked for; a ``coordinator-join`` token yields a ``node`` certificate
too (a coordinator is a node) and may carry DNS/IP SANs for serving. Labels pinned in the
token come back so that the coordinator applies them (a node cannot choose them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cloudless.security.ca import CertificateAuthority, CertKind
from cloudless.security.identity import SpiffeId
from cloudless.security.keys import IpAddress
from cloudless.security.tokens import TokenManager, TokenUse


@dataclass(frozen=True)
class Enrollment:
    spiffe_id: SpiffeId
    cert_pem: bytes
    bundle_pem: bytes
    labels: dict[str, str]
    token_id: str


async def enroll(
    tokens: TokenManager,
    ca: CertificateAuthority,
    *,
    token: str,
    csr_pem: bytes,
    node_id: str,
    use: TokenUse = TokenUse.NODE_ENROLLMENT,
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[str | IpAddress] = (),
) -> Enrollment:
    sid = SpiffeId.node(node_id, ca.trust_domain)
    verified = await tokens.verify(token, use)
    ca.check_csr(csr_pem, sid)
    claims = await tokens.redeem(verified, consumer=sid.uri)
    cert = ca.sign_csr(csr_pem, sid, CertKind.NODE, dns_names=dns_names, ip_addresses=ip_addresses)
    return Enrollment(sid, cert, ca.bundle_pem, claims.labels, claims.token_id)
