"""Per-device session history, kept from the up/down events the leader already sees, and
the device's ``AvailabilityModel`` learned from it. Pure bookkeeping: times are passed in.

The running coordinator keeps one in ``cloudless.churn.keeper`` (fed from the nodes table,
persisted per node); the simulator learns from its traces directly. History older than
``keep_s`` (default 4 weeks) is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cloudless.churn.model import AvailabilityModel


@dataclass
class DeviceHistory:
    """One device: history starts at ``since``; ended ``sessions``; the open one, if up."""

    since: float
    sessions: list[tuple[float, float]] = field(default_factory=list)
    open_since: float | None = None


@dataclass
class SessionLog:
    keep_s: float = 28 * 86400.0
    devices: dict[str, DeviceHistory] = field(default_factory=dict)

    def _get(self, node_id: str, now: float) -> DeviceHistory:
        d = self.devices.get(node_id)
        if d is None:
            d = self.devices[node_id] = DeviceHistory(since=now)
        return d

    def up(self, node_id: str, now: float) -> None:
        d = self._get(node_id, now)
        if d.open_since is None:
            d.open_since = now

    def down(self, node_id: str, now: float) -> None:
        d = self._get(node_id, now)
        if d.open_since is not None and now > d.open_since:
            d.sessions.append((d.open_since, now))
        d.open_since = None
        cut = now - self.keep_s
        d.sessions = [(max(s, cut), e) for s, e in d.sessions if e > cut]
        d.since = max(d.since, cut)

    def forget(self, node_id: str) -> None:
        self.devices.pop(node_id, None)

    def model(self, node_id: str, now: float) -> AvailabilityModel | None:
        d = self.devices.get(node_id)
        if d is None or now <= d.since:
            return None
        sessions = list(d.sessions)
        if d.open_since is not None:
            sessions.append((d.open_since, now))
        return AvailabilityModel.learn(sessions, d.since, now)

    def models(self, now: float) -> dict[str, AvailabilityModel]:
        out = {}
        for node_id in self.devices:
            m = self.model(node_id, now)
            if m is not None:
                out[node_id] = m
        return out
