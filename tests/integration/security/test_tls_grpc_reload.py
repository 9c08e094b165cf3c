"""A running grpc.aio server renews its certificate and starts trusting a second root."""

from __future__ import annotations

from pathlib import Path

import grpc

from cloudless.lib.clock import SystemClock
from cloudless.security.ca import CertificateAuthority, CertKind
from cloudless.security.identity import SpiffeId
from cloudless.security.tls import ReloadableServerCredentials, authorize_grpc
from tests.integration.security.conftest import Pki
from tests.integration.security.test_tls_grpc import METHOD, GrpcServer, call
from tests.unit.security.helpers import Leaf, node_leaf


async def test_reload_bundle_and_certificate(pki: Pki, tmp_path: Path) -> None:
    other = CertificateAuthority.init(
        tmp_path / "next-root", clock=SystemClock(), root_key_size=2048
    )
    authz = pki.authorizer()

    async def hello(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        who = await authorize_grpc(context, authz, expected_kind=CertKind.NODE)
        return who.uri.encode()

    creds = ReloadableServerCredentials(pki.server.cert_pem, pki.server.key_pem, pki.ca.bundle_pem)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "cloudless.test.Echo", {"Hello": grpc.unary_unary_rpc_method_handler(hello)}
            ),
        )
    )
    port = server.add_secure_port("127.0.0.1:0", creds.credentials())
    await server.start()
    try:
        # a node from the next root: the client trusts both roots, the server only the old one
        nxt = node_leaf(other, "n5")
        both = pki.ca.trust_bundle.with_root(other.root)
        assert (await _call(port, nxt, both.pem))[0] == "UNAVAILABLE"
        # root rotation, step one: the server trusts both roots (handshake and authorizer)
        creds.update(bundle_pem=both.pem)
        authz.bundle = both
        assert await _call(port, nxt, both.pem) == ("OK", "spiffe://cloudless/node/n5")
        assert (await call(GrpcServer(port, pki), pki.clients["valid"]))[0] == "OK"

        # certificate renewal: a new server certificate with a new DNS name is served next
        key, cert = pki.ca.issue(
            SpiffeId.service("coordinator"), CertKind.SERVICE, dns_names=["coord2.local"]
        )
        valid = pki.clients["valid"]
        assert (await _call(port, valid, pki.ca.bundle_pem, "coord2.local"))[0] == "UNAVAILABLE"
        creds.update(cert_pem=cert, key_pem=key)
        got = await _call(port, valid, pki.ca.bundle_pem, "coord2.local")
        assert got == ("OK", "spiffe://cloudless/node/n1")
    finally:
        await server.stop(None)


async def _call(
    port: int, leaf: Leaf, bundle_pem: bytes, name: str = "localhost"
) -> tuple[str, str]:
    creds = grpc.ssl_channel_credentials(bundle_pem, leaf.key_pem, leaf.cert_pem)
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{port}", creds, options=[("grpc.ssl_target_name_override", name)]
    ) as ch:
        try:
            reply = await ch.unary_unary(METHOD)(b"", timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name, exc.details() or ""
        return "OK", reply.decode()
