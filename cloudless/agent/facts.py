"""Static facts about the device an agent runs on, reported once at enrollment.

``detect_facts(sources)`` runs a handful of independent probes. Each probe fails soft: a missing
file, an unreadable directory or an absent tool yields ``"unknown"`` (or 0) for that one fact
and a line in ``DeviceFacts.problems``; it never raises. The decisions (normalising the
architecture, spotting a hypervisor, guessing the device class) are pure functions over the
probed text, so tests feed them fake ``/proc`` and ``/sys`` content through ``FactSources``.

Device classes, first match wins:

* ``vps``: virtualised (``systemd-detect-virt --vm``, DMI vendor/product, ``/sys/hypervisor``,
  or the x86 ``hypervisor`` cpu flag);
* ``laptop``: a system battery in ``/sys/class/power_supply``, or a portable DMI chassis;
* ``iot``: an ARM/RISC-V board with at most ``IOT_MAX_MEMORY`` of memory, or a device-tree
  model naming a known board (Raspberry Pi, ...);
* ``desktop`` / ``server``: from the DMI chassis type; ``server`` when nothing says otherwise.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from cloudless.model.resources import Resources

UNKNOWN = "unknown"
_T = TypeVar("_T")
IOT_MAX_MEMORY = 4 * 2**30

_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "x64": "amd64",
    "i386": "386",
    "i486": "386",
    "i586": "386",
    "i686": "386",
    "x86": "386",
    "aarch64": "arm64",
    "arm64": "arm64",
    "aarch64_be": "arm64",
    "armv8l": "arm",
    "armv7l": "arm",
    "armv7": "arm",
    "armv6l": "arm",
    "armv5tel": "arm",
    "arm": "arm",
    "riscv64": "riscv64",
    "ppc64le": "ppc64le",
    "ppc64": "ppc64",
    "s390x": "s390x",
    "mips64": "mips64",
    "loongarch64": "loong64",
}
_OS = {"linux": "linux", "darwin": "darwin", "windows": "windows", "freebsd": "freebsd"}

# Substrings of DMI sys_vendor / product_name that mean "this is a virtual machine".
_VM_MARKERS = {
    "kvm": "kvm",
    "qemu": "qemu",
    "standard pc (": "qemu",
    "virtualbox": "oracle",
    "innotek": "oracle",
    "vmware": "vmware",
    "virtual machine": "microsoft",
    "hvm domu": "xen",
    "xen": "xen",
    "google compute engine": "google",
    "amazon ec2": "amazon",
    "droplet": "digitalocean",
    "openstack": "openstack",
    "bhyve": "bhyve",
    "parallels": "parallels",
    "linode": "linode",
    "vultr": "vultr",
    "hetzner vserver": "hetzner",
    "scaleway": "scaleway",
    "cloud hypervisor": "cloud-hypervisor",
    "firecracker": "firecracker",
}
_IOT_BOARDS = ("raspberry pi", "jetson", "beaglebone", "orange pi", "rock pi", "odroid", "pine64")
# SMBIOS chassis types (DMI ``chassis_type``).
_CHASSIS_LAPTOP = {8, 9, 10, 11, 14, 30, 31, 32}
_CHASSIS_DESKTOP = {3, 4, 5, 6, 7, 13, 15, 16, 24, 35, 36}
_CHASSIS_SERVER = {17, 23, 25, 28, 29}


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """What the device is. ``cpu_cores``/``memory_bytes`` are 0 when unknown; ``problems``
    names each probe that could not answer, with why."""

    hostname: str = UNKNOWN
    arch: str = UNKNOWN
    os: str = UNKNOWN
    kernel: str = UNKNOWN
    cpu_cores: int = 0
    memory_bytes: int = 0
    device_class: str = "server"
    virtualization: str = ""  # "" when bare metal or unknown, else the hypervisor's name
    has_battery: bool = False
    problems: tuple[str, ...] = ()


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _list_dir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _run(argv: list[str]) -> str | None:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    # systemd-detect-virt exits 1 and prints "none" on bare metal: still an answer.
    return p.stdout


def _cpu_count() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


@dataclass(frozen=True, slots=True)
class FactSources:
    """The edges the probes read. Defaults read the real machine; tests pass fakes.

    ``read_text(path)`` returns None for a missing/unreadable file; ``list_dir`` returns [] for
    a missing directory; ``run(argv)`` returns stdout or None when the tool cannot run.
    """

    read_text: Callable[[str], str | None] = _read_text
    list_dir: Callable[[str], list[str]] = _list_dir
    run: Callable[[list[str]], str | None] = _run
    machine: Callable[[], str] = platform.machine
    system: Callable[[], str] = platform.system
    release: Callable[[], str] = platform.release
    hostname: Callable[[], str] = socket.gethostname
    cpu_count: Callable[[], int | None] = _cpu_count


def normalize_arch(machine: str) -> str:
    """``x86_64`` -> ``amd64``, ``aarch64`` -> ``arm64``, ``armv7l`` -> ``arm``, ...; an
    unrecognised name is lower-cased and kept; empty is ``unknown``."""
    m = machine.strip().lower()
    if not m:
        return UNKNOWN
    if m in _ARCH:
        return _ARCH[m]
    if m.startswith("armv"):
        return "arm64" if m.startswith("armv8") and "64" in m else "arm"
    return m


def normalize_os(system: str) -> str:
    s = system.strip().lower()
    return _OS.get(s, s or UNKNOWN)


def parse_meminfo_total(text: str) -> int | None:
    """Bytes of ``MemTotal`` in ``/proc/meminfo`` text (kB there means KiB), or None."""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                unit = parts[2].lower() if len(parts) > 2 else "kb"
                return int(parts[1]) * (1024 if unit == "kb" else 1)
    return None


def detect_virtualization(
    *,
    detect_virt: str | None = None,
    dmi_vendor: str | None = None,
    dmi_product: str | None = None,
    hypervisor_type: str | None = None,
    cpuinfo: str | None = None,
) -> str:
    """The hypervisor's name, or "" for bare metal / no evidence. Strongest evidence first:
    ``systemd-detect-virt --vm`` output, DMI strings, ``/sys/hypervisor/type``, cpu flags."""
    if detect_virt is not None:
        v = detect_virt.strip().lower()
        if v and v != "none":
            return v
    dmi = f"{(dmi_vendor or '').strip()} {(dmi_product or '').strip()}".lower()
    for marker, name in _VM_MARKERS.items():
        if marker in dmi:
            return name
    if hypervisor_type and hypervisor_type.strip():
        return hypervisor_type.strip().lower()
    if cpuinfo:
        for line in cpuinfo.splitlines():
            if line.startswith("flags") and " hypervisor" in f" {line.split(':', 1)[-1]} ":
                return "vm"
    return ""


def classify_device(
    *,
    arch: str,
    memory_bytes: int,
    has_battery: bool,
    virtualization: str,
    chassis_type: int | None = None,
    board_model: str = "",
    iot_max_memory: int = IOT_MAX_MEMORY,
) -> str:
    """``vps`` | ``laptop`` | ``iot`` | ``desktop`` | ``server`` (see the module docstring)."""
    if virtualization:
        return "vps"
    if has_battery or chassis_type in _CHASSIS_LAPTOP:
        return "laptop"
    model = board_model.lower()
    if any(b in model for b in _IOT_BOARDS):
        return "iot"
    small = 0 < memory_bytes <= iot_max_memory
    if arch in ("arm", "arm64", "riscv64") and small:
        return "iot"
    if chassis_type in _CHASSIS_DESKTOP:
        return "desktop"
    return "server"


def has_system_battery(sources: FactSources) -> bool:
    """A power supply of type Battery that powers the system (scope ``Device`` batteries, such
    as a wireless mouse's, do not count)."""
    base = "/sys/class/power_supply"
    for name in sources.list_dir(base):
        kind = (sources.read_text(f"{base}/{name}/type") or "").strip().lower()
        scope = (sources.read_text(f"{base}/{name}/scope") or "").strip().lower()
        if kind == "battery" and scope != "device":
            return True
    return False


def detect_facts(sources: FactSources | None = None) -> DeviceFacts:
    """Probe everything; never raises. See ``DeviceFacts.problems`` for what was not found."""
    src = sources or FactSources()
    problems: list[str] = []

    def soft(what: str, default: _T, fn: Callable[[], _T | None]) -> _T:
        try:
            v = fn()
        except Exception as e:  # a probe must never take the agent down
            problems.append(f"{what}: {type(e).__name__}: {e}")
            return default
        if v is None or v == "":
            problems.append(f"{what}: not available")
            return default
        return v

    hostname = soft("hostname", UNKNOWN, src.hostname)
    arch = soft("arch", UNKNOWN, lambda: normalize_arch(src.machine()))
    os_name = soft("os", UNKNOWN, lambda: normalize_os(src.system()))
    kernel = soft("kernel", UNKNOWN, src.release)
    cores = soft("cpu_cores", 0, src.cpu_count)

    def meminfo() -> int | None:
        text = src.read_text("/proc/meminfo")
        return parse_meminfo_total(text) if text is not None else None

    memory = soft("memory", 0, meminfo)

    def virt() -> str:
        out = src.run(["systemd-detect-virt", "--vm"])
        return detect_virtualization(
            detect_virt=out,
            dmi_vendor=src.read_text("/sys/class/dmi/id/sys_vendor"),
            dmi_product=src.read_text("/sys/class/dmi/id/product_name"),
            hypervisor_type=src.read_text("/sys/hypervisor/type"),
            cpuinfo=src.read_text("/proc/cpuinfo"),
        )

    virtualization = ""
    try:
        virtualization = virt()
    except Exception as e:
        problems.append(f"virtualization: {type(e).__name__}: {e}")
    battery = False
    try:
        battery = has_system_battery(src)
    except Exception as e:
        problems.append(f"battery: {type(e).__name__}: {e}")
    chassis: int | None = None
    try:
        raw = (src.read_text("/sys/class/dmi/id/chassis_type") or "").strip()
        chassis = int(raw) if raw.isdigit() else None
    except Exception as e:
        problems.append(f"chassis: {type(e).__name__}: {e}")
    board = ""
    try:
        for path in ("/sys/firmware/devicetree/base/model", "/proc/device-tree/model"):
            text = src.read_text(path)
            if text:
                board = text.replace("\x00", "").strip()
                break
    except Exception as e:
        problems.append(f"board model: {type(e).__name__}: {e}")
    device_class = classify_device(
        arch=arch,
        memory_bytes=memory,
        has_battery=battery,
        virtualization=virtualization,
        chassis_type=chassis,
        board_model=board,
    )
    return DeviceFacts(
        hostname=hostname,
        arch=arch,
        os=os_name,
        kernel=kernel,
        cpu_cores=cores,
        memory_bytes=memory,
        device_class=device_class,
        virtualization=virtualization,
        has_battery=battery,
        problems=tuple(problems),
    )


# Above this a cgroup memory limit means "no limit" (v1 writes PAGE_COUNTER_MAX pages).
_NO_MEMORY_LIMIT = 2**60


@dataclass(frozen=True, slots=True)
class CgroupLimits:
    """Limits the agent's own cgroup puts on it; None where there is none (or unknown)."""

    cpu_millis: int | None = None
    memory_bytes: int | None = None

    def to_resources(self) -> Resources:
        """As a capacity cap for ``ResourceMonitor(limit=...)``: 0 means "no cap"."""
        return Resources(cpu_millis=self.cpu_millis or 0, memory_bytes=self.memory_bytes or 0)


def parse_cpu_max(text: str) -> int | None:
    """Millicores from cgroup v2 ``cpu.max`` (``"150000 100000"`` -> 1500; ``"max ..."`` ->
    None)."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        return parse_cfs_quota(parts[0], parts[1])
    except ValueError:
        return None


def parse_cfs_quota(quota: str, period: str) -> int | None:
    """Millicores from cgroup v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us`` (quota -1: None)."""
    q, p = int(quota.strip()), int(period.strip())
    if q <= 0 or p <= 0:
        return None
    return q * 1000 // p


def parse_memory_limit(text: str) -> int | None:
    """Bytes from v2 ``memory.max`` or v1 ``memory.limit_in_bytes`` (``max``/huge: None)."""
    t = text.strip()
    if not t.isdigit():
        return None
    n = int(t)
    return n if 0 < n < _NO_MEMORY_LIMIT else None


def _cgroup_paths(proc_self_cgroup: str) -> dict[str, str]:
    """controller -> path from ``/proc/self/cgroup``; the v2 unified entry is key ``""``."""
    out: dict[str, str] = {}
    for line in proc_self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for ctrl in parts[1].split(",") if parts[1] else [""]:
                out[ctrl] = parts[2].strip()
    return out


def detect_cgroup_limits(sources: FactSources | None = None) -> CgroupLimits:
    """CPU and memory limits of this process's cgroup (v2 unified or v1), failing soft to
    "no limit". The cgroup's own directory is tried first, then the mount's root (inside a
    container with a cgroup namespace the root *is* the container's cgroup)."""
    src = sources or FactSources()
    try:
        paths = _cgroup_paths(src.read_text("/proc/self/cgroup") or "")
        cpu: int | None = None
        mem: int | None = None
        if src.read_text("/sys/fs/cgroup/cgroup.controllers") is not None:
            for d in _dirs("/sys/fs/cgroup", paths.get("", "/")):
                cpu = cpu or parse_cpu_max(src.read_text(f"{d}/cpu.max") or "")
                mem = mem or parse_memory_limit(src.read_text(f"{d}/memory.max") or "")
            return CgroupLimits(cpu, mem)
        for d in _dirs("/sys/fs/cgroup/cpu", paths.get("cpu", "/")):
            quota = src.read_text(f"{d}/cpu.cfs_quota_us")
            period = src.read_text(f"{d}/cpu.cfs_period_us")
            if quota and period and cpu is None:
                cpu = parse_cfs_quota(quota, period)
        for d in _dirs("/sys/fs/cgroup/memory", paths.get("memory", "/")):
            mem = mem or parse_memory_limit(src.read_text(f"{d}/memory.limit_in_bytes") or "")
        return CgroupLimits(cpu, mem)
    except Exception:  # limits are an optimisation: unknown means none
        return CgroupLimits()


def _dirs(mount: str, path: str) -> list[str]:
    own = f"{mount}/{path.strip('/')}".rstrip("/")
    return [own] if own == mount else [own, mount]


__all__ = [
    "IOT_MAX_MEMORY",
    "UNKNOWN",
    "CgroupLimits",
    "DeviceFacts",
    "FactSources",
    "classify_device",
    "detect_cgroup_limits",
    "detect_facts",
    "detect_virtualization",
    "has_system_battery",
    "normalize_arch",
    "normalize_os",
    "parse_cfs_quota",
    "parse_cpu_max",
    "parse_meminfo_total",
    "parse_memory_limit",
]
