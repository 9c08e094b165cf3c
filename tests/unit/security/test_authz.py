"""Authorizer decisions over a table of peers; each "no" carries its code and reason."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from cryptography import x509

from cloudless.lib.clock import FakeClock
from cloudless.security.ca import DAY, CertificateAuthority, CertKind
from cloudless.security.errors import PermissionDenied
from cloudless.security.identity import SpiffeId
from cloudless.security.revocation import RevocationList
from cloudless.security.tls import Authorizer
from cloudless.security.verify import Role
from tests.unit.security.helpers import CLIENT_ONLY, SERVER_ONLY, cert, forged_leaf, node_leaf


@dataclass
class World:
    ca: CertificateAuthority
    foreign: CertificateAuthority
    clock: FakeClock
    revocations: RevocationList
    authz: Authorizer


@pytest.fixture
def world(ca: CertificateAuthority, foreign_ca: CertificateAuthority, clock: FakeClock) -> World:
    rl = RevocationList()
    authz = Authorizer(ca.trust_bundle, trust_domain="cloudless", revocations=rl, clock=clock)
    return World(ca, foreign_ca, clock, rl, authz)


N1 = SpiffeId.node("n1")


def _node(w: World) -> bytes:
    return node_leaf(w.ca, "n1").cert_pem


def _foreign(w: World) -> bytes:
    return node_leaf(w.foreign, "n1").cert_pem


def _expired(w: World) -> bytes:
    pem = _node(w)
    w.clock.advance(366 * DAY)  # 1-year leaf, 366 days later
    return pem


def _not_yet_valid(w: World) -> bytes:
    now = w.clock.now()
    return forged_leaf(
        w.ca, N1, eku=CLIENT_ONLY, not_before=now + 3600, not_after=now + DAY
    ).cert_pem


def _revoked_serial(w: World) -> bytes:
    pem = _node(w)
    w.revocations.revoke_certificate(pem, reason="key leaked", at=w.clock.now())
    return pem


def _revoked_identity(w: World) -> bytes:
    pem = _node(w)
    w.clock.advance(60)
    w.revocations.revoke_identity(N1, reason="node removed", at=w.clock.now())
    return pem


def _server_only(w: World) -> bytes:
    now = w.clock.now()
    return forged_leaf(w.ca, N1, eku=SERVER_ONLY, not_before=now - 10, not_after=now + DAY).cert_pem


def _no_eku(w: World) -> bytes:
    now = w.clock.now()
    return forged_leaf(w.ca, N1, eku=None, not_before=now - 10, not_after=now + DAY).cert_pem


def _other_node(w: World) -> bytes:
    return node_leaf(w.ca, "n2").cert_pem


def _user(w: World) -> bytes:
    return w.ca.issue(SpiffeId.user("alice"), CertKind.USER)[1]


def _other_domain(w: World) -> bytes:
    # a CA for trust domain "prod", trusted by the bundle, still is not *our* trust domain
    other = w.foreign
    w.authz.bundle = w.authz.bundle.with_root(other.root)
    now = w.clock.now()
    return forged_leaf(
        other, SpiffeId.node("n1", "prod"), eku=CLIENT_ONLY, not_before=now - 1, not_after=now + 99
    ).cert_pem


CASES: list[tuple[str, Callable[[World], bytes], Role, str, str]] = [
    # case, peer certificate, role, code, reason contains
    ("valid node client", _node, Role.CLIENT, "ok", "verified"),
    ("valid node server", _node, Role.SERVER, "ok", "verified"),
    ("foreign CA", _foreign, Role.CLIENT, "untrusted_certificate", "not issued by this cluster"),
    ("expired", _expired, Role.CLIENT, "certificate_expired", "expired 86400s ago"),
    # notAfter = issue + 365 d (back-dating moves only notBefore); 366 d - 365 d = 86400 s
    ("not yet valid", _not_yet_valid, Role.CLIENT, "certificate_not_yet_valid", "3600s"),
    ("revoked serial", _revoked_serial, Role.CLIENT, "certificate_revoked", "key leaked"),
    ("revoked identity", _revoked_identity, Role.CLIENT, "certificate_revoked", "node removed"),
    ("server-only as client", _server_only, Role.CLIENT, "wrong_key_usage", "needs clientAuth"),
    ("no EKU", _no_eku, Role.CLIENT, "wrong_key_usage", "no extendedKeyUsage"),
    ("user as server", _user, Role.SERVER, "wrong_key_usage", "client-only"),
    ("other node claims n1", _other_node, Role.CLIENT, "identity_mismatch", "may not act as"),
    ("user claims n1", _user, Role.CLIENT, "wrong_identity_kind", "is a user; only a node"),
    ("other trust domain", _other_domain, Role.CLIENT, "trust_domain_mismatch", "'prod'"),
]


@pytest.mark.parametrize(("case", "make", "role", "code", "why"), CASES, ids=[c[0] for c in CASES])
def test_authorize_table(
    world: World, case: str, make: Callable[[World], bytes], role: Role, code: str, why: str
) -> None:
    pem = make(world)
    d = world.authz.authorize(pem, role=role, expected_kind=CertKind.NODE, claimed=N1)
    assert (d.allowed, d.code) == (code == "ok", code), d.reason
    assert why in d.reason
    if d.allowed:
        assert d.require() == N1
    else:
        with pytest.raises(PermissionDenied) as exc:
            d.require()
        assert exc.value.reason_code == code


def test_no_certificate(world: World) -> None:
    d = world.authz.authorize(None)
    assert not d and d.code == "no_certificate"


def test_allow_list_and_rules(world: World) -> None:
    coord = SpiffeId.service("coordinator")
    _, pem = world.ca.issue(coord, CertKind.SERVICE)
    assert world.authz.authorize(pem, allowed={coord}).allowed
    d = world.authz.authorize(_node(world), allowed={coord})
    assert (d.allowed, d.code) == (False, "not_allowed")
    strict = Authorizer(
        world.ca.trust_bundle,
        trust_domain="cloudless",
        clock=world.clock,
        rules=[lambda p: "maintenance window" if p.spiffe_id.kind is CertKind.NODE else None],
    )
    d = strict.authorize(_node(world))
    assert (d.allowed, d.code, d.reason) == (False, "policy", "maintenance window")


def test_two_roots_in_bundle_both_verify(world: World) -> None:
    both = world.ca.trust_bundle.with_root(world.foreign.root)
    authz = Authorizer(both, trust_domain="cloudless", clock=world.clock)
    for pem in (_node(world), _foreign(world)):
        d = authz.authorize(pem, claimed=N1)
        assert d.allowed, d.reason
    assert d.peer is not None and d.peer.root_digest == world.foreign.digest


def test_revocation_takes_effect_on_next_check(world: World) -> None:
    pem = _node(world)
    assert world.authz.authorize(pem).allowed
    world.revocations.revoke_identity(N1, reason="node removed", at=world.clock.now())
    assert world.authz.authorize(pem).code == "certificate_revoked"
    # a node re-enrolled under the same id after the removal gets a working certificate
    world.clock.advance(1)
    assert world.authz.authorize(_node(world)).allowed
    assert cert(pem).serial_number  # sanity: real certificate


def test_garbage_certificate_is_denied_not_raised(world: World) -> None:
    d = world.authz.authorize(b"garbage")
    assert (d.allowed, d.code) == (False, "malformed_certificate")
    assert isinstance(cert(_node(world)), x509.Certificate)


def test_cached_verification_still_rechecks_time_and_bundle(world: World) -> None:
    pem = _node(world)
    assert world.authz.authorize(pem).allowed
    assert world.authz.authorize(pem).allowed  # second call: signature check from the cache
    world.clock.advance(366 * DAY)
    assert world.authz.authorize(pem).code == "certificate_expired"

    foreign = node_leaf(world.foreign, "n1").cert_pem
    assert world.authz.authorize(foreign).code == "untrusted_certificate"
    original = world.authz.bundle
    world.authz.bundle = original.with_root(world.foreign.root)
    assert world.authz.authorize(foreign).allowed
    world.authz.bundle = original  # the foreign root is dropped again: refused again
    assert world.authz.authorize(foreign).code == "untrusted_certificate"


def test_cache_is_bounded(world: World) -> None:
    authz = Authorizer(
        world.ca.trust_bundle, trust_domain="cloudless", clock=world.clock, cache_size=2
    )
    for n in ("a", "b", "c"):
        assert authz.authorize(node_leaf(world.ca, n).x509).allowed
    assert len(authz._cache) == 2
