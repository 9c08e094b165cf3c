"""Battery-driven planned departure: a device on battery below a threshold leaves the
cluster (its replicas move elsewhere first, ``Agent.request_leave``) before it dies.

``leave_reason`` decides (pure); ``watch_battery`` reads the battery on the injected clock
and asks once. A device without a battery (``read_battery`` gives None) never leaves for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import psutil

from cloudless.lib.clock import Clock


@dataclass(frozen=True)
class Battery:
    percent: float
    plugged: bool  # on mains power (charging or full)


def read_battery() -> Battery | None:
    """The system battery as psutil sees it; None without one (or unreadable)."""
    try:
        b = psutil.sensors_battery()
    except (OSError, RuntimeError, AttributeError):
        return None
    if b is None:
        return None
    return Battery(float(b.percent), bool(b.power_plugged))


def leave_reason(battery: Battery | None, below_pct: float) -> str | None:
    """Why to leave now, or None: on battery (not plugged in) at or below ``below_pct``.
    ``below_pct`` 0 turns the rule off."""
    if below_pct <= 0 or battery is None or battery.plugged:
        return None
    if battery.percent > below_pct:
        return None
    return f"battery at {battery.percent:.0f}% and discharging (leaves at {below_pct:g}%)"


async def watch_battery(
    clock: Clock,
    read: Callable[[], Awaitable[Battery | None]],
    below_pct: float,
    leave: Callable[[str], None],
    *,
    interval_s: float = 30.0,
) -> None:
    """Read the battery every ``interval_s``; call ``leave(reason)`` once and return when
    ``leave_reason`` says so. Returns at once when the rule is off."""
    if below_pct <= 0:
        return
    while True:
        why = leave_reason(await read(), below_pct)
        if why is not None:
            leave(why)
            return
        await clock.sleep(interval_s)
