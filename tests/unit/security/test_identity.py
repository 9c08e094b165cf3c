from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from cloudless.security.ca import CertificateAuthority, CertKind
from cloudless.security.errors import InvalidSpiffeId, MalformedCertificate
from cloudless.security.identity import SpiffeId
from tests.unit.security.helpers import T0, cert, forged_leaf

VALID = [
    # uri                                   td            kind               name
    ("spiffe://cloudless/node/n1", "cloudless", CertKind.NODE, "n1"),
    ("spiffe://cloudless/workload/web-1.a_b", "cloudless", CertKind.WORKLOAD, "web-1.a_b"),
    (
        "spiffe://prod.example.org/service/coordinator",
        "prod.example.org",
        CertKind.SERVICE,
        "coordinator",
    ),
    ("spiffe://cloudless/user/Alice", "cloudless", CertKind.USER, "Alice"),
]


@pytest.mark.parametrize(("uri", "td", "kind", "name"), VALID)
def test_parse_valid(uri: str, td: str, kind: CertKind, name: str) -> None:
    sid = SpiffeId.parse(uri)
    assert (sid.trust_domain, sid.kind, sid.name) == (td, kind, name)
    assert sid.uri == uri and str(sid) == uri


INVALID = [
    # uri                                     the rule it breaks (must appear in the message)
    ("", "empty"),
    ("https://cloudless/node/n1", "must start with 'spiffe://'"),
    ("spiffe://cloudless", "no path"),
    ("spiffe://cloudless/node", "exactly /<kind>/<name>"),
    ("spiffe://cloudless/node/a/b", "exactly /<kind>/<name>"),
    ("spiffe://cloudless/pod/n1", "kind 'pod'"),
    ("spiffe://Cloudless/node/n1", "trust domain"),
    ("spiffe://cloudless:8443/node/n1", "a port"),
    ("spiffe://cloudless/node/n1?x=1", "a query"),
    ("spiffe://cloudless/node/n1#f", "a fragment"),
    ("spiffe://u@cloudless/node/n1", "user info"),
    ("spiffe://cloudless/node/..", "name '..'"),
    ("spiffe://cloudless/node/", "name ''"),
    ("spiffe://cloudless/node/a b", "name 'a b'"),
    ("spiffe://" + "a" * 2050, "limit is 2048"),
]


@pytest.mark.parametrize(("uri", "why"), INVALID)
def test_parse_invalid(uri: str, why: str) -> None:
    with pytest.raises(InvalidSpiffeId) as exc:
        SpiffeId.parse(uri)
    assert why in str(exc.value)


def test_constructors_default_trust_domain() -> None:
    assert SpiffeId.node("n1").uri == "spiffe://cloudless/node/n1"
    assert SpiffeId.workload("w").uri == "spiffe://cloudless/workload/w"
    assert SpiffeId.service("etcd", td="prod").uri == "spiffe://prod/service/etcd"
    assert SpiffeId.user("bob").kind is CertKind.USER


def test_from_certificate_pem_der_and_object(ca: CertificateAuthority) -> None:
    sid = SpiffeId.node("n7")
    _, pem = ca.issue(sid, CertKind.NODE)
    c = cert(pem)

    for form in (pem, pem.decode(), c, c.public_bytes(Encoding.DER)):
        assert SpiffeId.from_certificate(form) == sid


def test_from_certificate_needs_exactly_one_spiffe_uri(ca: CertificateAuthority) -> None:
    key = ec.generate_private_key(ec.SECP256R1())

    def build(sans: list[x509.GeneralName] | None) -> x509.Certificate:
        b = (
            x509.CertificateBuilder()
            .subject_name(ca.root.subject)
            .issuer_name(ca.root.subject)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
            .not_valid_after(dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
        )
        if sans is not None:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return b.sign(key, hashes.SHA256())

    with pytest.raises(InvalidSpiffeId, match="no subjectAltName"):
        SpiffeId.from_certificate(build(None))
    with pytest.raises(InvalidSpiffeId, match="found 0"):
        SpiffeId.from_certificate(build([x509.DNSName("x")]))
    two = [
        x509.UniformResourceIdentifier("spiffe://cloudless/node/a"),
        x509.UniformResourceIdentifier("spiffe://cloudless/node/b"),
    ]
    with pytest.raises(InvalidSpiffeId, match="found 2"):
        SpiffeId.from_certificate(build(two))


def test_from_certificate_garbage() -> None:
    with pytest.raises(MalformedCertificate, match="could not be parsed"):
        SpiffeId.from_certificate(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")


def test_forged_leaf_helper_carries_identity(ca: CertificateAuthority) -> None:
    sid = SpiffeId.user("u")
    leaf = forged_leaf(ca, sid, not_before=T0, not_after=T0 + 10)
    assert SpiffeId.from_certificate(leaf.cert_pem) == sid
