"""mTLS at the edges: SSL contexts for asyncio, credentials for grpc.aio, peer identities.

Policy shared by both stacks: mutual TLS always (a server requires a client certificate
issued by a root in the bundle), TLS 1.3 preferred and 1.2 the minimum (1.2 only with ECDHE
AEAD suites), no compression, no renegotiation. The handshake checks chain, validity and key
usage (OpenSSL/BoringSSL check clientAuth/serverAuth by role); who may do *what* is decided
afterwards by an ``Authorizer`` from the peer's SPIFFE ID, which also consults the revocation
list — on every connection (asyncio) and every RPC (gRPC), so a revoked certificate stops
working at once without touching the contexts.

Identity of servers: asyncio clients verify the server's SPIFFE ID after the handshake
(``open_mtls_connection(expect=...)``); gRPC clients verify the CA and the DNS/IP SAN of the
target (``grpc_channel_options(server_name)``), since grpc.aio does not expose the server
certificate to the client.

Private keys are handed to OpenSSL through an anonymous in-memory file (``memfd``) so they
are never written to disk by this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Collection, Iterator
from typing import Any

import grpc
from cryptography import x509

from cloudless.security.authz import Authorizer, Decision
from cloudless.security.errors import PermissionDenied
from cloudless.security.identity import CertKind, SpiffeId, load_certificate
from cloudless.security.session import RevocationGuard
from cloudless.security.verify import Role

__all__ = [
    "Authorizer",
    "Decision",
    "ReloadableServerCredentials",
    "RevocationGuard",
    "authorize_grpc",
    "authorized_handler",
    "client_ssl_context",
    "enrolment_ssl_context",
    "first_contact_ssl_context",
    "grpc_channel_credentials",
    "grpc_channel_options",
    "grpc_server_credentials",
    "open_mtls_connection",
    "peer_certificate_from_grpc",
    "peer_certificate_from_ssl",
    "peer_identity_from_grpc",
    "peer_identity_from_ssl",
    "server_ssl_context",
]

TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

# -- asyncio / ssl ----------------------------------------------------------------------------


def server_ssl_context(
    cert_pem: bytes, key_pem: bytes, bundle_pem: bytes, *, require_client_cert: bool = True
) -> ssl.SSLContext:
    """A server context for ``asyncio.start_server(ssl=...)``; clients must present a cert."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx)
    _load_chain(ctx, cert_pem, key_pem)
    ctx.load_verify_locations(cadata=bundle_pem.decode("ascii"))
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def client_ssl_context(
    cert_pem: bytes, key_pem: bytes, bundle_pem: bytes, *, check_hostname: bool = False
) -> ssl.SSLContext:
    """A client context presenting ``cert_pem``; the server must chain to the bundle.

    ``check_hostname`` is off by default because Cloudless identifies servers by SPIFFE ID
    (checked after the handshake); turn it on to also require a DNS/IP SAN match.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(ctx)
    _load_chain(ctx, cert_pem, key_pem)
    ctx.load_verify_locations(cadata=bundle_pem.decode("ascii"))
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def first_contact_ssl_context() -> ssl.SSLContext:
    """A client context that does **not** verify the server: only for fetching the CA
    certificate before enrolment, which the caller must then check with
    ``tokens.pinned_ca(token, ca_pem)`` before sending anything else."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(ctx)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def enrolment_ssl_context(pinned_ca_pem: bytes) -> ssl.SSLContext:
    """A client context with no client certificate yet, trusting only the pinned root."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(ctx)
    ctx.load_verify_locations(cadata=pinned_ca_pem.decode("ascii"))
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _harden(ctx: ssl.SSLContext) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    ctx.set_ciphers(TLS12_CIPHERS)  # TLS 1.3 suites are always the AEAD ones
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION


def _load_chain(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    with _in_memory_files(cert_pem, key_pem) as (cert_path, key_path):
        ctx.load_cert_chain(cert_path, key_path)


@contextlib.contextmanager
def _in_memory_files(*blobs: bytes) -> Iterator[list[str]]:
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fds = []
        try:
            for i, blob in enumerate(blobs):
                fd = os.memfd_create(f"cloudless-tls-{i}", os.MFD_CLOEXEC)
                fds.append(fd)
                os.write(fd, blob)
            yield [f"/proc/self/fd/{fd}" for fd in fds]
        finally:
            for fd in fds:
                os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="cloudless-tls-") as d:  # 0700 by default
        paths = []
        for i, blob in enumerate(blobs):
            p = os.path.join(d, f"{i}.pem")
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            paths.append(p)
        yield paths


def peer_certificate_from_ssl(obj: ssl.SSLObject | ssl.SSLSocket | None) -> x509.Certificate | None:
    """The peer's leaf from an ``ssl`` object (``writer.get_extra_info('ssl_object')``)."""
    if obj is None:
        return None
    der = obj.getpeercert(binary_form=True)
    return load_certificate(der) if der else None


def peer_identity_from_ssl(obj: ssl.SSLObject | ssl.SSLSocket | None) -> SpiffeId:
    cert = peer_certificate_from_ssl(obj)
    if cert is None:
        raise PermissionDenied("the peer presented no certificate", reason_code="no_certificate")
    return SpiffeId.from_certificate(cert)


StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, SpiffeId], Awaitable[None]]


def authorized_handler(
    handler: StreamHandler,
    authorizer: Authorizer,
    *,
    expected_kind: CertKind | Collection[CertKind] | None = None,
    allowed: Collection[SpiffeId] | None = None,
    on_deny: Callable[[Decision], None] | None = None,
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """Wrap a stream handler: authorize the client first, close the connection on "no".

    The handler receives the verified SPIFFE ID as a third argument and runs inside a
    ``RevocationGuard``: revoking the client's certificate, or its expiry, ends the connection
    at once.
    ``on_deny`` sees every refusal (with its reason) for logging/metrics.
    """

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cert = peer_certificate_from_ssl(writer.get_extra_info("ssl_object"))
        decision = authorizer.authorize(
            cert, role=Role.CLIENT, expected_kind=expected_kind, allowed=allowed
        )
        if not decision.allowed or decision.identity is None:
            if on_deny is not None:
                on_deny(decision)
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
            return
        assert cert is not None  # an allowed decision always has one
        try:
            async with RevocationGuard(authorizer.revocations, cert, clock=authorizer.clock):
                await handler(reader, writer, decision.identity)
        except PermissionDenied as denied:
            if on_deny is not None:
                on_deny(_deny_from(denied, decision.identity))
            writer.close()

    return wrapped


async def open_mtls_connection(
    host: str,
    port: int,
    ctx: ssl.SSLContext,
    authorizer: Authorizer,
    *,
    expect: SpiffeId | None = None,
    expected_kind: CertKind | Collection[CertKind] | None = None,
    server_hostname: str | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, SpiffeId]:
    """Connect with mTLS and authorize the *server*; raises ``PermissionDenied`` on "no"."""
    reader, writer = await asyncio.open_connection(
        host, port, ssl=ctx, server_hostname=server_hostname or host
    )
    cert = peer_certificate_from_ssl(writer.get_extra_info("ssl_object"))
    decision = authorizer.authorize(
        cert,
        role=Role.SERVER,
        expected_kind=expected_kind,
        allowed=None if expect is None else {expect},
    )
    if not decision.allowed or decision.identity is None:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
        raise PermissionDenied(
            f"server at {host}:{port} refused: {decision.reason}", reason_code=decision.code
        )
    return reader, writer, decision.identity


def _deny_from(denied: PermissionDenied, sid: SpiffeId | None) -> Decision:
    return Decision(False, denied.message, denied.reason_code, sid)


# -- gRPC (grpc.aio) ----------------------------------------------------------------------------


def grpc_server_credentials(
    cert_pem: bytes, key_pem: bytes, bundle_pem: bytes, *, require_client_auth: bool = True
) -> grpc.ServerCredentials:
    """mTLS server credentials (gRPC negotiates TLS 1.3, falling back to 1.2)."""
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)],
        root_certificates=bundle_pem,
        require_client_auth=require_client_auth,
    )


class ReloadableServerCredentials:
    """gRPC server credentials whose certificate and trust bundle change without a restart.

    ``update`` takes effect at the next new connection: gRPC asks ``_fetch`` before every
    handshake. Established connections keep their session (and every RPC on them is still
    authorized, so revocation is unaffected). Use it to renew the server's own certificate
    and to start trusting a second root during a root rotation.
    """

    def __init__(
        self,
        cert_pem: bytes,
        key_pem: bytes,
        bundle_pem: bytes,
        *,
        require_client_auth: bool = True,
    ) -> None:
        self._current = (cert_pem, key_pem, bundle_pem)
        self._pending: Any = None
        self.require_client_auth = require_client_auth

    def update(
        self,
        *,
        cert_pem: bytes | None = None,
        key_pem: bytes | None = None,
        bundle_pem: bytes | None = None,
    ) -> None:
        cert, key, bundle = self._current
        self._current = (cert_pem or cert, key_pem or key, bundle_pem or bundle)
        self._pending = _server_config(*self._current)

    def _fetch(self) -> Any:
        pending, self._pending = self._pending, None
        return pending

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            _server_config(*self._current),
            self._fetch,
            require_client_authentication=self.require_client_auth,
        )


class ReloadableServerContext:
    """An asyncio server ``SSLContext`` whose certificate and trust change without a restart.

    Serve ``listening``; every new handshake is handed to the context ``make`` built last
    (``reload``) from the server-name callback, which OpenSSL calls with or without SNI.
    Established connections keep their session."""

    def __init__(self, make: Callable[[], ssl.SSLContext]) -> None:
        self._make = make
        self.current = make()
        self.listening = make()
        self.listening.sni_callback = self._pick
        self.reloads = 0

    def _pick(self, sslobj: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        sslobj.context = self.current

    def reload(self) -> None:
        self.current = self._make()
        self.reloads += 1


def _server_config(cert_pem: bytes, key_pem: bytes, bundle_pem: bytes) -> Any:
    return grpc.ssl_server_certificate_configuration(
        [(key_pem, cert_pem)], root_certificates=bundle_pem
    )


def grpc_channel_credentials(
    cert_pem: bytes, key_pem: bytes, bundle_pem: bytes
) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=bundle_pem, private_key=key_pem, certificate_chain=cert_pem
    )


def grpc_channel_options(server_name: str | None = None) -> list[tuple[str, Any]]:
    """Channel options: verify the server against ``server_name`` (a DNS SAN) if given."""
    return [("grpc.ssl_target_name_override", server_name)] if server_name else []


def peer_certificate_from_grpc(context: Any) -> x509.Certificate | None:
    """The client's leaf from a ``grpc.aio.ServicerContext`` (``auth_context``)."""
    pems = context.auth_context().get("x509_pem_cert") or []
    return load_certificate(pems[0]) if pems else None


def peer_identity_from_grpc(context: Any) -> SpiffeId:
    cert = peer_certificate_from_grpc(context)
    if cert is None:
        raise PermissionDenied("the caller presented no certificate", reason_code="no_certificate")
    return SpiffeId.from_certificate(cert)


async def authorize_grpc(
    context: Any,
    authorizer: Authorizer,
    *,
    expected_kind: CertKind | Collection[CertKind] | None = None,
    claimed: SpiffeId | None = None,
    allowed: Collection[SpiffeId] | None = None,
) -> SpiffeId:
    """Authorize the caller of an RPC or abort it (UNAUTHENTICATED/PERMISSION_DENIED + reason).

    Call at the top of every handler, e.g. ``Heartbeat``:
    ``await authorize_grpc(ctx, authz, expected_kind=CertKind.NODE,
    claimed=SpiffeId.node(request.node_id))``.
    """
    decision = authorizer.authorize(
        peer_certificate_from_grpc(context),
        role=Role.CLIENT,
        expected_kind=expected_kind,
        claimed=claimed,
        allowed=allowed,
    )
    if decision.allowed and decision.identity is not None:
        return decision.identity
    status = (
        grpc.StatusCode.UNAUTHENTICATED
        if decision.code == "no_certificate"
        else grpc.StatusCode.PERMISSION_DENIED
    )
    await context.abort(status, f"{decision.code}: {decision.reason}")
    raise PermissionDenied(decision.reason, reason_code=decision.code)  # abort raises first
