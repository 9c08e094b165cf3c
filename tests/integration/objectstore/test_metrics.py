"""The S3 front counts and times every answer (by HTTP method and status code, errors and
refusals included), and an agent's ``/metrics`` page carries its object-store node's gauges
(``storage_families``: a table) next to the process-wide instruments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError  # type: ignore[import-untyped]
from prometheus_client import CollectorRegistry

from cloudless.agent.telemetry import AgentTelemetry, storage_families
from cloudless.lib.clock import FakeClock
from cloudless.objectstore.service import Figures
from cloudless.observability.metrics import S3_DURATION, S3_REQUESTS, exposition, registry
from cloudless.runtime.fake import FakeRuntime


def sample(reg: CollectorRegistry, name: str, **labels: str) -> float:
    return reg.get_sample_value(name, labels) or 0.0


ANSWERS = {"put": ("PUT", "200"), "get": ("GET", "200"), "miss": ("GET", "404")}


def answered(reg: CollectorRegistry) -> dict[str, float]:
    """The S3 answers counted so far, of each kind in ``ANSWERS``."""
    return {
        k: sample(reg, "cloudless_s3_requests_total", method=m, code=c)
        for k, (m, c) in ANSWERS.items()
    }


def test_s3_answers_are_counted_by_method_and_code(s3: Any) -> None:
    reg = registry((S3_REQUESTS, S3_DURATION))  # the process-wide instruments, read here
    before = answered(reg)
    timed = sample(reg, "cloudless_s3_request_duration_seconds_count", method="GET")
    s3.create_bucket(Bucket="counted")
    s3.put_object(Bucket="counted", Key="k", Body=b"x" * 100)
    assert s3.get_object(Bucket="counted", Key="k")["Body"].read() == b"x" * 100
    with pytest.raises(ClientError):
        s3.get_object(Bucket="counted", Key="absent")
    after = answered(reg)
    assert after["put"] - before["put"] >= 2  # the bucket and the object
    assert after["get"] - before["get"] >= 1 and after["miss"] - before["miss"] >= 1
    assert sample(reg, "cloudless_s3_request_duration_seconds_count", method="GET") >= timed + 2


# (figures, the gauges a scrape shows)
FAMILIES = [
    (
        Figures(100, 1000, True, False, 3, 2, 1, 7),
        {
            "disk_free_bytes": 100, "disk_size_bytes": 1000, "refusing_writes": 1,
            "serving_reads": 0, "catching_up_partitions": 3, "resync_pending_blocks": 2,
            "hints_pending": 1, "layout_version": 7,
        },
    ),
    (  # a disk not measured yet is left out, not shown as 0
        Figures(serving_reads=True),
        {
            "refusing_writes": 0, "serving_reads": 1, "catching_up_partitions": 0,
            "resync_pending_blocks": 0, "hints_pending": 0, "layout_version": 0,
        },
    ),
]  # fmt: skip


@pytest.mark.parametrize(("figures", "want"), FAMILIES)
def test_storage_families_table(figures: Figures, want: dict[str, float]) -> None:
    got = {
        f.name.removeprefix("cloudless_objectstore_"): f.samples[0].value
        for f in storage_families(figures)
    }
    assert got == want


async def test_an_agent_page_carries_its_storage_gauges(tmp_path: Path) -> None:
    runtime = FakeRuntime(FakeClock())
    figures: list[Figures | None] = [None]
    tele = AgentTelemetry(runtime, lambda: [], {}, storage=lambda: figures[0])
    await tele.refresh()
    text = exposition(tele.registry)[0].decode()
    assert "cloudless_objectstore_" not in text  # no store on this agent
    assert "cloudless_s3_request_duration_seconds" in text  # the process-wide instruments
    figures[0] = Figures(5 << 30, 100 << 30, False, True)
    await tele.refresh()
    text = exposition(tele.registry)[0].decode()
    assert "cloudless_objectstore_disk_free_bytes 5.36870912e+09" in text
    assert "cloudless_objectstore_serving_reads 1.0" in text
