"""Device facts: pure decisions as tables, probes fed fake /proc and /sys, one real smoke."""

from __future__ import annotations

import pytest

from cloudless.agent.facts import (
    UNKNOWN,
    CgroupLimits,
    DeviceFacts,
    FactSources,
    classify_device,
    detect_cgroup_limits,
    detect_facts,
    detect_virtualization,
    normalize_arch,
    normalize_os,
    parse_cpu_max,
    parse_meminfo_total,
    parse_memory_limit,
)
from cloudless.model.resources import Resources

GiB = 2**30


@pytest.mark.parametrize(
    ("machine", "arch"),
    [
        ("x86_64", "amd64"),
        ("AMD64", "amd64"),  # Windows spelling
        ("aarch64", "arm64"),
        ("arm64", "arm64"),  # macOS spelling
        ("armv7l", "arm"),  # Raspberry Pi OS 32-bit
        ("armv6l", "arm"),  # Pi Zero
        ("armv8l", "arm"),  # 32-bit userland on a 64-bit core
        ("i686", "386"),
        ("riscv64", "riscv64"),
        ("ppc64le", "ppc64le"),
        ("sparc64", "sparc64"),  # unknown: kept, lower-cased
        ("", UNKNOWN),
    ],
)
def test_normalize_arch(machine: str, arch: str) -> None:
    assert normalize_arch(machine) == arch


@pytest.mark.parametrize(
    ("system", "os_name"),
    [("Linux", "linux"), ("Darwin", "darwin"), ("Windows", "windows"), ("", UNKNOWN)],
)
def test_normalize_os(system: str, os_name: str) -> None:
    assert normalize_os(system) == os_name


@pytest.mark.parametrize(
    ("text", "total"),
    [
        ("MemTotal:        8048576 kB\nMemFree: 1 kB\n", 8048576 * 1024),  # KiB -> bytes
        ("MemFree: 1 kB\nMemTotal: 1024 kB\n", 1_048_576),  # any line order
        ("MemTotal: lots kB\n", None),
        ("", None),
    ],
)
def test_parse_meminfo_total(text: str, total: int | None) -> None:
    assert parse_meminfo_total(text) == total


@pytest.mark.parametrize(
    ("kw", "virt"),
    [
        ({"detect_virt": "kvm\n"}, "kvm"),
        ({"detect_virt": "none\n", "dmi_product": "ThinkPad X1"}, ""),
        ({"dmi_vendor": "QEMU", "dmi_product": "Standard PC (Q35 + ICH9, 2009)"}, "qemu"),
        ({"dmi_vendor": "DigitalOcean", "dmi_product": "Droplet"}, "digitalocean"),
        ({"dmi_vendor": "Microsoft Corporation", "dmi_product": "Virtual Machine"}, "microsoft"),
        ({"dmi_product": "VMware Virtual Platform"}, "vmware"),
        ({"hypervisor_type": "xen\n"}, "xen"),
        ({"cpuinfo": "processor: 0\nflags\t\t: fpu sse2 hypervisor lm\n"}, "vm"),
        ({"cpuinfo": "processor: 0\nflags\t\t: fpu sse2 lm\n"}, ""),
        ({"dmi_vendor": "Dell Inc.", "dmi_product": "PowerEdge R640"}, ""),
        ({}, ""),  # no evidence at all: bare metal as far as we can tell
    ],
)
def test_detect_virtualization(kw: dict[str, str], virt: str) -> None:
    assert detect_virtualization(**kw) == virt


@pytest.mark.parametrize(
    ("arch", "memory", "battery", "virt", "chassis", "board", "cls"),
    [
        ("amd64", 16 * GiB, False, "kvm", None, "", "vps"),  # virtual beats everything
        ("amd64", 16 * GiB, True, "", 10, "", "laptop"),  # battery + notebook chassis
        ("amd64", 16 * GiB, False, "", 9, "", "laptop"),  # laptop chassis, battery removed
        ("arm64", 8 * GiB, True, "", None, "", "laptop"),  # ARM laptop: the battery decides
        ("arm", 1 * GiB, False, "", None, "", "iot"),  # 1 GiB <= 4 GiB on ARM
        ("arm64", 4 * GiB, False, "", None, "", "iot"),  # boundary: <= 4 GiB is small
        ("arm64", 4 * GiB + 1, False, "", None, "", "server"),  # one byte over: not small
        ("arm64", 8 * GiB, False, "", None, "Raspberry Pi 4 Model B Rev 1.4", "iot"),
        ("amd64", 1 * GiB, False, "", None, "", "server"),  # small x86 is not iot
        ("arm64", 0, False, "", None, "", "server"),  # unknown memory is not "small"
        ("amd64", 32 * GiB, False, "", 3, "", "desktop"),  # 3 = Desktop chassis
        ("amd64", 64 * GiB, False, "", 23, "", "server"),  # 23 = Rack Mount chassis
        ("amd64", 64 * GiB, False, "", None, "", "server"),  # nothing says otherwise
    ],
)
def test_classify_device(
    arch: str, memory: int, battery: bool, virt: str, chassis: int | None, board: str, cls: str
) -> None:
    got = classify_device(
        arch=arch,
        memory_bytes=memory,
        has_battery=battery,
        virtualization=virt,
        chassis_type=chassis,
        board_model=board,
    )
    assert got == cls


def fake_sources(
    files: dict[str, str],
    *,
    machine: str = "x86_64",
    detect_virt: str | None = None,
    cores: int | None = 4,
) -> FactSources:
    """A machine made of a dict of file contents (directories are inferred from paths)."""

    def list_dir(path: str) -> list[str]:
        pre = path.rstrip("/") + "/"
        return sorted({p[len(pre) :].split("/")[0] for p in files if p.startswith(pre)})

    return FactSources(
        read_text=files.get,
        list_dir=list_dir,
        run=lambda argv: detect_virt,
        machine=lambda: machine,
        system=lambda: "Linux",
        release=lambda: "6.1.0-test",
        hostname=lambda: "box",
        cpu_count=lambda: cores,
    )


MEMINFO_8G = "MemTotal:       8388608 kB\n"  # 8388608 KiB = 8 GiB


def test_laptop_from_a_system_battery_but_not_a_mouse_battery() -> None:
    files = {
        "/proc/meminfo": MEMINFO_8G,
        "/sys/class/power_supply/AC/type": "Mains\n",
        "/sys/class/power_supply/hidpp_battery_0/type": "Battery\n",
        "/sys/class/power_supply/hidpp_battery_0/scope": "Device\n",  # a wireless mouse
        "/sys/class/dmi/id/chassis_type": "3\n",
    }
    assert detect_facts(fake_sources(files)).device_class == "desktop"
    files["/sys/class/power_supply/BAT0/type"] = "Battery\n"
    facts = detect_facts(fake_sources(files))
    assert (facts.device_class, facts.has_battery) == ("laptop", True)


def test_raspberry_pi() -> None:
    files = {
        "/proc/meminfo": "MemTotal:        944136 kB\n",  # a Pi 3: 944136 KiB < 4 GiB
        "/proc/device-tree/model": "Raspberry Pi 3 Model B Rev 1.2\x00",
    }
    facts = detect_facts(fake_sources(files, machine="armv7l", cores=4))
    assert facts == DeviceFacts(
        hostname="box",
        arch="arm",
        os="linux",
        kernel="6.1.0-test",
        cpu_cores=4,
        memory_bytes=944136 * 1024,
        device_class="iot",
        virtualization="",
        has_battery=False,
        problems=(),
    )


def test_vps_from_dmi_when_systemd_detect_virt_is_absent() -> None:
    files = {
        "/proc/meminfo": MEMINFO_8G,
        "/sys/class/dmi/id/sys_vendor": "Hetzner\n",
        "/sys/class/dmi/id/product_name": "vServer\n",
    }
    facts = detect_facts(fake_sources(files, detect_virt=None))
    assert (facts.device_class, facts.virtualization) == ("vps", "hetzner")


def test_missing_files_and_broken_probes_fail_soft() -> None:
    def boom() -> str:
        raise OSError("uname failed")

    src = fake_sources({}, cores=None)
    src = FactSources(
        read_text=src.read_text,
        list_dir=src.list_dir,
        run=src.run,
        machine=boom,
        system=src.system,
        release=src.release,
        hostname=src.hostname,
        cpu_count=src.cpu_count,
    )
    facts = detect_facts(src)
    assert (facts.arch, facts.cpu_cores, facts.memory_bytes) == (UNKNOWN, 0, 0)
    assert facts.device_class == "server"  # nothing known: the neutral default
    assert facts.problems == (
        "arch: OSError: uname failed",
        "cpu_cores: not available",
        "memory: not available",
    )


def test_real_machine_smoke() -> None:
    facts = detect_facts()
    assert facts.arch != UNKNOWN and facts.os == "linux"
    assert facts.cpu_cores >= 1 and facts.memory_bytes > 0
    assert facts.device_class in {"server", "desktop", "laptop", "iot", "vps"}


@pytest.mark.parametrize(
    ("text", "millis"),
    [
        ("150000 100000\n", 1500),  # 150 ms per 100 ms period = 1.5 cores
        ("50000 100000", 500),
        ("max 100000\n", None),
        ("garbage", None),
        ("", None),
    ],
)
def test_parse_cpu_max(text: str, millis: int | None) -> None:
    assert parse_cpu_max(text) == millis


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("536870912\n", 512 * 2**20),
        ("max\n", None),  # v2: no limit
        ("9223372036854771712\n", None),  # v1: PAGE_COUNTER_MAX pages, i.e. no limit
        ("", None),
    ],
)
def test_parse_memory_limit(text: str, limit: int | None) -> None:
    assert parse_memory_limit(text) == limit


def test_cgroup_v2_limits_from_the_own_cgroup() -> None:
    files = {
        "/proc/self/cgroup": "0::/system.slice/cloudless-agent.service\n",
        "/sys/fs/cgroup/cgroup.controllers": "cpu memory pids\n",
        "/sys/fs/cgroup/system.slice/cloudless-agent.service/cpu.max": "200000 100000\n",
        "/sys/fs/cgroup/system.slice/cloudless-agent.service/memory.max": "1073741824\n",
    }
    limits = detect_cgroup_limits(fake_sources(files))
    assert limits == CgroupLimits(cpu_millis=2000, memory_bytes=GiB)
    assert limits.to_resources() == Resources(cpu_millis=2000, memory_bytes=GiB)


def test_cgroup_v1_limits_fall_back_to_the_mount_root() -> None:
    # Inside a container with a cgroup namespace the listed path does not exist under the
    # mount; the mount's root is the container's own cgroup.
    files = {
        "/proc/self/cgroup": "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n",
        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "50000\n",
        "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes": "268435456\n",
    }
    assert detect_cgroup_limits(fake_sources(files)) == CgroupLimits(500, 256 * 2**20)


def test_no_cgroup_files_means_no_limits() -> None:
    assert detect_cgroup_limits(fake_sources({})) == CgroupLimits()
