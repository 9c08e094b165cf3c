"""End to end over loopback TLS: a device joins with a token, then speaks mTLS.

A test-only line protocol stands in for the coordinator's API (which is not ours):
``CA`` -> the root PEM; ``ENROLL <node-id> <token>`` + CSR PEM -> certificate + bundle.
The device fetches the CA on an unverified connection, checks it against the digest pinned
in its token, and only then sends the token, over a connection that trusts just that root.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cloudless.lib.clock import SystemClock
from cloudless.security.ca import CertificateAuthority, CertKind
from cloudless.security.credentials import Credentials
from cloudless.security.enrollment import enroll
from cloudless.security.errors import CaDigestMismatch, SecurityError
from cloudless.security.identity import SpiffeId
from cloudless.security.keys import make_csr, new_private_key
from cloudless.security.tls import (
    Authorizer,
    authorized_handler,
    client_ssl_context,
    enrolment_ssl_context,
    first_contact_ssl_context,
    server_ssl_context,
)
from cloudless.security.tokens import InMemoryTokenStore, TokenManager, TokenUse, pinned_ca

END = b"-----END CERTIFICATE-----\n"


@dataclass
class Coordinator:
    ca: CertificateAuthority
    tokens: TokenManager
    bootstrap_port: int = 0
    mtls_port: int = 0
    tokens_received: list[str] = field(default_factory=list)

    async def bootstrap(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = (await reader.readline()).decode().split()
        if line == ["CA"]:
            writer.write(self.ca.ca_pem)
        elif line and line[0] == "ENROLL":
            node_id, token = line[1], line[2]
            self.tokens_received.append(token)
            csr = await reader.readuntil(b"-----END CERTIFICATE REQUEST-----\n")
            try:
                e = await enroll(self.tokens, self.ca, token=token, csr_pem=csr, node_id=node_id)
                writer.write(e.cert_pem + e.bundle_pem)
            except SecurityError as exc:
                writer.write(f"ERROR {exc.code}: {exc}\n".encode())
        await writer.drain()
        writer.close()

    async def hello(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, who: SpiffeId
    ) -> None:
        writer.write(f"hello {who}\n".encode())
        await writer.drain()
        writer.close()


async def _serve(coord: Coordinator, ca: CertificateAuthority) -> AsyncIterator[Coordinator]:
    key, cert = ca.issue(SpiffeId.service("coordinator"), CertKind.SERVICE, dns_names=["localhost"])
    boot_ctx = server_ssl_context(cert, key, ca.bundle_pem, require_client_cert=False)
    mtls_ctx = server_ssl_context(cert, key, ca.bundle_pem)
    authz = Authorizer(ca.trust_bundle, trust_domain=ca.trust_domain)
    boot = await asyncio.start_server(coord.bootstrap, "127.0.0.1", 0, ssl=boot_ctx)
    mtls = await asyncio.start_server(
        authorized_handler(coord.hello, authz, expected_kind=CertKind.NODE),
        "127.0.0.1",
        0,
        ssl=mtls_ctx,
    )
    coord.bootstrap_port = boot.sockets[0].getsockname()[1]
    coord.mtls_port = mtls.sockets[0].getsockname()[1]
    async with boot, mtls:
        yield coord


@pytest.fixture
async def coordinator(tmp_path: Path) -> AsyncIterator[Coordinator]:
    ca = CertificateAuthority.init(tmp_path / "ca", clock=SystemClock(), root_key_size=2048)
    tm = TokenManager(ca, InMemoryTokenStore(), SystemClock(), bcrypt_cost=4)
    async for c in _serve(Coordinator(ca, tm), ca):
        yield c


async def _request(port: int, ctx: ssl.SSLContext, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    writer.write(payload)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data


async def join(port: int, token: str, node_id: str) -> Credentials:
    """The device's side of joining."""
    served = await _request(port, first_contact_ssl_context(), b"CA\n")
    root = pinned_ca(token, served)  # raises before the token is ever sent
    key = new_private_key()
    csr = make_csr(key, SpiffeId.node(node_id))
    reply = await _request(
        port, enrolment_ssl_context(root), f"ENROLL {node_id} {token}\n".encode() + csr
    )
    if reply.startswith(b"ERROR"):
        raise RuntimeError(reply.decode())
    cert, _, bundle = reply.partition(END)
    return Credentials(key, cert + END, bundle)


async def test_join_then_speak_mtls(coordinator: Coordinator, tmp_path: Path) -> None:
    token = (await coordinator.tokens.create(TokenUse.NODE_ENROLLMENT)).token
    creds = await join(coordinator.bootstrap_port, token, "pi4")
    creds.save(tmp_path / "node")
    creds = Credentials.load(tmp_path / "node")
    assert creds.spiffe_id == SpiffeId.node("pi4")
    ctx = client_ssl_context(creds.cert_pem, creds.key_pem, creds.bundle_pem)
    reply = await _request(coordinator.mtls_port, ctx, b"")
    assert reply == b"hello spiffe://cloudless/node/pi4\n"
    # the token is spent
    with pytest.raises(RuntimeError, match="token_already_used"):
        await join(coordinator.bootstrap_port, token, "pi5")


async def test_impostor_coordinator_never_sees_the_token(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    token = (await coordinator.tokens.create(TokenUse.NODE_ENROLLMENT)).token
    fake_ca = CertificateAuthority.init(tmp_path / "evil", clock=SystemClock(), root_key_size=2048)
    evil = Coordinator(fake_ca, TokenManager(fake_ca, InMemoryTokenStore(), SystemClock()))
    async for impostor in _serve(evil, fake_ca):
        with pytest.raises(CaDigestMismatch, match="nothing was sent"):
            await join(impostor.bootstrap_port, token, "pi4")
    assert evil.tokens_received == []
