"""Holding a persistent volume to its size hint, where this node can.

A ``VolumeStore`` makes a volume's directory ready to mount (``prepare``) and deletes a
replica's volumes (``drop``). Two implementations:

- ``ImageVolumes`` enforces the hint: the volume is an ext4 file system in a sparse image file
  of the hint's size, ``<volume>.ext4`` beside the volume's directory, loop-mounted on that
  directory (``nodev,nosuid``). A write past it fails inside the container with ENOSPC. ext4
  keeps a few percent of the image for its own metadata and journal, so a little less than the
  hint is usable; the image is sparse, so the host's disk is used only as data is written.
  A larger hint grows the image the next time the replica starts, before its container does:
  unmounted, checked (``e2fsck``) and resized (``resize2fs``) offline, which needs no more
  than root (an online resize also needs CAP_SYS_RESOURCE, which container hosts often drop);
  a smaller one keeps it (shrinking could lose data). It needs root, ``/dev/loop-control``,
  ``losetup``, ``mount`` and e2fsprogs; ``image_support`` says which is missing.
- ``PlainVolumes`` keeps a plain directory and enforces nothing: usage is reported against
  the hint. It is the fallback, with the reason in the volume's quota text.

Which one a volume gets is decided by ``decide`` (pure), from the hint, what is on disk and
what the node supports. A volume keeps the kind it was made with: a plain directory that
already holds data stays plain (its data is not moved), an image stays an image.

An image stays mounted from its first use until the volume is dropped: across container
restarts and recreations, the replica's removal from the node without ``--volumes`` (its data
stays readable on the host) and agent stops (containers keep running across an agent restart,
and the next agent adopts them and their mounts). After a reboot the next start of the replica
mounts it again. A mount is never made twice for one image: an image whose loop device is
still attached (the host's mount was removed while a container kept using it) is mounted from
that device, so the two mounts share one file system.
"""

from __future__ import annotations

import asyncio
import enum
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cloudless.lib.errors import CloudlessError
from cloudless.lib.waits import within

IMAGE = "image"  # enforced: a loop-mounted ext4 image of the hint's size
REPORT = "report"  # not enforced: usage reported against the hint
IMAGE_SUFFIX = ".ext4"
MIN_IMAGE_BYTES = 4 << 20  # smaller hints get an image this big (ext4 needs room for itself)
MOUNT_OPTIONS = "nodev,nosuid"
TOOLS = ("losetup", "mount", "umount", "mkfs.ext4", "e2fsck", "resize2fs")
DETACH_WAIT_S = 5.0  # the kernel clears an auto-clear loop device asynchronously
COMMAND_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Enforcement:
    """How one volume is held to its hint: ``mode`` IMAGE or REPORT, and why (REPORT always
    says why it is not enforced; IMAGE may add a note)."""

    mode: str
    why: str = ""

    def text(self) -> str:
        """What the agent reports: ``image``, ``image: <note>`` or ``report: <why>``."""
        return f"{self.mode}: {self.why}" if self.why else self.mode


def parse_enforcement(text: str) -> Enforcement:
    mode, _, why = text.partition(":")
    return Enforcement(mode.strip(), why.strip())


class OnDisk(enum.Enum):
    NOTHING = "nothing"  # no directory, or an empty one
    DATA_DIR = "data-dir"  # a plain directory holding files
    IMAGE = "image"  # an image file beside the directory


class Action(enum.Enum):
    PLAIN = "plain"  # use the directory as it is
    CREATE_IMAGE = "create-image"
    MOUNT_IMAGE = "mount-image"  # mount (if not mounted) and grow to ``size_bytes`` if smaller


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    enforcement: Enforcement
    size_bytes: int = 0  # the image's size for CREATE_IMAGE / MOUNT_IMAGE (0: keep)


def image_size(hint: int) -> int:
    """The image size for a hint: at least ``MIN_IMAGE_BYTES``, rounded up to 4 KiB."""
    return -(-max(hint, MIN_IMAGE_BYTES) // 4096) * 4096


def decide(hint: int, on_disk: OnDisk, image_bytes: int, unsupported: str | None) -> Decision:
    """What to do with one volume (pure).

    ``hint`` is the spec's size (0: none), ``image_bytes`` the size of the image on disk
    (with ``OnDisk.IMAGE``), ``unsupported`` why this node cannot make images (None: it can).

    Example: hint 16 MiB, nothing on disk, supported: create a 16 MiB image, mode ``image``.
    """
    if on_disk is OnDisk.IMAGE:
        if unsupported is not None:
            raise CloudlessError(
                f"the volume is an ext4 image and this agent cannot mount it: {unsupported}"
            )
        want = image_size(hint) if hint else 0
        if want > image_bytes:
            return Decision(Action.MOUNT_IMAGE, Enforcement(IMAGE), want)
        note = ""
        if hint and want < image_bytes:
            note = f"{image_bytes} bytes, more than the hint: an image only grows"
        elif not hint:
            note = f"{image_bytes} bytes, kept from an earlier hint"
        return Decision(Action.MOUNT_IMAGE, Enforcement(IMAGE, note))
    if hint <= 0:
        return Decision(Action.PLAIN, Enforcement(REPORT, "no size hint"))
    if unsupported is not None:
        return Decision(Action.PLAIN, Enforcement(REPORT, unsupported))
    if on_disk is OnDisk.DATA_DIR:
        return Decision(
            Action.PLAIN,
            Enforcement(REPORT, "a plain directory with data from before quotas were enforced"),
        )
    return Decision(Action.CREATE_IMAGE, Enforcement(IMAGE), image_size(hint))


def image_of(volume_dir: Path) -> Path:
    return volume_dir.with_name(volume_dir.name + IMAGE_SUFFIX)


def on_disk(volume_dir: Path) -> tuple[OnDisk, int]:
    """What holds the volume now, and the image's size (blocking, a few stat calls)."""
    img = image_of(volume_dir)
    try:
        return OnDisk.IMAGE, img.stat().st_size
    except FileNotFoundError:
        pass
    try:
        with os.scandir(volume_dir) as it:
            has_data = any(True for _ in it)
    except (FileNotFoundError, NotADirectoryError):
        has_data = False
    return (OnDisk.DATA_DIR if has_data else OnDisk.NOTHING), 0


class VolumeStore(Protocol):
    """Makes volume directories ready to bind-mount. Contract (``tests/contract/volumes``):
    ``prepare`` returns with ``volume_dir`` an existing writable directory, keeps what an earlier
    ``prepare`` of the same directory left in it, and is idempotent; ``drop`` deletes everything
    under a replica's directory (mounts included) and is idempotent."""

    unsupported: str | None  # why volumes with a hint are not enforced here (None: they are)

    async def prepare(self, volume_dir: Path, hint: int) -> Enforcement: ...

    async def drop(self, replica_dir: Path) -> None: ...


class PlainVolumes:
    """Directories only (report-only quotas). ``prepare`` makes the directory in the event loop:
    a mkdir, and the simulation stays deterministic."""

    def __init__(self, unsupported: str = "quotas are off on this agent") -> None:
        self.unsupported: str | None = unsupported

    async def prepare(self, volume_dir: Path, hint: int) -> Enforcement:
        return _plain(volume_dir, hint, self.unsupported or "not enforced")

    async def drop(self, replica_dir: Path) -> None:
        await asyncio.to_thread(shutil.rmtree, replica_dir, True)


def _plain(volume_dir: Path, hint: int, unsupported: str) -> Enforcement:
    kind, size = on_disk(volume_dir)
    d = decide(hint, kind, size, unsupported)
    volume_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    return d.enforcement


def _look(volume_dir: Path) -> tuple[OnDisk, int, bool]:
    """``on_disk``, the directory made if missing, and whether it is a mount point."""
    kind, size = on_disk(volume_dir)
    volume_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    return kind, size, os.path.ismount(volume_dir)


def _sparse(path: Path, size: int) -> None:
    """Make ``path`` ``size`` bytes long (a new file, or a longer one), sparse."""
    with open(path, "ab") as f:
        f.truncate(size)


def image_support() -> str | None:
    """Why this node cannot enforce volume sizes with loop-mounted images, or None."""
    if os.geteuid() != 0:
        return "the agent is not root (loop mounts need root)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"{', '.join(missing)} not installed (Debian packages e2fsprogs and mount)"
    if not os.path.exists("/dev/loop-control"):
        return "no /dev/loop-control (the loop driver is not loaded)"
    return None


async def _run(*argv: str, ok: tuple[int, ...] = (0,)) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await within(COMMAND_TIMEOUT_S, proc.communicate())
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise CloudlessError(f"{argv[0]} did not finish in {COMMAND_TIMEOUT_S:.0f} s") from None
    if proc.returncode not in ok:
        text = (err or out).decode(errors="replace").strip()
        raise CloudlessError(f"{' '.join(argv)}: {text or f'exit code {proc.returncode}'}")
    return out.decode(errors="replace")


def mounts_under(root: Path, fstype: str = "") -> list[Path]:
    """Mount points at or below ``root`` (of ``fstype`` only, if given), deepest first, from
    /proc/self/mountinfo."""
    top = os.path.realpath(root)
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields, _, tail = line.partition(" - ")
                parts, kind = fields.split(), tail.split()[:1]
                if len(parts) < 5 or (fstype and kind != [fstype]):
                    continue
                point = parts[4].replace("\\040", " ")
                if point == top or point.startswith(top + "/"):
                    found.append(Path(point))
    except OSError:
        return []
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


class ImageVolumes:
    """Volumes with a hint are loop-mounted ext4 images (see the module docstring)."""

    def __init__(self) -> None:
        self.unsupported: str | None = None
        self._locks: dict[Path, asyncio.Lock] = {}

    async def prepare(self, volume_dir: Path, hint: int) -> Enforcement:
        lock = self._locks.setdefault(volume_dir, asyncio.Lock())
        async with lock:
            kind, size, mounted = await asyncio.to_thread(_look, volume_dir)
            d = decide(hint, kind, size, None)
            img = image_of(volume_dir)
            if d.action is Action.CREATE_IMAGE:
                await self._create(img, d.size_bytes)
                await self._mount(img, volume_dir)
                lost = volume_dir / "lost+found"  # keep a new volume empty, as a directory is
                await asyncio.to_thread(shutil.rmtree, lost, True)
            elif d.action is Action.MOUNT_IMAGE:
                if d.size_bytes:
                    if mounted:
                        await _run("umount", str(volume_dir))  # fails while a container uses it
                    await self._grow(img, d.size_bytes)
                    mounted = False
                if not mounted:
                    await self._mount(img, volume_dir)
            return d.enforcement

    async def _create(self, img: Path, size: int) -> None:
        part = img.with_name(img.name + ".new")
        await asyncio.to_thread(part.unlink, True)  # a leftover of an interrupted attempt
        await asyncio.to_thread(_sparse, part, size)
        try:
            await _run("mkfs.ext4", "-q", "-F", "-m", "0", "-E", "nodiscard", str(part))
        except CloudlessError:
            await asyncio.to_thread(part.unlink, True)
            raise
        await asyncio.to_thread(part.rename, img)  # an image is only ever complete

    async def _device(self, img: Path) -> str:
        """The loop device the image is attached to ("" when none)."""
        out = await _run("losetup", "-n", "-O", "NAME", "-j", str(img))
        return out.split()[0] if out.split() else ""

    async def _mount(self, img: Path, volume_dir: Path) -> None:
        dev = await self._device(img)
        if dev:  # still attached (a container holds its file system): share that one
            await _run("mount", "-o", MOUNT_OPTIONS, dev, str(volume_dir))
        else:
            await _run("mount", "-o", f"loop,{MOUNT_OPTIONS}", str(img), str(volume_dir))

    async def _grow(self, img: Path, size: int) -> None:
        """Grow the unmounted image's file system to ``size`` bytes, offline."""
        for _ in range(int(DETACH_WAIT_S / 0.05)):
            if not await self._device(img):
                break
            await asyncio.sleep(0.05)  # the kernel's detach sends no event to wait on
        else:
            raise CloudlessError(f"{img} is still in use (a loop device holds it); not grown")
        # resize2fs wants a checked file system; e2fsck's 1 is "errors corrected"
        await _run("e2fsck", "-f", "-p", str(img), ok=(0, 1))
        await asyncio.to_thread(_sparse, img, size)
        await _run("resize2fs", str(img))

    async def drop(self, replica_dir: Path) -> None:
        for point in mounts_under(replica_dir):
            await _run("umount", str(point))  # loop devices mounted with -o loop detach too
        for p in list(self._locks):
            if p.parent == replica_dir:
                del self._locks[p]
        await asyncio.to_thread(shutil.rmtree, replica_dir, True)


async def unmount_images(root: Path) -> list[Path]:
    """Unmount every ext4 mount under ``root`` (a lazy unmount where a plain one fails) and
    return them: tests' teardown, or an operator retiring a node's data directory (the agent
    stopped and its containers removed)."""
    points = mounts_under(root, "ext4")
    for point in points:
        try:
            await _run("umount", str(point))
        except CloudlessError:
            await _run("umount", "-l", str(point))
    return points


def volume_store() -> VolumeStore:
    """The store this node can run: images where supported, else plain directories."""
    why = image_support()
    return ImageVolumes() if why is None else PlainVolumes(why)
