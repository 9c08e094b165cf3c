"""The agent's side of idempotent enrollment, over real TLS gRPC on loopback.

* ``send_enroll`` against a scripted ``Enrollment`` server: transient failures are retried
  with the *same* request (same key, same CSR), across endpoints, with backoff between full
  rounds; a refusal is final at once and carries the server's reason.
* Against a real in-process coordinator (in-memory store): the same request sent twice (the
  first answer "lost") gets the certificate twice; the token used by that node is refused to
  another node and to the same node id with another key.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cloudless.agent.identity import ENROLL_BACKOFF, EnrollmentFailed, send_enroll
from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.api.gen.cloudlessapi import agent_pb2_grpc as pbg
from cloudless.cli.client import Client, ClientConfig
from cloudless.coordinator.wiring.process import Coordinator
from cloudless.lib.net import free_port
from cloudless.security.identity import SpiffeId
from cloudless.security.keys import make_csr, new_private_key
from cloudless.security.tokens import pinned_ca
from tests.integration.cluster.harness import coordinator_config
from tests.integration.security.conftest import Pki

S = grpc.StatusCode


class Scripted(pbg.EnrollmentServicer):
    """Answers each call with the next status in ``script`` (None: success)."""

    def __init__(self, script: list[grpc.StatusCode | None]) -> None:
        self.script: Iterator[grpc.StatusCode | None] = iter(script)
        self.requests: list[pb.EnrollRequest] = []

    async def Enroll(
        self, request: pb.EnrollRequest, context: grpc.aio.ServicerContext
    ) -> pb.EnrollResponse:
        self.requests.append(request)
        code = next(self.script)
        if code is not None:
            await context.abort(code, f"scripted {code.name}")
        return pb.EnrollResponse(node_id="n1", cert_pem=b"CERT")


async def serve(pki: Pki, servicer: Scripted) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    pbg.add_EnrollmentServicer_to_server(servicer, server)
    creds = grpc.ssl_server_credentials([(pki.server.key_pem, pki.server.cert_pem)])
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    return server, f"127.0.0.1:{port}"


def request() -> pb.EnrollRequest:
    csr = make_csr(new_private_key(), SpiffeId.node("n1"))
    return pb.EnrollRequest(token="t", csr_pem=csr, node_name="n1")


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, s: float) -> None:
        self.waits.append(s)


# (script of answers, endpoints "live"/"dead", attempts, outcome, calls that reach the server,
#  number of backoff sleeps)
CASES = [
    # UNAVAILABLE, DEADLINE_EXCEEDED, then success: 3 calls, a sleep before each retry
    ("two transient then ok", [S.UNAVAILABLE, S.DEADLINE_EXCEEDED, None], 1, 10, "ok", 3, 2),
    # a refusal is final: 1 call, no sleep
    ("refused at once", [S.PERMISSION_DENIED], 1, 10, "refused", 1, 0),
    # always UNAVAILABLE, 4 attempts: 4 calls, 3 sleeps, then EnrollmentFailed
    ("gives up", [S.UNAVAILABLE] * 4, 1, 4, "gave up", 4, 3),
    # a dead endpoint first, then the live one: no sleep inside a round (attempt 1 of 2)
    ("dead endpoint skipped", [None], 2, 10, "ok", 1, 0),
]


@pytest.mark.parametrize(
    ("case", "script", "n_eps", "attempts", "outcome", "calls", "sleeps"),
    CASES,
    ids=[c[0] for c in CASES],
)
async def test_send_enroll_retries_the_same_request(
    pki: Pki,
    case: str,
    script: list[grpc.StatusCode | None],
    n_eps: int,
    attempts: int,
    outcome: str,
    calls: int,
    sleeps: int,
) -> None:
    servicer = Scripted(script)
    server, live = await serve(pki, servicer)
    endpoints = [f"127.0.0.1:{free_port()}", live] if n_eps == 2 else [live]
    req, slept = request(), Sleeps()
    try:
        if outcome == "ok":
            resp = await send_enroll(
                endpoints, pki.ca.bundle_pem, req, timeout=5, attempts=attempts, sleep=slept
            )
            assert resp.cert_pem == b"CERT"
        else:
            with pytest.raises(EnrollmentFailed) as ei:
                await send_enroll(
                    endpoints, pki.ca.bundle_pem, req, timeout=5, attempts=attempts, sleep=slept
                )
            msg = "scripted PERMISSION_DENIED" if outcome == "refused" else "after 4 attempts"
            assert msg in str(ei.value)
    finally:
        await server.stop(None)
    assert len(servicer.requests) == calls
    assert all(r == req for r in servicer.requests)  # same token, same CSR every time
    assert len(slept.waits) == sleeps
    for k, w in enumerate(slept.waits):  # full jitter: within [ceiling/2, ceiling]
        assert ENROLL_BACKOFF.ceiling(k) / 2 <= w <= ENROLL_BACKOFF.ceiling(k)


async def test_backoff_is_seeded_and_capped(pki: Pki) -> None:
    servicer = Scripted([S.UNAVAILABLE] * 10)
    server, live = await serve(pki, servicer)
    slept = Sleeps()
    try:
        with pytest.raises(EnrollmentFailed):
            await send_enroll(
                [live], pki.ca.bundle_pem, request(), attempts=10, rng=random.Random(1),
                sleep=slept,
            )  # fmt: skip
    finally:
        await server.stop(None)
    # ceilings 0.25, 0.5, 1, 2, 4, then the 5 s cap: 9 sleeps between 10 attempts
    assert len(slept.waits) == 9 and max(slept.waits) <= 5.0 and slept.waits[-1] >= 2.5


@pytest.fixture
async def coordinator(tmp_path: Path):  # type: ignore[no-untyped-def]
    coord = Coordinator(coordinator_config(tmp_path))
    task = asyncio.create_task(coord.run())
    await asyncio.wait_for(coord.ready.wait(), 30)
    client = Client(ClientConfig.load(tmp_path / "coord" / "admin" / "config.json"))
    try:
        yield coord, client
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_real_coordinator_answers_a_retry_and_refuses_a_replay(coordinator) -> None:  # type: ignore[no-untyped-def]
    coord, client = coordinator
    token = await asyncio.to_thread(client.create_token)
    root = pinned_ca(token, coord.ca.bundle_pem)
    eps = [coord.config.enroll_endpoint]
    key = new_private_key()
    req = pb.EnrollRequest(token=token, csr_pem=make_csr(key, SpiffeId.node("n1")), node_name="n1")
    first = await send_enroll(eps, root, req, timeout=10)
    again = await send_enroll(eps, root, req, timeout=10)  # the first answer was "lost"
    assert first.node_id == again.node_id == "n1"
    assert SpiffeId.from_certificate(again.cert_pem) == SpiffeId.node("n1")
    nodes = await asyncio.to_thread(client.nodes)
    assert [n["id"] for n in nodes] == ["n1"]
    other_node = pb.EnrollRequest(
        token=token, csr_pem=make_csr(new_private_key(), SpiffeId.node("n2"))
    )
    with pytest.raises(EnrollmentFailed, match="already used by n1; this request from n2"):
        await send_enroll(eps, root, other_node, timeout=10)
    stolen = pb.EnrollRequest(token=token, csr_pem=make_csr(new_private_key(), SpiffeId.node("n1")))
    with pytest.raises(EnrollmentFailed, match="with another key"):
        await send_enroll(eps, root, stolen, timeout=10)
    assert [n["id"] for n in await asyncio.to_thread(client.nodes)] == ["n1"]
