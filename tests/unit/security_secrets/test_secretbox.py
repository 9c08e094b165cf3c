"""Sealing secrets: AES-GCM under a key derived from the root CA key, by generation."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from cloudless.lib.errors import ValidationError
from cloudless.security.secretbox import Sealed, SecretBox, SecretUnreadable


def keys(seed: bytes) -> dict[int, bytes]:
    return {g: bytes([g]) * 16 + seed[:16].ljust(16, b"\0") for g in range(1, 5)}


def test_seal_open_and_nothing_in_clear() -> None:
    box = SecretBox(keys(b"cluster-a").__getitem__)
    s = box.seal("db-pass", b"hunter2", now=5.0)
    stored = json.dumps(s.to_dict())
    assert "hunter2" not in stored and "aHVudGVyMg" not in stored  # not even base64 of it
    assert s.size == 7 and s.generation == 1
    assert box.open(Sealed.from_dict(json.loads(stored))) == b"hunter2"
    assert "ciphertext" not in s.metadata() and "nonce" not in s.metadata()


def test_another_cluster_or_another_name_cannot_open() -> None:
    a = SecretBox(keys(b"cluster-a").__getitem__)
    b = SecretBox(keys(b"cluster-b").__getitem__)
    s = a.seal("db-pass", b"hunter2")
    with pytest.raises(SecretUnreadable, match="sealed by another cluster or tampered with"):
        b.open(s)
    with pytest.raises(SecretUnreadable):
        a.open(replace(s, name="other"))  # the name is the associated data
    with pytest.raises(SecretUnreadable):
        a.open(replace(s, ciphertext=s.ciphertext[:-1] + bytes([s.ciphertext[-1] ^ 1])))


def test_rotation_reseals_under_the_new_generation() -> None:
    k = keys(b"cluster-a")
    old = SecretBox(k.__getitem__, generation=1).seal("db-pass", b"hunter2", version=3)
    new_box = SecretBox(k.__getitem__, generation=2)
    assert new_box.open(old) == b"hunter2"  # old generation still opens during rotation
    resealed = new_box.reseal(old, now=9.0)
    assert (resealed.generation, resealed.version, resealed.updated_at) == (2, 3, 9.0)
    assert SecretBox(lambda g: k[2] if g == 2 else b"\0" * 32, 2).open(resealed) == b"hunter2"


def test_size_limit() -> None:
    box = SecretBox(keys(b"x").__getitem__)
    box.seal("big", b"x" * 65536)  # exactly 64 KiB is allowed
    with pytest.raises(ValidationError, match="65537 bytes, at most 65536"):
        box.seal("big", b"x" * 65537)


def test_ca_derives_distinct_keys_per_generation(tmp_path: object) -> None:
    from cloudless.security.ca import CertificateAuthority

    ca = CertificateAuthority.init(tmp_path, "test.local", root_key_size=2048)  # type: ignore[arg-type]
    k1, k2 = ca.secrets_key(1), ca.secrets_key(2)
    assert len(k1) == 32 and k1 != k2 and ca.secrets_key(1) == k1
    assert k1 != ca.token_signing_key()
