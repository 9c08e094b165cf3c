"""The agent API checks what an agent reports like a user's spec: a table of enrollments with
bad facts (refused ``INVALID_ARGUMENT``, the details naming the field, the join token not
spent and no node written) and heartbeats with bad usage (the stream ends
``INVALID_ARGUMENT``, the node record unchanged).

One coordinator (in-memory store, real mTLS gRPC on loopback) serves the whole module.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest

from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.api.gen.cloudlessapi import agent_pb2_grpc as pbg
from cloudless.coordinator.userapi.models import NodeDetail
from cloudless.lib.ids import RandomIds
from cloudless.network.nebula_keys import PRIVATE_BANNER, PUBLIC_BANNER, make_keypair, pem
from cloudless.security.identity import SpiffeId
from cloudless.security.keys import make_csr, new_private_key

from .threaded import Running, running_coordinator


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with running_coordinator(tmp_path_factory.mktemp("agent-api")) as running:
        yield running


def token(api: Running) -> str:
    a = api.raw("POST", "/v1/tokens", b"{}")
    assert a.status == 201, a.body
    return str(a.json()["token"])


def enroll(
    api: Running, tok: str, node_name: str, facts: pb.NodeFacts
) -> tuple[str, bytes, pb.EnrollResponse]:
    node_id = RandomIds().new_id("n-")
    key = new_private_key()
    csr = make_csr(key, SpiffeId.node(node_id, api.coord.ca.trust_domain))
    creds = grpc.ssl_channel_credentials(api.coord.ca.bundle_pem)
    with grpc.secure_channel(api.coord.config.enroll_endpoint, creds) as ch:
        resp = pbg.EnrollmentStub(ch).Enroll(
            pb.EnrollRequest(token=tok, csr_pem=csr, node_name=node_name, facts=facts),
            timeout=10,
        )
    return node_id, key, resp


@dataclass(frozen=True)
class Bad:
    id: str
    field: str  # the details must name it
    facts: dict[str, object] = dataclasses.field(default_factory=dict)
    node_name: str = "ok"


def res(**kw: int) -> pb.Resources:
    return pb.Resources(**kw)


ENROLLMENTS = [
    Bad("name-newline", "node_name", node_name="a\nb"),
    Bad("name-100kb", "node_name", node_name="n" * 100_000),
    Bad("name-control", "node_name", node_name="node\x1b[31m"),
    Bad("label-key-space", "facts.labels.bad key", {"labels": {"bad key": "x"}}),
    Bad("label-value-newline", "facts.labels.zone", {"labels": {"zone": "eu\nus"}}),
    Bad("label-value-100kb", "facts.labels.tier", {"labels": {"tier": "t" * 100_000}}),
    Bad("label-key-100kb", "facts.labels." + "k" * 60 + "...", {"labels": {"k" * 100_000: "x"}}),
    Bad("too-many-labels", "facts.labels", {"labels": {f"l{i}": "x" for i in range(65)}}),
    Bad("region-newline", "facts.region", {"region": "eu\n"}),
    Bad("zone-100kb", "facts.zone", {"zone": "z" * 100_000}),
    Bad("arch-control", "facts.arch", {"arch": "amd64\x00"}),
    Bad("address-newline", "facts.address", {"address": "10.0.0.1\r\nX: y"}),
    Bad("negative-capacity", "facts.capacity.cpu_millis", {"capacity": res(cpu_millis=-1)}),
    Bad(
        "negative-allocatable",
        "facts.allocatable.memory_bytes",
        {"allocatable": res(memory_bytes=-(2**40))},
    ),
    # 2**62 bytes > MAX_BYTES = 2**60 (1 EiB)
    Bad("absurd-disk", "facts.capacity.disk_bytes", {"capacity": res(disk_bytes=2**62)}),
    Bad("negative-cores", "facts.cpu_cores", {"cpu_cores": -4}),
    Bad("cost-nan", "facts.cost_per_hour", {"cost_per_hour": math.nan}),
    Bad("cost-infinite", "facts.cost_per_hour", {"cost_per_hour": math.inf}),
    Bad("cost-negative", "facts.cost_per_hour", {"cost_per_hour": -1.0}),
    # the node's own Nebula public key: one NEBULA X25519 PUBLIC KEY block of 32 bytes
    Bad("nebula-key-not-pem", "facts.nebula_public_key", {"nebula_public_key": "AAAA"}),
    Bad(
        "nebula-key-private",
        "facts.nebula_public_key",
        {"nebula_public_key": pem(PRIVATE_BANNER, bytes(range(1, 33)))},
    ),
    Bad(
        "nebula-key-31-bytes",
        "facts.nebula_public_key",
        {"nebula_public_key": pem(PUBLIC_BANNER, bytes(range(1, 32)))},
    ),
    Bad(
        "nebula-key-zero",
        "facts.nebula_public_key",
        {"nebula_public_key": pem(PUBLIC_BANNER, bytes(32))},
    ),
    Bad("nebula-key-100kb", "facts.nebula_public_key", {"nebula_public_key": "k" * 100_000}),
]


@pytest.mark.parametrize("bad", ENROLLMENTS, ids=[b.id for b in ENROLLMENTS])
def test_enrollment_with_bad_facts_is_refused(api: Running, bad: Bad) -> None:
    tok = token(api)
    before = api.state()
    with pytest.raises(grpc.RpcError) as ei:
        enroll(api, tok, bad.node_name, pb.NodeFacts(**bad.facts))  # type: ignore[arg-type]
    err = ei.value
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, err
    details = err.details() or ""
    assert f"{bad.field}:" in details, details
    assert len(details) <= 2100  # MAX_DETAILS and its marker: no 100 kB echo
    assert api.state() == before  # no node, and the token is not spent


def test_good_enrollment_still_works_and_token_labels_win(api: Running) -> None:
    tok = token(api)
    _, nebula_pub = make_keypair()
    facts = pb.NodeFacts(
        labels={"zone": "z1", "disk": "ssd"},
        capacity=res(cpu_millis=2000),
        nebula_public_key=nebula_pub,
    )
    node_id, _key, resp = enroll(api, tok, "kitchen-pi", facts)
    assert resp.node_id == node_id
    node = api.raw("GET", f"/v1/nodes/{node_id}").json()
    NodeDetail.model_validate(node)
    assert node["labels"] == {"zone": "z1", "disk": "ssd"} and node["name"] == "kitchen-pi"
    assert node["nebula_public_key"] == nebula_pub  # kept for signing its Nebula certificate


def connect(api: Running, node_id: str, key: bytes, cert: bytes, msgs: list[pb.AgentMessage]):  # type: ignore[no-untyped-def]
    creds = grpc.ssl_channel_credentials(
        root_certificates=api.coord.ca.bundle_pem, private_key=key, certificate_chain=cert
    )
    with grpc.secure_channel(api.coord.config.agent_endpoint, creds) as ch:
        for _ in pbg.AgentControlStub(ch).Connect(iter(msgs), timeout=10):
            pass


HEARTBEATS = [
    ("negative-cpu", "heartbeat.usage.cpu_millis", res(cpu_millis=-1)),
    ("negative-memory", "heartbeat.usage.memory_bytes", res(memory_bytes=-5)),
    ("absurd-bandwidth", "heartbeat.usage.bandwidth_bps", res(bandwidth_bps=2**62)),
]


@pytest.mark.parametrize(("case", "field", "usage"), HEARTBEATS, ids=[h[0] for h in HEARTBEATS])
def test_heartbeat_with_bad_usage_is_refused(
    api: Running, case: str, field: str, usage: pb.Resources
) -> None:
    node_id, key, resp = enroll(api, token(api), case, pb.NodeFacts())
    before = api.state()
    with pytest.raises(grpc.RpcError) as ei:
        beat = pb.AgentMessage(heartbeat=pb.Heartbeat(seq=1, usage=usage))
        connect(api, node_id, key, resp.cert_pem, [beat])
    assert ei.value.code() is grpc.StatusCode.INVALID_ARGUMENT, ei.value
    assert f"{field}:" in (ei.value.details() or "")
    assert api.state() == before  # the node did not become ready, nor take the usage
