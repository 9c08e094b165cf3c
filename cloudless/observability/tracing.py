"""Traces with the OpenTelemetry SDK, exported over OTLP/gRPC; off unless an endpoint is set.

One trace per ``cloudless apply``: the API's ``apply`` span (with ``validate`` and
``commit``), the reconciler's ``schedule`` span per new replica, and on the agent the
replica's ``replica.start`` with ``pull``, ``create`` and ``start``. The context travels
with the records, not with a call: the workload record keeps the ``traceparent`` of the
apply that wrote it, each new replica the one of its ``schedule`` span, and the assignment
pushed down the agent's gRPC stream carries it to the agent.

Off (no endpoint), the tracer is OpenTelemetry's no-op: spans are not recorded, no
``traceparent`` is written anywhere, and the cost is a function call per would-be span.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
MAX_TRACEPARENT = 128


_provider: TracerProvider | None = None  # this process's, when tracing is on
_NOOP = trace.NoOpTracer()


def tracer() -> trace.Tracer:
    """Cloudless's tracer: recording when ``setup`` turned tracing on, else the no-op one.
    Kept apart from OpenTelemetry's global provider so that a library's or a test's setting
    does not turn ours on."""
    return _provider.get_tracer("cloudless") if _provider is not None else _NOOP


def setup(
    endpoint: str,
    service: str,
    *,
    exporter: SpanExporter | None = None,
    batch: bool = True,
) -> bool:
    """Export spans to the OTLP/gRPC ``endpoint`` (``host:port`` or ``http(s)://host:port``)
    as ``service``; with ``exporter``, to that instead (tests: ``batch=False`` exports each
    span as it ends). Returns whether tracing is on."""
    global _provider
    if not endpoint and exporter is None:
        return False
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        insecure = not endpoint.startswith("https://")
        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=insecure)
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(
        BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    )
    stop()
    _provider = provider
    return True


def stop() -> None:
    """Flush what is pending and turn tracing off."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def traceparent(span: Span | None = None) -> str:
    """The W3C ``traceparent`` of ``span`` (default: the current one), or "" when it is not
    recorded (tracing off): nothing is stored then."""
    span = span or trace.get_current_span()
    if not span.is_recording():
        return ""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent", "")


def parent_context(value: str) -> Context | None:
    """The context a ``traceparent`` names; ``None`` for "" or anything malformed (it
    comes from records and from the agent stream: a bad one starts no trace, it never
    fails the work)."""
    if not value or len(value) > MAX_TRACEPARENT:
        return None
    ctx = _PROPAGATOR.extract({"traceparent": value})
    span_ctx = trace.get_current_span(ctx).get_span_context()
    return ctx if span_ctx.is_valid else None


@contextmanager
def child_of(value: str) -> Iterator[None]:
    """Make the span a ``traceparent`` names the current one for the block (no-op for "" or
    a malformed value)."""
    ctx = parent_context(value)
    if ctx is None:
        yield
        return
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)
