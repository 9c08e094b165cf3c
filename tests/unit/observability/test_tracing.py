"""The trace context as it travels in records and on the agent stream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cloudless.observability import tracing

VALID = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exp = InMemorySpanExporter()
    tracing.setup("", "test", exporter=exp, batch=False)
    yield exp
    tracing.stop()


def test_off_by_default_records_nothing() -> None:
    with tracing.tracer().start_as_current_span("apply") as span:
        assert not span.is_recording()
        assert tracing.traceparent() == ""  # nothing is written to records when off


def test_setup_without_endpoint_is_off() -> None:
    assert tracing.setup("", "x") is False
    assert not tracing.tracer().start_span("x").is_recording()


# Values from records and from the agent stream: a bad one starts no trace, never fails.
@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (VALID, True),
        ("", False),
        ("garbage", False),
        ("00-00000000000000000000000000000000-b7ad6b7169203331-01", False),  # zero trace id
        ("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", False),  # zero span id
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331", False),  # no flags
        (VALID + "-" + "x" * 200, False),  # absurdly long
        ("00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01", False),  # upper case
    ],
)
def test_parent_context(value: str, valid: bool) -> None:
    assert (tracing.parent_context(value) is not None) is valid


def test_child_of_joins_the_named_trace(spans: InMemorySpanExporter) -> None:
    with tracing.child_of(VALID), tracing.tracer().start_as_current_span("schedule") as s:
        tp = tracing.traceparent(s)
    (done,) = spans.get_finished_spans()
    assert done.context is not None and done.parent is not None
    assert f"{done.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert f"{done.parent.span_id:016x}" == "b7ad6b7169203331"
    # what the replica carries to its agent names this span
    assert tp == f"00-0af7651916cd43dd8448eb211c80319c-{done.context.span_id:016x}-01"


def test_child_of_a_bad_value_starts_a_new_trace(spans: InMemorySpanExporter) -> None:
    with tracing.child_of("garbage"), tracing.tracer().start_as_current_span("x"):
        pass
    (done,) = spans.get_finished_spans()
    assert done.parent is None
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing left attached
