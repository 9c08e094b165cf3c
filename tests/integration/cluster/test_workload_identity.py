"""Each replica gets its own SVID through its agent: a coordinator and two agents (real mTLS
gRPC on loopback, fake runtime). The two replicas of a workload find their certificate, key
and bundle in the directory mounted at /run/cloudless/identity, do mutual TLS with each other
and see each other's SPIFFE ID; an agent asking for a replica it does not run, or with a CSR
for another identity, is refused with the reason."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.api.gen.cloudlessapi import agent_pb2_grpc as pbg
from cloudless.security import svid
from cloudless.security.bundle import TrustBundle
from cloudless.security.identity import SpiffeId
from cloudless.security.keys import make_csr, new_private_key

from .harness import wait_for

WEB = b"""
name: web
image: busybox:latest
command: [httpd, -f]
resources: {cpu: 100m, memory: 16Mi}
replicas: 2
placement:
  max_per_node: 1
"""


def _spiffe(pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return str(san.get_values_for_type(x509.UniformResourceIdentifier)[0])


def _context(d: Path, server: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_cert_chain(d / svid.CERT_FILE, d / svid.KEY_FILE)
    ctx.load_verify_locations(d / svid.BUNDLE_FILE)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = False  # peers are checked by SPIFFE ID
    return ctx


def _peer(writer: asyncio.StreamWriter) -> str:
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return _spiffe(x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM))


def _read(d: Path) -> tuple[bytes, bytes]:
    return (d / svid.CERT_FILE).read_bytes(), (d / svid.BUNDLE_FILE).read_bytes()


async def test_replicas_get_identities_and_do_mutual_tls(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    coord, client, _agents, start_agent = cluster
    for i in range(2):
        await start_agent(i)
    await wait_for(lambda: len(client.nodes()) == 2, what="2 nodes")
    nodes = {n["id"]: n["name"] for n in await asyncio.to_thread(client.nodes)}
    await asyncio.to_thread(client.apply, WEB)

    def running() -> list[dict]:  # type: ignore[type-arg]
        return [r for r in client.workload("web")["replicas"] if r["observed"] == "running"]

    reps = await wait_for(lambda: len(running()) == 2 and running(), what="2 running replicas")
    dirs = {
        r["id"]: tmp_path / f"agent{nodes[r['node_id']][-1]}" / "identities" / r["id"] for r in reps
    }
    for rid, d in dirs.items():
        cert, bundle = await wait_for(
            lambda d=d: (d / svid.CERT_FILE).exists() and _read(d), what=f"{rid}'s SVID"
        )
        assert _spiffe(cert) == SpiffeId.workload(rid).uri
        leaf = x509.load_pem_x509_certificate(cert)
        assert TrustBundle.from_pem(bundle).issuer_of(leaf) is not None
        assert bundle == coord.ca.bundle_pem
        life = leaf.not_valid_after_utc - leaf.not_valid_before_utc
        assert life.total_seconds() == svid.DEFAULT_TTL_S + 300  # an hour, back-dated 5 min

    # mutual TLS between the two replicas, each seeing the other's identity
    (a, da), (b, db) = dirs.items()
    seen: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(_peer(writer))
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=_context(da, server=True))
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=_context(db, server=False)
        )
        writer.write(b"hello\n")
        assert await reader.readline() == b"hello\n"
        assert _peer(writer) == SpiffeId.workload(a).uri
        writer.close()
    assert seen == [SpiffeId.workload(b).uri]

    # an agent may only ask for identities of replicas it runs
    rep_b = next(r for r in reps if r["id"] == b)
    other_node = next(n for n in nodes if n != rep_b["node_id"])
    ident = tmp_path / f"agent{nodes[other_node][-1]}" / "identity"
    creds = grpc.ssl_channel_credentials(
        root_certificates=(ident / "ca.pem").read_bytes(),
        private_key=(ident / "node.key").read_bytes(),
        certificate_chain=(ident / "node.crt").read_bytes(),
    )
    key = new_private_key()
    async with grpc.aio.secure_channel(coord.config.agent_endpoint, creds) as ch:
        stub = pbg.AgentControlStub(ch)
        cases = [
            (b, "web", SpiffeId.workload(b), grpc.StatusCode.PERMISSION_DENIED, "not to node"),
            ("web-nope", "web", SpiffeId.workload("web-nope"), None, "does not exist"),
            (b, "api", SpiffeId.workload(b), None, "not a replica of workload 'api'"),
        ]
        own = next(r["id"] for r in reps if r["node_id"] == other_node)
        # its own replica, but a CSR for another identity
        cases.append((own, "web", SpiffeId.workload(b), grpc.StatusCode.INVALID_ARGUMENT, b))
        for rid, workload, sid, code, fragment in cases:
            req = pb.WorkloadIdentityRequest(
                replica_id=rid, workload=workload, csr_pem=make_csr(key, sid)
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.IssueWorkloadIdentity(req, timeout=10)
            assert err.value.code() == (code or grpc.StatusCode.PERMISSION_DENIED)
            assert fragment in (err.value.details() or ""), err.value.details()
