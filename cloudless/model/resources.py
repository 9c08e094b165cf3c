"""Resource quantities: CPU in millicores, memory/disk in bytes, bandwidth in bits per second.

``Resources`` is a vector with element-wise arithmetic. ``fits(capacity)`` is true when every
dimension of ``self`` is at most the same dimension of ``capacity``; ``shortfall`` names the
dimensions that do not fit, which is what a scheduler's "no" is made of.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields

_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "ki": 2**10,
    "kib": 2**10,
    "mi": 2**20,
    "mib": 2**20,
    "gi": 2**30,
    "gib": 2**30,
    "ti": 2**40,
    "tib": 2**40,
}
_RATE_UNITS = {
    "": 1,
    "bps": 1,
    "k": 10**3,
    "kbps": 10**3,
    "kbit": 10**3,
    "m": 10**6,
    "mbps": 10**6,
    "mbit": 10**6,
    "g": 10**9,
    "gbps": 10**9,
    "gbit": 10**9,
}


# The largest amount any one dimension may hold: far beyond any machine (a million cores,
# an exbibyte, a petabit per second), and small enough that sums over 10,000 replicas stay
# exact in a float and a node's figures fit the agent protocol's int64.
MAX_CPU_MILLIS = 10**9
MAX_BYTES = 2**60
MAX_BPS = 10**15


def _bounded(n: int, hi: int, shown: object) -> int:
    if n > hi:
        raise ValueError(f"{_show(shown)} is more than the limit of {hi:,}")
    return n


def _show(value: object) -> str:
    text = repr(value) if not isinstance(value, str) else f'"{value}"'
    return text if len(text) <= 60 else text[:60] + "..."


def parse_size(value: object) -> int:
    """Bytes from ``512Mi``, ``1G``, ``1.5GiB`` or a plain integer. Raises ValueError."""
    return _bounded(
        _parse_quantity(value, _SIZE_UNITS, "a size (e.g. 512Mi, 1G)"), MAX_BYTES, value
    )


def parse_rate(value: object) -> int:
    """Bits per second from ``100M``, ``1Gbps`` or a plain integer. Raises ValueError."""
    return _bounded(
        _parse_quantity(value, _RATE_UNITS, "a bandwidth (e.g. 100Mbps)"), MAX_BPS, value
    )


def _parse_quantity(value: object, units: dict[str, int], what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not {what}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a finite number")
        if value < 0:
            raise ValueError(f"{value} is negative")
        return int(min(value, 2.0**64))
    if not isinstance(value, str):
        raise ValueError(f"{_show(value)} is not {what}")
    m = _SIZE_RE.match(value) if len(value) <= 64 else None
    if not m or m.group(2).lower() not in units:
        raise ValueError(f"{_show(value)} is not {what}")
    return int(min(float(m.group(1)), 2.0**64) * units[m.group(2).lower()])


def parse_cpu(value: object) -> int:
    """Millicores from ``500m``, ``2``, ``0.25`` or ``"1.5"``. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a CPU amount")
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{value} is not a finite number")
        if value < 0:
            raise ValueError(f"{value} is negative")
        return _bounded(round(min(value, 2.0**64) * 1000), MAX_CPU_MILLIS, value)
    if isinstance(value, str):
        s = value.strip()
        try:
            if len(s) > 64:
                raise ValueError
            if s.endswith("m"):
                n = int(s[:-1])
            else:
                f = float(s)
                if not math.isfinite(f):
                    raise ValueError
                n = round(min(f, 2.0**64) * 1000)
        except ValueError:
            raise ValueError(f"{_show(value)} is not a CPU amount (e.g. 500m, 2)") from None
        if n < 0:
            raise ValueError(f"{_show(value)} is negative")
        return _bounded(n, MAX_CPU_MILLIS, value)
    raise ValueError(f"{_show(value)} is not a CPU amount (e.g. 500m, 2)")


@dataclass(frozen=True, slots=True)
class Resources:
    cpu_millis: int = 0
    memory_bytes: int = 0
    disk_bytes: int = 0
    bandwidth_bps: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            self.cpu_millis + other.cpu_millis,
            self.memory_bytes + other.memory_bytes,
            self.disk_bytes + other.disk_bytes,
            self.bandwidth_bps + other.bandwidth_bps,
        )

    def __sub__(self, other: Resources) -> Resources:
        return Resources(
            self.cpu_millis - other.cpu_millis,
            self.memory_bytes - other.memory_bytes,
            self.disk_bytes - other.disk_bytes,
            self.bandwidth_bps - other.bandwidth_bps,
        )

    def scale(self, k: int) -> Resources:
        return Resources(
            self.cpu_millis * k, self.memory_bytes * k, self.disk_bytes * k, self.bandwidth_bps * k
        )

    def fits(self, capacity: Resources) -> bool:
        return not self.shortfall(capacity)

    def shortfall(self, capacity: Resources) -> list[str]:
        """Dimensions in which ``self`` exceeds ``capacity``: ``["cpu", "memory"]``."""
        out = []
        if self.cpu_millis > capacity.cpu_millis:
            out.append("cpu")
        if self.memory_bytes > capacity.memory_bytes:
            out.append("memory")
        if self.disk_bytes > capacity.disk_bytes:
            out.append("disk")
        if self.bandwidth_bps > capacity.bandwidth_bps:
            out.append("bandwidth")
        return out

    def clamp_min(self, floor: int = 0) -> Resources:
        return Resources(*(max(floor, getattr(self, f.name)) for f in fields(self)))

    def is_zero(self) -> bool:
        return self == Resources()

    def to_dict(self) -> dict[str, int]:
        return {
            "cpu_millis": self.cpu_millis,
            "memory_bytes": self.memory_bytes,
            "disk_bytes": self.disk_bytes,
            "bandwidth_bps": self.bandwidth_bps,
        }

    @classmethod
    def from_dict(cls, d: dict[str, int]) -> Resources:
        return cls(
            int(d.get("cpu_millis", 0)),
            int(d.get("memory_bytes", 0)),
            int(d.get("disk_bytes", 0)),
            int(d.get("bandwidth_bps", 0)),
        )
