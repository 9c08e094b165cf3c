"""Root rotation: begin (trust next) -> switch (next issues, old trusted) -> retire old."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cloudless.lib.clock import FakeClock
from cloudless.security.ca import DAY, CertificateAuthority
from cloudless.security.errors import CaPassphraseError, CaStateError, TokenForeignCluster
from cloudless.security.identity import SpiffeId
from cloudless.security.keys import make_csr, new_private_key
from cloudless.security.root_rotation import (
    begin_root_rotation,
    retire_root,
    rotation_status,
    switch_to_next_root,
)
from cloudless.security.rotation import renew_certificate
from cloudless.security.tls import Authorizer
from cloudless.security.tokens import InMemoryTokenStore, TokenManager, TokenUse
from tests.unit.security.helpers import cert, node_leaf


@pytest.fixture
def own_ca(ca_dir: Path, tmp_path: Path, clock: FakeClock) -> CertificateAuthority:
    d = tmp_path / "ca"
    shutil.copytree(ca_dir, d)
    return CertificateAuthority.load(d, clock=clock)


def allowed(ca: CertificateAuthority, pem: bytes) -> str:
    authz = Authorizer(ca.trust_bundle, trust_domain="cloudless", clock=ca.clock)
    return authz.authorize(pem).code


async def test_three_step_rotation(own_ca: CertificateAuthority, clock: FakeClock) -> None:
    ca = own_ca
    old_digest = ca.digest
    old_leaf = node_leaf(ca, "old")
    tm = TokenManager(ca, InMemoryTokenStore(), clock, bcrypt_cost=4)
    old_token = (await tm.create(TokenUse.NODE_ENROLLMENT)).token

    # 1. begin: next root trusted, old root still issues
    next_pem = begin_root_rotation(ca, root_key_size=2048)
    st = rotation_status(ca)
    assert st.issuing_digest == old_digest and st.next_digest is not None
    assert len(ca.trust_bundle.roots) == 2 and ca.digest == old_digest
    assert cert(node_leaf(ca, "a").cert_pem).issuer == cert(old_leaf.cert_pem).issuer
    with pytest.raises(CaStateError, match="already in progress"):
        begin_root_rotation(ca, root_key_size=2048)

    # 2. switch: next root issues; the old root's leaves still work
    clock.advance(DAY)
    switch_to_next_root(ca)
    assert ca.digest == st.next_digest and ca.ca_pem == next_pem
    new_leaf = node_leaf(ca, "new")
    assert cert(new_leaf.cert_pem).issuer == cert(next_pem).subject
    assert allowed(ca, old_leaf.cert_pem) == "ok" and allowed(ca, new_leaf.cert_pem) == "ok"
    assert rotation_status(ca).other_trusted == (old_digest,)
    # renewal moves an old leaf onto the new root
    sid = SpiffeId.node("old")
    renewed = renew_certificate(ca, old_leaf.cert_pem, make_csr(new_private_key(), sid))
    assert cert(renewed).issuer == cert(next_pem).subject
    # join tokens now pin the new root; one minted before the switch no longer works
    with pytest.raises(TokenForeignCluster):
        await tm.verify(old_token, TokenUse.NODE_ENROLLMENT)
    fresh = (await tm.create(TokenUse.NODE_ENROLLMENT)).token  # same manager, new root key
    assert (await tm.verify(fresh, TokenUse.NODE_ENROLLMENT)).ca_digest == ca.digest

    # state survives a reload at every step
    again = CertificateAuthority.load(ca.directory, clock=clock)
    assert again.digest == ca.digest and again.trust_bundle.digests == ca.trust_bundle.digests

    # 3. retire the old root: its remaining leaves are refused
    retire_root(ca, old_digest)
    assert allowed(ca, old_leaf.cert_pem) == "untrusted_certificate"
    assert allowed(ca, renewed) == "ok"
    assert CertificateAuthority.load(ca.directory).trust_bundle.digests == (ca.digest,)
    assert not (ca.directory / "trusted-roots.pem").exists()


def test_rotation_misuse(own_ca: CertificateAuthority) -> None:
    with pytest.raises(CaStateError, match="no root rotation in progress"):
        switch_to_next_root(own_ca)
    with pytest.raises(CaStateError, match="issuing root cannot be untrusted"):
        retire_root(own_ca, own_ca.digest)
    with pytest.raises(CaStateError, match="no extra trusted root"):
        retire_root(own_ca, "0" * 64)


def test_encrypted_next_root(own_ca: CertificateAuthority) -> None:
    begin_root_rotation(own_ca, root_key_size=2048, passphrase="pw")
    assert b"ENCRYPTED" in (own_ca.directory / "next-ca.key").read_bytes()

    with pytest.raises(CaPassphraseError):
        switch_to_next_root(own_ca)
    switch_to_next_root(own_ca, passphrase="pw")
    assert CertificateAuthority.load(own_ca.directory, passphrase="pw").digest == own_ca.digest


def test_authorizer_following_the_ca_sees_rotations(own_ca: CertificateAuthority) -> None:
    ca = own_ca
    authz = Authorizer(lambda: ca.trust_bundle, trust_domain="cloudless", clock=ca.clock)
    old_leaf = node_leaf(ca, "n1").cert_pem
    assert authz.authorize(old_leaf).allowed
    begin_root_rotation(ca, root_key_size=2048)
    old_digest = ca.digest
    switch_to_next_root(ca)
    new_leaf = node_leaf(ca, "n1").cert_pem
    assert authz.authorize(old_leaf).allowed and authz.authorize(new_leaf).allowed
    retire_root(ca, old_digest)
    assert authz.authorize(old_leaf).code == "untrusted_certificate"  # cache keyed by bundle
    assert authz.authorize(new_leaf).allowed
