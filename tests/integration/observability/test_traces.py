"""One trace per apply, parented across coordinator and agent: ``apply`` (API) with
``validate`` and ``commit``; ``schedule`` (reconciler) per replica; ``replica.start`` with
``pull``, ``create`` and ``start`` on the agent, joined through the assignment on the gRPC
stream. Then the same spans exported for real over OTLP/gRPC to a receiver on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as tsg
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cloudless.lib.net import free_port
from cloudless.observability import tracing

from ..cluster.harness import wait_for

WEB = b"""
name: web
image: busybox:latest
command: [httpd, -f, -p, "8080"]
resources: {cpu: 100m, memory: 16Mi}
replicas: 2
"""


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exp = InMemorySpanExporter()
    tracing.setup("", "test", exporter=exp, batch=False)
    yield exp
    tracing.stop()


async def _apply_and_wait(cluster) -> None:  # type: ignore[no-untyped-def]
    _coord, client, _agents, start_agent = cluster
    for i in range(2):
        await start_agent(i)
    await wait_for(lambda: [n["state"] for n in client.nodes()] == ["ready"] * 2, what="ready")
    await asyncio.to_thread(client.apply, WEB)
    await wait_for(
        lambda: sum(r["observed"] == "running" for r in client.workload("web")["replicas"]) == 2,
        what="2 running",
    )


async def test_one_trace_per_apply(cluster, spans: InMemorySpanExporter) -> None:  # type: ignore[no-untyped-def]
    await _apply_and_wait(cluster)
    done = spans.get_finished_spans()
    by_id = {s.context.span_id: s for s in done if s.context is not None}
    (apply,) = [s for s in done if s.name == "apply"]
    assert apply.context is not None
    trace_id = apply.context.trace_id
    assert apply.attributes is not None and apply.attributes["cloudless.workload"] == "web"

    def parent(s):  # type: ignore[no-untyped-def]
        return by_id[s.parent.span_id] if s.parent else None

    in_trace = [s for s in done if s.context is not None and s.context.trace_id == trace_id]
    names = sorted(s.name for s in in_trace)
    # 1 apply, 1 validate, 1 commit; per replica: schedule, replica.start, pull, network (the
    # agent asks its container network for an attachment; none here), create, start
    assert names == sorted(
        ["apply", "validate", "commit"]
        + ["schedule", "replica.start", "pull", "network", "create", "start"] * 2
    )
    for s in in_trace:
        if s.name in ("validate", "commit", "schedule"):
            assert parent(s) is apply
        if s.name == "schedule":
            # what the decision weighed: the chosen node's score components
            assert s.attributes["cloudless.score.total"] > 0
            assert "cloudless.score.reliability" in s.attributes
        elif s.name == "replica.start":
            assert parent(s).name == "schedule"  # across the gRPC stream
            assert parent(s).attributes["cloudless.replica"] == s.attributes["cloudless.replica"]
        elif s.name in ("pull", "network", "create", "start"):
            assert parent(s).name == "replica.start"


class Receiver(tsg.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[tuple[str, bytes, bytes]] = []  # name, trace id, parent span id

    async def Export(
        self, request: ts.ExportTraceServiceRequest, context: grpc.aio.ServicerContext
    ) -> ts.ExportTraceServiceResponse:
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    self.spans.append((sp.name, sp.trace_id, sp.parent_span_id))
        return ts.ExportTraceServiceResponse()


async def test_otlp_export_to_a_real_receiver(cluster) -> None:  # type: ignore[no-untyped-def]
    receiver = Receiver()
    server = grpc.aio.server()
    tsg.add_TraceServiceServicer_to_server(receiver, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        assert tracing.setup(f"127.0.0.1:{port}", "cloudless-test")
        await _apply_and_wait(cluster)
        await asyncio.to_thread(tracing.stop)  # flush the batch to the receiver
        names = [n for n, _, _ in receiver.spans]
        assert "apply" in names and names.count("replica.start") == 2
        (trace_id,) = {t for n, t, _ in receiver.spans if n == "apply"}
        assert {n for n, t, _ in receiver.spans if t == trace_id} >= {
            "apply",
            "schedule",
            "replica.start",
            "pull",
            "create",
            "start",
        }
    finally:
        tracing.stop()
        await server.stop(0)
