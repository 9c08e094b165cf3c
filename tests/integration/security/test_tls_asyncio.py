"""Real TLS handshakes over loopback with asyncio streams and our SSL contexts."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import AsyncIterator

import pytest

from cloudless.security.ca import CertKind
from cloudless.security.errors import PermissionDenied
from cloudless.security.identity import SpiffeId
from cloudless.security.tls import (
    Decision,
    authorized_handler,
    client_ssl_context,
    open_mtls_connection,
    peer_certificate_from_ssl,
    peer_identity_from_ssl,
    server_ssl_context,
)
from tests.integration.security.conftest import Pki
from tests.unit.security.helpers import Leaf


class Server:
    def __init__(self, pki: Pki) -> None:
        self.pki = pki
        self.authz = pki.authorizer()
        self.denied: list[Decision] = []
        self.handshakes = 0  # connections whose TLS handshake completed
        self.port = 0

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, who: SpiffeId
    ) -> None:
        # protocol: the client names the node it speaks for; only node X may speak as node X
        claimed = (await reader.readline()).decode().strip()
        cert = peer_certificate_from_ssl(writer.get_extra_info("ssl_object"))
        d = self.authz.authorize(cert, claimed=SpiffeId.node(claimed))
        if d.allowed:
            version = writer.get_extra_info("ssl_object").version()
            writer.write(f"OK {who} {version}\n".encode())
        else:
            self.denied.append(d)
            writer.write(f"DENY {d.code}\n".encode())
        await writer.drain()
        writer.close()


@pytest.fixture
async def server(pki: Pki) -> AsyncIterator[Server]:
    s = Server(pki)
    ctx = server_ssl_context(pki.server.cert_pem, pki.server.key_pem, pki.ca.bundle_pem)
    handler = authorized_handler(
        s.handle, s.authz, expected_kind=CertKind.NODE, on_deny=s.denied.append
    )

    async def counting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        s.handshakes += 1
        await handler(reader, writer)

    srv = await asyncio.start_server(counting, "127.0.0.1", 0, ssl=ctx)
    s.port = srv.sockets[0].getsockname()[1]
    async with srv:
        yield s


async def exchange(port: int, ctx: ssl.SSLContext, claimed: str = "n1") -> str:
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost"), 5
        )
        writer.write(f"{claimed}\n".encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        return line.decode().strip() or "EOF"
    except (ssl.SSLError, ConnectionError) as exc:
        return f"ERR {exc}"


REFUSED = ("EOF", "ERR")  # asyncio's server closes without flushing the TLS alert
CASES = [
    # client certificate, what the client sees, handshake completed?, server-side deny code
    ("valid", ("OK spiffe://cloudless/node/n1 TLSv1.3",), True, None),
    ("foreign CA", REFUSED, False, None),
    ("expired", REFUSED, False, None),
    ("wrong key usage", REFUSED, False, None),  # serverAuth-only certificate used as a client
    ("revoked", ("EOF",), True, "certificate_revoked"),  # handshake ok, authorizer closes
    ("other node claims n1", ("DENY identity_mismatch",), True, "identity_mismatch"),
]


@pytest.mark.parametrize(("case", "seen", "shook", "code"), CASES, ids=[c[0] for c in CASES])
async def test_asyncio_mtls(
    pki: Pki, server: Server, case: str, seen: tuple[str, ...], shook: bool, code: str | None
) -> None:
    leaf = pki.clients[case]
    ctx = client_ssl_context(leaf.cert_pem, leaf.key_pem, pki.ca.bundle_pem)
    got = await exchange(server.port, ctx)
    assert got.startswith(seen), got
    assert server.handshakes == int(shook)
    assert [d.code for d in server.denied] == ([code] if code else [])


def _server_side_refusal(pki: Pki, leaf: Leaf) -> str:
    """Run one blocking TLS server handshake and return why OpenSSL refused the client."""
    sctx = server_ssl_context(pki.server.cert_pem, pki.server.key_pem, pki.ca.bundle_pem)
    cctx = client_ssl_context(leaf.cert_pem, leaf.key_pem, pki.ca.bundle_pem)
    result: list[str] = []
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        port = lsock.getsockname()[1]

        def serve() -> None:
            conn, _ = lsock.accept()
            try:
                with sctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(16)
                    result.append("accepted")
            except ssl.SSLCertVerificationError as exc:
                result.append(str(exc.verify_message))
            except (ssl.SSLError, OSError) as exc:
                result.append(f"other: {exc}")

        t = threading.Thread(target=serve)
        t.start()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)) as raw:
            with cctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"n1\n")
                tls.recv(16)
        t.join(10)
    return result[0]


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("foreign CA", "unable to get local issuer certificate"),
        ("expired", "certificate has expired"),
        ("wrong key usage", "unsuitable certificate purpose"),
        ("valid", "accepted"),
    ],
)
def test_handshake_refusal_names_the_cause(pki: Pki, case: str, why: str) -> None:
    assert _server_side_refusal(pki, pki.clients[case]) == why


async def test_tls12_still_accepted(pki: Pki, server: Server) -> None:
    leaf = pki.clients["valid"]
    ctx = client_ssl_context(leaf.cert_pem, leaf.key_pem, pki.ca.bundle_pem)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    assert await exchange(server.port, ctx) == "OK spiffe://cloudless/node/n1 TLSv1.2"


async def test_no_client_certificate_is_refused(pki: Pki, server: Server) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=pki.ca.bundle_pem.decode())
    ctx.check_hostname = False
    assert (await exchange(server.port, ctx)).startswith(("ERR", "EOF"))


async def test_revocation_applies_to_the_next_connection(pki: Pki, server: Server) -> None:
    leaf = pki.ca.issue(SpiffeId.node("n9"), CertKind.NODE)
    ctx = client_ssl_context(leaf[1], leaf[0], pki.ca.bundle_pem)
    assert (await exchange(server.port, ctx, "n9")).startswith("OK")
    pki.revocations.revoke_identity(SpiffeId.node("n9"), reason="removed", at=pki.ca.clock.now())
    assert await exchange(server.port, ctx, "n9") == "EOF"
    assert server.denied[-1].code == "certificate_revoked"


async def test_client_checks_server_identity(pki: Pki, server: Server) -> None:
    leaf = pki.clients["valid"]
    ctx = client_ssl_context(leaf.cert_pem, leaf.key_pem, pki.ca.bundle_pem)
    authz = pki.authorizer()
    coord = SpiffeId.service("coordinator")
    _, w, who = await open_mtls_connection("127.0.0.1", server.port, ctx, authz, expect=coord)
    assert who == coord and peer_identity_from_ssl(w.get_extra_info("ssl_object")) == coord
    w.close()
    with pytest.raises(PermissionDenied, match="not among the identities allowed"):
        await open_mtls_connection(
            "127.0.0.1", server.port, ctx, authz, expect=SpiffeId.service("impostor")
        )


async def test_client_rejects_server_with_client_only_certificate(pki: Pki) -> None:
    # a user certificate (clientAuth only) cannot serve: the client's handshake refuses it
    key, cert = pki.ca.issue(SpiffeId.user("mallory"), CertKind.USER)
    srv = await asyncio.start_server(
        lambda r, w: w.close(),
        "127.0.0.1",
        0,
        ssl=server_ssl_context(cert, key, pki.ca.bundle_pem),
    )
    port = srv.sockets[0].getsockname()[1]
    leaf = pki.clients["valid"]
    async with srv:
        got = await exchange(
            port, client_ssl_context(leaf.cert_pem, leaf.key_pem, pki.ca.bundle_pem)
        )
    assert got.startswith("ERR") and "unsuitable certificate purpose" in got, got


async def test_open_connection_is_closed_when_the_node_is_removed(pki: Pki) -> None:
    authz = pki.authorizer()
    denied: list[Decision] = []

    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter, who: SpiffeId) -> None:
        while line := await r.readline():
            w.write(line)
            await w.drain()

    ctx = server_ssl_context(pki.server.cert_pem, pki.server.key_pem, pki.ca.bundle_pem)
    srv = await asyncio.start_server(
        authorized_handler(echo, authz, on_deny=denied.append), "127.0.0.1", 0, ssl=ctx
    )
    port = srv.sockets[0].getsockname()[1]
    n6 = SpiffeId.node("n6")
    key, cert = pki.ca.issue(n6, CertKind.NODE)
    async with srv:
        cctx = client_ssl_context(cert, key, pki.ca.bundle_pem)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=cctx, server_hostname="localhost"
        )
        writer.write(b"ping\n")
        assert await asyncio.wait_for(reader.readline(), 5) == b"ping\n"
        pki.revocations.revoke_identity(n6, reason="node removed", at=pki.ca.clock.now())
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the server hung up at once
        writer.close()
    assert [d.code for d in denied] == ["certificate_revoked"]
