"""How a volume is held to its size hint (``decide``, pure), the image size arithmetic, the
quota text, and the supervisor reporting each volume's mode."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cloudless.agent.supervisor import Assigned, Supervisor
from cloudless.agent.volume_quota import (
    IMAGE,
    MIN_IMAGE_BYTES,
    REPORT,
    Action,
    Decision,
    Enforcement,
    OnDisk,
    PlainVolumes,
    decide,
    image_size,
    on_disk,
    parse_enforcement,
)
from cloudless.lib.clock import FakeClock
from cloudless.lib.errors import CloudlessError
from cloudless.model.volumes import Volume
from cloudless.model.workload import WorkloadSpec
from cloudless.runtime.fake import FakeRuntime

MI = 1 << 20
NOT_ROOT = "the agent is not root (loop mounts need root)"
OLD_DATA = "a plain directory with data from before quotas were enforced"


def create(size: int) -> Decision:
    return Decision(Action.CREATE_IMAGE, Enforcement(IMAGE), size)


def mount(grow_to: int = 0, note: str = "") -> Decision:
    return Decision(Action.MOUNT_IMAGE, Enforcement(IMAGE, note), grow_to)


def plain(why: str) -> Decision:
    return Decision(Action.PLAIN, Enforcement(REPORT, why))


@pytest.mark.parametrize(
    ("hint", "disk", "image_bytes", "unsupported", "want"),
    [
        # a new volume with a hint, node supports images: a 16 MiB image
        (16 * MI, OnDisk.NOTHING, 0, None, create(16 * MI)),
        # a hint of 1 byte: an image of the minimum, 4 MiB
        (1, OnDisk.NOTHING, 0, None, create(MIN_IMAGE_BYTES)),
        # no hint: a plain directory, nothing to hold it to
        (0, OnDisk.NOTHING, 0, None, plain("no size hint")),
        # the node cannot: report-only, saying why
        (16 * MI, OnDisk.NOTHING, 0, NOT_ROOT, plain(NOT_ROOT)),
        # data in a plain directory from before: stays plain (its data is not moved)
        (16 * MI, OnDisk.DATA_DIR, 0, None, plain(OLD_DATA)),
        # an image of the hint's size: mount it, nothing to grow
        (16 * MI, OnDisk.IMAGE, 16 * MI, None, mount()),
        # the hint grew 16 -> 32 MiB: grow the image to 32 MiB
        (32 * MI, OnDisk.IMAGE, 16 * MI, None, mount(grow_to=32 * MI)),
        # the hint shrank 16 -> 8 MiB: the image stays at 16 MiB (16777216 bytes), with a note
        (8 * MI, OnDisk.IMAGE, 16 * MI, None,
         mount(note="16777216 bytes, more than the hint: an image only grows")),
        # the hint was removed: the data stays in its image
        (0, OnDisk.IMAGE, 16 * MI, None, mount(note="16777216 bytes, kept from an earlier hint")),
    ],
)  # fmt: skip
def test_decide(
    hint: int, disk: OnDisk, image_bytes: int, unsupported: str | None, want: Decision
) -> None:
    assert decide(hint, disk, image_bytes, unsupported) == want


def test_an_image_on_a_node_that_cannot_mount_it_is_refused_with_the_reason() -> None:
    with pytest.raises(CloudlessError, match="ext4 image and this agent cannot mount it: the"):
        decide(16 * MI, OnDisk.IMAGE, 16 * MI, NOT_ROOT)


@pytest.mark.parametrize(
    ("hint", "size"),
    [
        (16 * MI, 16 * MI),  # already a multiple of 4 KiB
        (16 * MI + 1, 16 * MI + 4096),  # rounded up to the next 4 KiB
        (1000, 4 * MI),  # below the minimum: the minimum
    ],
)
def test_image_size(hint: int, size: int) -> None:
    assert image_size(hint) == size


@pytest.mark.parametrize(
    ("text", "mode", "why"),
    [
        ("image", IMAGE, ""),
        ("report: no size hint", REPORT, "no size hint"),
        ("image: 16 bytes, from an earlier hint", IMAGE, "16 bytes, from an earlier hint"),
    ],
)  # fmt: skip
def test_quota_text_round_trip(text: str, mode: str, why: str) -> None:
    e = parse_enforcement(text)
    assert (e.mode, e.why) == (mode, why)
    assert e.text() == text


def test_on_disk(tmp_path: Path) -> None:
    v = tmp_path / "data"
    assert on_disk(v) == (OnDisk.NOTHING, 0)  # no directory
    v.mkdir()
    assert on_disk(v) == (OnDisk.NOTHING, 0)  # an empty one
    (v / "f").write_text("x")
    assert on_disk(v) == (OnDisk.DATA_DIR, 0)
    (tmp_path / "data.ext4").write_bytes(b"\0" * 4096)
    assert on_disk(v) == (OnDisk.IMAGE, 4096)  # the image wins: the directory is its mount


async def test_supervisor_reports_each_volumes_quota_mode(tmp_path: Path) -> None:
    clock = FakeClock()
    rt = FakeRuntime(clock)
    spec = WorkloadSpec(
        name="db",
        image="img",
        volumes=(Volume("data", "/data", 16 * MI), Volume("seed", "/seed", 0, True)),
    )
    sup = Supervisor(rt, clock, lambda: None, volumes_root=tmp_path, volume_store=PlainVolumes())
    async with asyncio.TaskGroup() as tg:
        t1, t2 = tg.create_task(rt.run()), tg.create_task(sup.run())
        sup.assign([Assigned("db-0", "db", 1, spec)])
        for _ in range(100):
            await clock.run_for(0.1, step=0.05)
            if sup.workers["db-0"].status.volume_quota:
                break
        assert sup.workers["db-0"].status.volume_quota == {
            "data": "report: quotas are off on this agent",
            "seed": "report: no size hint",
        }
        assert (tmp_path / "db" / "db-0" / "data").is_dir()
        t1.cancel()
        t2.cancel()
