"""Build an OCI runtime spec (config.json) from a ``ContainerSpec`` and its image's config.

Pure: no I/O. Defaults follow containerd 1.6's ``oci.populateDefaultUnixSpec``: /proc, /dev,
/dev/pts, /dev/shm, /dev/mqueue, /sys and a read-only cgroup mount; the default capability set;
masked and read-only /proc paths; RLIMIT_NOFILE 1024; pid, ipc, uts and mount namespaces.
The network namespace is the one ``ContainerSpec.netns`` names (made and wired by the agent's
CNI code); without it the container shares the host network (see docs/runtime.md).
"""

from __future__ import annotations

from typing import Any

from cloudless.lib.errors import ValidationError
from cloudless.runtime.oci.image import ImageConfig
from cloudless.runtime.types import ContainerSpec

SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CPU_PERIOD_US = 100_000
SHIM_GROUP_ANNOTATION = "io.containerd.runc.v2.group"

DEFAULT_CAPS = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]
MASKED_PATHS = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
]
READONLY_PATHS = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
]


def default_mounts() -> list[dict[str, Any]]:
    return [
        {
            "destination": "/proc",
            "type": "proc",
            "source": "proc",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        },
    ]


def resolve_args(spec: ContainerSpec, image: ImageConfig) -> list[str]:
    """Docker's rule: ``command`` replaces Entrypoint (and drops the image Cmd); ``args``
    replaces Cmd. Example: image Entrypoint ["httpd"], Cmd ["-f"], args ["-p", "80"] ->
    ["httpd", "-p", "80"]."""
    if spec.command:
        return [*spec.command, *spec.args]
    args = [*image.entrypoint, *(spec.args or image.cmd)]
    if not args:
        raise ValidationError(
            f"command: image {spec.image!r} has neither Entrypoint nor Cmd; set a command"
        )
    return args


def merge_env(spec: ContainerSpec, image: ImageConfig) -> list[str]:
    """Image Env, then spec env over it (same name: spec wins); PATH defaulted if absent."""
    env: dict[str, str] = {}
    for item in image.env:
        k, _, v = item.partition("=")
        env[k] = v
    env.update(spec.env)
    env.setdefault("PATH", DEFAULT_PATH)
    return [f"{k}={v}" for k, v in env.items()]


def parse_user(user: str) -> tuple[int, int]:
    """Numeric ``uid[:gid]`` (or ``root``); names other than root need /etc/passwd, which we do
    not read, so they are refused with a reason."""
    if not user or user == "root":
        return 0, 0
    uid_s, _, gid_s = user.partition(":")
    try:
        uid = 0 if uid_s == "root" else int(uid_s)
        gid = int(gid_s) if gid_s else uid
    except ValueError:
        raise ValidationError(
            f"image user {user!r}: only numeric uid[:gid] is supported; rebuild the image "
            "with a numeric USER"
        ) from None
    return uid, gid


def bind_mounts(spec: ContainerSpec) -> list[dict[str, Any]]:
    """The spec's host directories as OCI bind mounts (recursive; ``ro`` when read-only)."""
    return [
        {
            "destination": m.destination,
            "type": "bind",
            "source": m.source,
            "options": ["rbind", "ro" if m.read_only else "rw"],
        }
        for m in spec.mounts
    ]


def _namespaces(spec: ContainerSpec) -> list[dict[str, str]]:
    out = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if spec.netns:
        out.append({"type": "network", "path": spec.netns})
    return out


def build_runtime_spec(
    spec: ContainerSpec,
    image: ImageConfig,
    *,
    cgroups_path: str,
    extra_mounts: list[dict[str, Any]] | None = None,
    shim_group: str = "",
) -> dict[str, Any]:
    """The runtime spec; ``shim_group`` (annotation ``io.containerd.runc.v2.group``) makes
    containers of one group share a runc shim process."""
    uid, gid = parse_user(image.user)
    resources: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    if spec.memory_bytes:
        resources["memory"] = {"limit": spec.memory_bytes}
    if spec.cpu_millicores:
        # 1000 millicores = one CPU = a full period of quota; shares scale like Kubernetes'.
        resources["cpu"] = {
            "quota": spec.cpu_millicores * CPU_PERIOD_US // 1000,
            "period": CPU_PERIOD_US,
            "shares": max(2, spec.cpu_millicores * 1024 // 1000),
        }
    caps = list(DEFAULT_CAPS)
    annotations = {SHIM_GROUP_ANNOTATION: shim_group} if shim_group else {}
    return {
        "ociVersion": "1.0.2-dev",
        "annotations": annotations,
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": gid},
            "args": resolve_args(spec, image),
            "env": merge_env(spec, image),
            "cwd": spec.working_dir or image.working_dir or "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs"},
        "hostname": spec.id[:63],
        "mounts": default_mounts() + list(extra_mounts or []) + bind_mounts(spec),
        "linux": {
            "resources": resources,
            "cgroupsPath": cgroups_path,
            "namespaces": _namespaces(spec),
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
        },
    }
