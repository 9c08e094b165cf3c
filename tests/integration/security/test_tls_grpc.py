"""Real mTLS over loopback with a tiny grpc.aio server (generic handler, bytes in/out)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from cloudless.security.ca import CertKind
from cloudless.security.errors import PermissionDenied
from cloudless.security.identity import SpiffeId
from cloudless.security.tls import (
    RevocationGuard,
    authorize_grpc,
    client_ssl_context,
    grpc_channel_credentials,
    grpc_channel_options,
    grpc_server_credentials,
    peer_certificate_from_grpc,
    peer_identity_from_grpc,
)
from tests.integration.security.conftest import Pki
from tests.unit.security.helpers import Leaf

METHOD = "/cloudless.test.Echo/Hello"


@dataclass
class GrpcServer:
    port: int
    pki: Pki
    insecure_port: int = 0


@pytest.fixture
async def grpc_server(pki: Pki) -> AsyncIterator[GrpcServer]:
    authz = pki.authorizer()

    async def hello(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        # the request names the node the caller speaks for
        who = await authorize_grpc(
            context,
            authz,
            expected_kind=CertKind.NODE,
            claimed=SpiffeId.node(request.decode()),
        )
        assert peer_identity_from_grpc(context) == who
        return who.uri.encode()

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "cloudless.test.Echo", {"Hello": grpc.unary_unary_rpc_method_handler(hello)}
            ),
        )
    )
    creds = grpc_server_credentials(pki.server.cert_pem, pki.server.key_pem, pki.ca.bundle_pem)
    port = server.add_secure_port("127.0.0.1:0", creds)
    insecure = server.add_insecure_port("127.0.0.1:0")  # only to prove handlers refuse it
    await server.start()
    try:
        yield GrpcServer(port, pki, insecure)
    finally:
        await server.stop(None)


async def call(srv: GrpcServer, leaf: Leaf, claimed: str = "n1") -> tuple[str, str]:
    creds = grpc_channel_credentials(leaf.cert_pem, leaf.key_pem, srv.pki.ca.bundle_pem)
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{srv.port}", creds, options=grpc_channel_options("localhost")
    ) as ch:
        try:
            reply = await ch.unary_unary(METHOD)(claimed.encode(), timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name, exc.details() or ""
        return "OK", reply.decode()


CASES = [
    # client certificate, status, details contain
    ("valid", "OK", "spiffe://cloudless/node/n1"),
    ("foreign CA", "UNAVAILABLE", ""),  # refused in the handshake
    ("expired", "UNAVAILABLE", ""),
    ("wrong key usage", "UNAVAILABLE", ""),
    ("revoked", "PERMISSION_DENIED", "certificate_revoked: "),  # handshake ok, handler refuses
    ("other node claims n1", "PERMISSION_DENIED", "identity_mismatch: "),
]


@pytest.mark.parametrize(("case", "status", "details"), CASES, ids=[c[0] for c in CASES])
async def test_grpc_mtls(
    pki: Pki, grpc_server: GrpcServer, case: str, status: str, details: str
) -> None:
    got_status, got_details = await call(grpc_server, pki.clients[case])
    assert got_status == status, got_details
    assert details in got_details


async def test_grpc_revocation_applies_to_next_rpc(pki: Pki, grpc_server: GrpcServer) -> None:
    key, cert = pki.ca.issue(SpiffeId.node("n8"), CertKind.NODE)
    leaf = Leaf(key, cert)
    assert (await call(grpc_server, leaf, "n8"))[0] == "OK"
    pki.revocations.revoke_identity(SpiffeId.node("n8"), reason="removed", at=pki.ca.clock.now())
    status, details = await call(grpc_server, leaf, "n8")
    assert (status, details.split(":")[0]) == ("PERMISSION_DENIED", "certificate_revoked")


async def test_grpc_user_may_not_act_as_node(pki: Pki, grpc_server: GrpcServer) -> None:
    key, cert = pki.ca.issue(SpiffeId.user("alice"), CertKind.USER)
    status, details = await call(grpc_server, Leaf(key, cert))
    assert status == "PERMISSION_DENIED" and details.startswith("wrong_identity_kind")


async def test_grpc_client_rejects_wrong_server_name(pki: Pki, grpc_server: GrpcServer) -> None:
    leaf = pki.clients["valid"]
    creds = grpc_channel_credentials(leaf.cert_pem, leaf.key_pem, pki.ca.bundle_pem)
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{grpc_server.port}", creds, options=grpc_channel_options("etcd.internal")
    ) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await ch.unary_unary(METHOD)(b"n1", timeout=10)
    assert exc.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_grpc_plaintext_caller_is_unauthenticated(grpc_server: GrpcServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_server.insecure_port}") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await ch.unary_unary(METHOD)(b"n1", timeout=10)
    assert exc.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert (exc.value.details() or "").startswith("no_certificate: ")


@pytest.mark.parametrize(
    ("max_version", "negotiated"),
    [(ssl.TLSVersion.MAXIMUM_SUPPORTED, "TLSv1.3"), (ssl.TLSVersion.TLSv1_2, "TLSv1.2")],
)
async def test_grpc_server_prefers_tls13_and_accepts_tls12(
    pki: Pki, grpc_server: GrpcServer, max_version: ssl.TLSVersion, negotiated: str
) -> None:
    # a raw TLS client (offering h2, as gRPC does) shows what the gRPC server negotiates
    leaf = pki.clients["valid"]
    ctx = client_ssl_context(leaf.cert_pem, leaf.key_pem, pki.ca.bundle_pem)
    ctx.maximum_version = max_version
    ctx.set_alpn_protocols(["h2"])
    _, writer = await asyncio.open_connection(
        "127.0.0.1", grpc_server.port, ssl=ctx, server_hostname="localhost"
    )
    tls = writer.get_extra_info("ssl_object")
    assert (tls.version(), tls.selected_alpn_protocol()) == (negotiated, "h2")
    writer.close()


async def test_grpc_stream_ends_when_the_node_is_removed(pki: Pki) -> None:
    authz = pki.authorizer()

    async def ticks(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        await authorize_grpc(context, authz, expected_kind=CertKind.NODE)
        cert = peer_certificate_from_grpc(context)
        assert cert is not None
        try:
            # grpc.aio owns this task: end through guard.race instead of task cancellation
            async with RevocationGuard(authz.revocations, cert, cancel_task=False) as guard:
                while True:
                    yield b"tick"
                    await guard.race(asyncio.sleep(0.01))
        except PermissionDenied as denied:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, f"{denied.reason_code}: {denied}"
            )

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "cloudless.test.Echo", {"Ticks": grpc.unary_stream_rpc_method_handler(ticks)}
            ),
        )
    )
    creds = grpc_server_credentials(pki.server.cert_pem, pki.server.key_pem, pki.ca.bundle_pem)
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    n7 = SpiffeId.node("n7")
    key, cert_pem = pki.ca.issue(n7, CertKind.NODE)
    try:
        ch_creds = grpc_channel_credentials(cert_pem, key, pki.ca.bundle_pem)
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{port}", ch_creds, options=grpc_channel_options("localhost")
        ) as ch:
            call = ch.unary_stream("/cloudless.test.Echo/Ticks")(b"", timeout=20)
            got = 0
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                async for _ in call:
                    got += 1
                    if got == 3:
                        authz.revocations.revoke_identity(n7, reason="node removed", at=time.time())
            assert got >= 3
            assert exc.value.code() is grpc.StatusCode.PERMISSION_DENIED
            assert (exc.value.details() or "").startswith("certificate_revoked: ")
    finally:
        await server.stop(None)
