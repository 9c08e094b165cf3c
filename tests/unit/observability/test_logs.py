"""Daemon log records: the same keys from every component, JSON or plain text."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from cloudless.observability import logs


class Err:
    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def getvalue(self) -> str:
        return self.capsys.readouterr().err


@pytest.fixture
def stderr(capsys: pytest.CaptureFixture[str]) -> Iterator[Err]:
    yield Err(capsys)
    logging.basicConfig(handlers=[logging.StreamHandler()], force=True, level=logging.WARNING)


def test_json_lines_carry_the_shared_keys(stderr: Err) -> None:
    logs.setup("info", "json")
    log = logging.getLogger("cloudless.coordinator.example")
    with logs.bind(node="n1", workload="web"):
        log.info("placed %s", "r1", extra={"replica": "r1"})
    log.debug("not shown at info")
    lines = [json.loads(x) for x in stderr.getvalue().splitlines()]
    assert len(lines) == 1
    rec = lines[0]
    assert rec["message"] == "placed r1"
    assert rec["level"] == "info"
    assert rec["component"] == "cloudless.coordinator.example"
    assert (rec["node"], rec["workload"], rec["replica"]) == ("n1", "web", "r1")
    assert rec["time"].endswith("Z")


def test_context_does_not_leak_after_bind(stderr: Err) -> None:
    logs.setup("info", "json")
    with logs.bind(node="n1"):
        pass
    logging.getLogger("x").info("after")
    assert "node" not in json.loads(stderr.getvalue())


def test_console_format_and_run_time_level(stderr: Err) -> None:
    logs.setup("warning", "console")
    log = logging.getLogger("cloudless.agent")
    log.info("hidden")
    assert logs.set_level("debug") == "debug"
    assert logs.current_level() == "debug"
    log.info("shown")
    text = stderr.getvalue()
    assert "hidden" not in text
    assert "INFO    cloudless.agent: shown" in text


def test_trace_id_in_records(stderr: Err) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    logs.setup("info", "json")
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("apply") as span:
        logging.getLogger("x").info("inside")
    rec = json.loads(stderr.getvalue())
    assert rec["trace_id"] == f"{span.get_span_context().trace_id:032x}"


@pytest.mark.parametrize(
    ("level", "fmt", "error"),
    [("loud", "json", "'loud' is not one of"), ("info", "xml", "'xml' is not one of")],
)
def test_bad_settings_are_refused(level: str, fmt: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        logs.setup(level, fmt)
    with pytest.raises(ValueError, match="is not one of"):
        logs.set_level("loud")
