"""A node's own Nebula key pair: made on the node, only the public key leaves it.

Nebula keys are X25519, written in Nebula's PEM blocks (what ``nebula-cert keygen`` writes)::

    -----BEGIN NEBULA X25519 PRIVATE KEY-----   32 raw bytes, base64
    -----BEGIN NEBULA X25519 PUBLIC KEY-----    32 raw bytes, base64

``NodeKey(directory).ensure()`` makes the pair once (``node.key`` mode 0600, ``node.pub``) and
returns the public PEM, which the agent sends in its facts (enrollment and every hello); the
coordinator signs a certificate for it (``nebula-cert sign -in-pub``) and sends back the
certificate only. ``public_key_problem`` is the check both ends apply to a public key text: a
malformed key is refused at enrollment naming ``facts.nebula_public_key``.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from cloudless.network.errors import NetworkEdgeError

PUBLIC_BANNER = "NEBULA X25519 PUBLIC KEY"
PRIVATE_BANNER = "NEBULA X25519 PRIVATE KEY"
MAX_PEM = 200  # a 32-byte key is 114 characters with its banners
_BLOCK = re.compile(
    r"\A\s*-----BEGIN (?P<b>[A-Z0-9 ]+)-----\s*(?P<body>[A-Za-z0-9+/=\s]*?)\s*"
    r"-----END (?P=b)-----\s*\Z"
)


def pem(banner: str, raw: bytes) -> str:
    return f"-----BEGIN {banner}-----\n{base64.b64encode(raw).decode()}\n-----END {banner}-----\n"


def _raw(text: str, banner: str) -> bytes | str:
    """The 32 key bytes, or why ``text`` is not one ``banner`` block holding them."""
    if len(text) > MAX_PEM:
        return f"{len(text)} characters; a Nebula key is one short PEM block"
    m = _BLOCK.match(text)
    if m is None:
        return f"not a PEM block (expected -----BEGIN {banner}-----)"
    if m["b"] != banner:
        return f"a {m['b']} block; expected a {banner}"
    try:
        raw = base64.b64decode("".join(m["body"].split()), validate=True)
    except (binascii.Error, ValueError):
        return "the key is not valid base64"
    if len(raw) != 32:
        return f"the key is {len(raw)} bytes; an X25519 key is 32"
    if raw == bytes(32):
        return "the key is all zeros"
    return raw


def public_key_problem(text: str) -> str | None:
    """Why ``text`` is not a Nebula X25519 public key (PEM), or None."""
    got = _raw(text, PUBLIC_BANNER)
    return got if isinstance(got, str) else None


def _public_raw(private_raw: bytes) -> bytes:
    key = X25519PrivateKey.from_private_bytes(private_raw)
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def make_keypair() -> tuple[str, str]:
    """``(private PEM, public PEM)`` of a new X25519 key."""
    key = X25519PrivateKey.generate()
    private_raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return pem(PRIVATE_BANNER, private_raw), pem(PUBLIC_BANNER, _public_raw(private_raw))


class NodeKey:
    """The node's Nebula key pair in ``directory`` (see the module docstring)."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.key = self.dir / "node.key"
        self.pub = self.dir / "node.pub"

    def ensure(self) -> str:
        """The public key PEM, making the pair if there is none (blocking file I/O). A pair
        whose halves do not match is an error naming the files (not silently replaced: the
        node's certificate is bound to it)."""
        if not self.key.exists():
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            private, public = make_keypair()
            _write(self.key, private, 0o600)
            _write(self.pub, public, 0o644)
            return public
        got = _raw(self.key.read_text(), PRIVATE_BANNER)
        if isinstance(got, str):
            raise NetworkEdgeError(f"{self.key}: {got}; delete it (and {self.pub}) to make anew")
        public = pem(PUBLIC_BANNER, _public_raw(got))
        if not self.pub.exists() or self.pub.read_text() != public:
            _write(self.pub, public, 0o644)  # the public half follows from the private one
        return public


def _write(path: Path, text: str, mode: int) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
