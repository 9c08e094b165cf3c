"""Bad input against a live coordinator: each is refused with a reason, recorded as a security
event where it is one, and changes nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest

from cloudless.agent.identity import AgentIdentity, EnrollmentFailed, enroll
from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.api.gen.cloudlessapi import agent_pb2_grpc as pbg
from cloudless.cli.client import ApiError
from cloudless.security.ca import CertificateAuthority
from cloudless.security.identity import CertKind, SpiffeId

from .harness import agent_config, wait_for


def events(client) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    return [json.loads(line) for line in client.stream("/v1/events?tail=500")]


async def enrolled(coord, client, tmp: Path, i: int) -> AgentIdentity:  # type: ignore[no-untyped-def]
    token = await asyncio.to_thread(client.create_token)
    ident = await enroll(coord.config.api_url, token, node_name=f"x{i}", facts=pb.NodeFacts())
    return ident


def channel(target: str, ident: AgentIdentity) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(target, ident.channel_credentials())


async def test_reused_expired_and_malformed_tokens(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    coord, client, _agents, _start = cluster
    token = await asyncio.to_thread(client.create_token)
    await enroll(coord.config.api_url, token, node_name="a", facts=pb.NodeFacts())
    with pytest.raises(EnrollmentFailed, match="already used"):
        await enroll(coord.config.api_url, token, node_name="b", facts=pb.NodeFacts())
    short = await asyncio.to_thread(client.create_token, ttl_seconds=1)
    await asyncio.sleep(1.2)
    with pytest.raises(EnrollmentFailed, match="expired"):
        await enroll(coord.config.api_url, short, node_name="c", facts=pb.NodeFacts())
    with pytest.raises(Exception, match="malformed"):
        await enroll(coord.config.api_url, "CLD1:nonsense", node_name="d", facts=pb.NodeFacts())
    nodes = await asyncio.to_thread(client.nodes)
    assert [n["name"] for n in nodes] == ["a"]  # nothing else was created
    kinds = [e["kind"] for e in await asyncio.to_thread(events, client)]
    assert kinds.count("security") >= 2


async def test_foreign_ca_certificate_is_refused(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    coord, client, _agents, _start = cluster
    ident = await enrolled(coord, client, tmp_path, 0)
    other = CertificateAuthority.init(tmp_path / "evil-ca", root_key_size=2048)
    key, cert = other.issue(SpiffeId.node(ident.node_id), CertKind.NODE)
    forged = AgentIdentity(ident.node_id, key, cert, ident.ca_pem)
    async with channel(coord.config.agent_endpoint, forged) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await pbg.AgentControlStub(ch).Renew(pb.RenewRequest(csr_pem=b"x"), timeout=5)
    assert ei.value.code() is grpc.StatusCode.UNAVAILABLE  # the TLS handshake fails


async def test_node_cannot_speak_for_another(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    coord, client, _agents, _start = cluster
    a = await enrolled(coord, client, tmp_path, 1)
    b = await enrolled(coord, client, tmp_path, 2)
    async with channel(coord.config.agent_endpoint, a) as ch:
        call = pbg.AgentControlStub(ch).Connect(
            iter([pb.AgentMessage(hello=pb.Hello(node_id=b.node_id))])
        )
        with pytest.raises(grpc.aio.AioRpcError):
            async for _ in call:
                pass
    nodes = {n["id"]: n for n in await asyncio.to_thread(client.nodes)}
    assert nodes[b.node_id]["state"] == "enrolling"  # b was not made ready by a's stream
    msgs = [e["message"] for e in await asyncio.to_thread(events, client)]
    assert any(f"claimed to be {b.node_id}" in m for m in msgs)


async def test_oversized_and_malformed_messages(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    coord, client, _agents, _start = cluster
    a = await enrolled(coord, client, tmp_path, 3)
    big = pb.AgentMessage(
        heartbeat=pb.Heartbeat(replicas=[pb.ReplicaStatus(replica_id="r", reason="x" * (5 << 20))])
    )
    async with channel(coord.config.agent_endpoint, a) as ch:
        call = pbg.AgentControlStub(ch).Connect(iter([big]))
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            async for _ in call:
                pass
    assert ei.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    # a heartbeat with an unknown replica state is ignored; the node still becomes ready
    bad = pb.AgentMessage(
        heartbeat=pb.Heartbeat(seq=1, replicas=[pb.ReplicaStatus(replica_id="r", state="??")])
    )
    async with channel(coord.config.agent_endpoint, a) as ch:
        call = pbg.AgentControlStub(ch).Connect(iter([bad]))
        first = await asyncio.wait_for(call.read(), 5)
        assert first.WhichOneof("kind") in ("assignments", "ack")
        call.cancel()
    # a CSR that does not parse is refused with a reason
    token = await asyncio.to_thread(client.create_token)
    async with grpc.aio.secure_channel(
        coord.config.enroll_endpoint, grpc.ssl_channel_credentials(a.ca_pem)
    ) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await pbg.EnrollmentStub(ch).Enroll(
                pb.EnrollRequest(token=token, csr_pem=b"garbage"), timeout=5
            )
    assert ei.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "CSR" in (ei.value.details() or "")


async def test_removed_node_is_refused_at_once(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    coord, client, agents, start_agent = cluster
    await start_agent(0)
    await wait_for(lambda: [n["state"] for n in client.nodes()] == ["ready"], what="ready")
    ident = AgentIdentity.load(agent_config(tmp_path, "", "", 0).data_dir)
    assert ident is not None
    await asyncio.to_thread(client.call, "DELETE", f"/v1/nodes/{ident.node_id}")
    agents[0].cancel()
    async with channel(coord.config.agent_endpoint, ident) as ch:
        call = pbg.AgentControlStub(ch).Connect(iter([pb.AgentMessage(heartbeat=pb.Heartbeat())]))
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            async for _ in call:
                pass
    assert ei.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in (ei.value.details() or "")
    with pytest.raises(ApiError) as ae:
        await asyncio.to_thread(client.call, "POST", f"/v1/nodes/{ident.node_id}/uncordon")
    assert ae.value.status == 409  # a removed node cannot come back without a new token


async def test_spec_that_can_never_fit_is_refused(cluster) -> None:  # type: ignore[no-untyped-def]
    _coord, client, _agents, start_agent = cluster
    await start_agent(0)
    await wait_for(lambda: [n["state"] for n in client.nodes()] == ["ready"], what="ready")
    # the agent declares 2 CPUs; 64 can never fit
    spec = b"name: huge\nimage: x\nresources: {cpu: 64}\n"
    with pytest.raises(ApiError) as ei:
        await asyncio.to_thread(client.apply, spec)
    assert ei.value.status == 400
    assert "no node can ever run huge" in ei.value.message
    assert "cpu allocatable below the request" in ei.value.message
    with pytest.raises(ApiError):
        await asyncio.to_thread(client.workload, "huge")  # nothing was stored
