"""The ``VolumeStore`` contract, run on both stores: ``PlainVolumes`` (directories, report-only)
and ``ImageVolumes`` (loop-mounted ext4 images; needs root, /dev/loop-control and e2fsprogs,
skipped otherwise). Then what only images do: a write past the hint fails with ENOSPC, a larger
hint grows the image, a second agent process does not mount an image twice."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloudless.agent.volume_quota import (
    IMAGE,
    REPORT,
    ImageVolumes,
    PlainVolumes,
    VolumeStore,
    image_of,
    image_support,
    mounts_under,
    unmount_images,
)

MI = 1 << 20
NO_IMAGES = image_support()
needs_images = pytest.mark.skipif(NO_IMAGES is not None, reason=f"no volume images: {NO_IMAGES}")


@pytest.fixture(params=["plain", pytest.param("image", marks=needs_images)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VolumeStore]:
    yield PlainVolumes() if request.param == "plain" else ImageVolumes()
    await unmount_images(tmp_path)


def fill(path: Path, mib: int) -> None:
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(b"\1" * MI)
            f.flush()
            os.fsync(f.fileno())


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True)


async def detached(img: Path) -> None:
    """The image's loop device goes (the kernel clears an auto-clear device asynchronously)."""
    for _ in range(100):
        if not await asyncio.to_thread(loop_devices_of, img):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{img} still has a loop device: {loop_devices_of(img)}")


def loop_devices_of(img: Path) -> list[str]:
    out = subprocess.run(
        ["losetup", "-n", "-O", "NAME", "-j", str(img)], capture_output=True, text=True
    ).stdout
    return out.split()


async def test_prepare_gives_a_writable_directory_that_keeps_its_data(
    store: VolumeStore, tmp_path: Path
) -> None:
    d = tmp_path / "db" / "db-0" / "data"
    e = await store.prepare(d, 8 * MI)
    assert e.mode == (REPORT if isinstance(store, PlainVolumes) else IMAGE)
    assert d.is_dir() and os.listdir(d) == []  # new: empty (no lost+found)
    (d / "f").write_bytes(b"x" * 1000)
    assert await store.prepare(d, 8 * MI) == e  # idempotent
    assert (d / "f").read_bytes() == b"x" * 1000
    assert len(mounts_under(d)) == (0 if isinstance(store, PlainVolumes) else 1)


async def test_drop_deletes_the_replicas_volumes_and_is_idempotent(
    store: VolumeStore, tmp_path: Path
) -> None:
    rep = tmp_path / "db" / "db-0"
    for name in ("data", "logs"):
        await store.prepare(rep / name, 8 * MI)
        (rep / name / "f").write_text(name)
    img = image_of(rep / "data")
    await store.drop(rep)
    assert not rep.exists() and mounts_under(rep) == []
    await detached(img)
    await store.drop(rep)
    await store.prepare(rep / "data", 8 * MI)
    assert os.listdir(rep / "data") == []  # a new, empty volume


async def test_no_hint_is_a_plain_directory_reported(store: VolumeStore, tmp_path: Path) -> None:
    d = tmp_path / "v"
    e = await store.prepare(d, 0)
    assert (e.mode, e.why) == (REPORT, "no size hint")
    assert mounts_under(d) == [] and not image_of(d).exists()


@needs_images
async def test_a_write_past_the_hint_fails_with_enospc(tmp_path: Path) -> None:
    store = ImageVolumes()
    d = tmp_path / "v"
    try:
        await store.prepare(d, 8 * MI)
        with pytest.raises(OSError) as e:
            await asyncio.to_thread(fill, d / "big", 16)
        assert e.value.errno == errno.ENOSPC
        written = (d / "big").stat().st_size
        # ext4's metadata and journal take some of the 8 MiB: 5-7 MiB of data fit
        assert 5 * MI <= written < 8 * MI, written
    finally:
        await unmount_images(tmp_path)


@needs_images
async def test_a_larger_hint_grows_the_image_with_its_data(tmp_path: Path) -> None:
    store = ImageVolumes()
    d = tmp_path / "v"
    try:
        await store.prepare(d, 8 * MI)
        (d / "keep").write_text("kept")
        small = os.statvfs(d)
        await store.prepare(d, 32 * MI)
        big = os.statvfs(d)
        assert image_of(d).stat().st_size == 32 * MI
        # 24 MiB more blocks, less the new groups' metadata
        grown = (big.f_blocks - small.f_blocks) * big.f_frsize
        assert 20 * MI < grown <= 24 * MI, grown
        assert (d / "keep").read_text() == "kept"
        # a smaller hint keeps the image as it is, with a note
        e = await store.prepare(d, 16 * MI)
        assert e.why == f"{32 * MI} bytes, more than the hint: an image only grows"
        assert image_of(d).stat().st_size == 32 * MI
    finally:
        await unmount_images(tmp_path)


@needs_images
async def test_an_image_still_attached_is_mounted_from_its_device_not_twice(
    tmp_path: Path,
) -> None:
    """A container's bind mount keeps the file system (and its loop device) after the host's
    mount is gone; the next agent process mounts that device, so both see one file system."""
    d, held = tmp_path / "v", tmp_path / "held-by-container"
    held.mkdir()
    try:
        await ImageVolumes().prepare(d, 8 * MI)
        (dev,) = loop_devices_of(image_of(d))
        await asyncio.to_thread(sh, "mount", "--bind", str(d), str(held))
        await asyncio.to_thread(sh, "umount", str(d))
        assert loop_devices_of(image_of(d)) == [dev]  # still attached: "held" uses it
        (held / "written-meanwhile").write_text("1")
        await ImageVolumes().prepare(d, 8 * MI)  # a new agent process
        assert loop_devices_of(image_of(d)) == [dev]
        assert (d / "written-meanwhile").read_text() == "1"
    finally:
        await unmount_images(tmp_path)
