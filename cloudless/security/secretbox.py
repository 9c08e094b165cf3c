"""Secrets at rest: AES-256-GCM under a cluster key that is never written to the store.

The key of generation ``g`` is derived from the cluster's root CA key (HKDF-SHA256, info
``cloudless/secrets/v1/<g>``), which every coordinator holds and nothing else does: no new
key has to be distributed to coordinators that join, and a store backup alone reveals nothing.
Rotation moves to generation ``g + 1`` and re-seals every secret (``reseal``); a sealed value
names its generation, so values sealed under an older one still open during the rotation.
The secret's name is the associated data: a sealed value moved to another name fails to open.

A rotation of the root CA key itself changes every generation's key: re-seal the secrets with
the old CA still loaded before replacing it (not automated).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cloudless.lib.errors import CloudlessError, ValidationError
from cloudless.model.secrets import MAX_SECRET_BYTES

KeyFor = Callable[[int], bytes]  # generation -> 32-byte key


class SecretUnreadable(CloudlessError):
    code = "secret_unreadable"


@dataclass(frozen=True)
class Sealed:
    """What the store holds for a secret: no plaintext, no key."""

    name: str
    generation: int
    nonce: bytes
    ciphertext: bytes
    size: int  # plaintext bytes (shown to users; the value never is)
    version: int = 1
    created_at: float = 0.0
    updated_at: float = 0.0
    type: str = "opaque"  # or "registry": credentials for image pulls (model.registry_auth)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "name": self.name,
            "generation": self.generation,
            "nonce": base64.b64encode(self.nonce).decode(),
            "ciphertext": base64.b64encode(self.ciphertext).decode(),
            "size": self.size,
            "version": self.version,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sealed:
        return cls(
            name=str(d["name"]),
            generation=int(d["generation"]),
            nonce=base64.b64decode(d["nonce"]),
            ciphertext=base64.b64decode(d["ciphertext"]),
            size=int(d.get("size", 0)),
            version=int(d.get("version", 1)),
            created_at=float(d.get("created_at", 0.0)),
            updated_at=float(d.get("updated_at", 0.0)),
            type=str(d.get("type", "opaque")),
        )

    def metadata(self) -> dict[str, Any]:
        """What the API shows: everything but the sealed bytes."""
        return {
            "name": self.name,
            "type": self.type,
            "size": self.size,
            "version": self.version,
            "generation": self.generation,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


class SecretBox:
    def __init__(self, key_for: KeyFor, generation: int = 1) -> None:
        self.key_for = key_for
        self.generation = generation

    def seal(self, name: str, value: bytes, *, version: int = 1, now: float = 0.0) -> Sealed:
        if len(value) > MAX_SECRET_BYTES:
            raise ValidationError(
                f"secret {name!r}: {len(value)} bytes, at most {MAX_SECRET_BYTES} (64 KiB)"
            )
        nonce = os.urandom(12)
        ct = AESGCM(self.key_for(self.generation)).encrypt(nonce, value, name.encode())
        return Sealed(name, self.generation, nonce, ct, len(value), version, now, now)

    def open(self, s: Sealed) -> bytes:
        try:
            return AESGCM(self.key_for(s.generation)).decrypt(
                s.nonce, s.ciphertext, s.name.encode()
            )
        except (InvalidTag, ValueError):
            raise SecretUnreadable(
                f"secret {s.name!r} cannot be decrypted with this cluster's key (generation "
                f"{s.generation}); it was sealed by another cluster or tampered with"
            ) from None

    def reseal(self, s: Sealed, now: float = 0.0) -> Sealed:
        """``s`` under the current generation (same version: the value did not change)."""
        new = self.seal(s.name, self.open(s), version=s.version, now=now)
        return replace(
            s, generation=new.generation, nonce=new.nonce, ciphertext=new.ciphertext, updated_at=now
        )
