"""Connection liveness below Python: HTTP/2 keepalive pings and TCP_USER_TIMEOUT.

The agent's control stream is watched by gRPC's C core, not by Python code, so that
detection costs no event-loop time on either side and does not slow down when a loop is
busy. Three things can happen to an agent, and each is told apart by a different layer:

* **the process dies** (kill -9, crash, host reset): the kernel closes the socket at once,
  and the stream ends on the coordinator within milliseconds;
* **the link is cut** (cable, Wi-Fi, firewall, a host that froze or lost power): nothing
  arrives. The coordinator sends an HTTP/2 PING after ``ping_every_ms`` without reading
  anything; that segment is never acknowledged, and the kernel closes the connection after
  ``unacked_limit_ms`` (TCP_USER_TIMEOUT, which gRPC sets from ``grpc.keepalive_timeout_ms``).
  With the defaults the stream ends 0.6-1.6 s after the cut (the PING goes out 0-1 s after
  the last read; retransmissions at +0.2 s and +0.6 s; the kernel gives up at the first
  retransmission timer past 0.5 s);
* **the process is frozen but its host is alive** (SIGSTOP, a long GC pause, a debugger):
  the host's kernel still acknowledges every segment, so TCP never gives up; the PING itself
  goes unanswered, and gRPC closes the connection ``frozen_limit_ms`` after sending it. A
  frozen process is therefore *not* declared dead for 5 s, which is what keeps 1-2 s freezes
  from turning into replica replacements.

The costs: one PING and its ack per idle connection per ``ping_every_ms`` (handled in C,
about 70 us of coordinator CPU each on loopback), and connections that a lossy link leaves
without acknowledgements for half a second are closed and re-opened by the agent (the
coordinator's ``disconnect_grace_s`` covers the reconnect).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MAX_AGENT_MESSAGE = 4 << 20


@dataclass(frozen=True)
class Keepalive:
    # How long a connection may be silent (nothing read) before the coordinator pings it.
    ping_every_ms: int = 1_000
    # How long a sent segment may stay unacknowledged by the peer's kernel (TCP_USER_TIMEOUT).
    unacked_limit_ms: int = 500
    # How long a PING may stay unanswered by a live host (a frozen process).
    frozen_limit_ms: int = 5_000
    # The agent pings the coordinator after this long without reading anything; its own
    # heartbeats keep the link busy, so this only matters for an idle agent.
    agent_ping_every_ms: int = 10_000

    # Linux's smallest retransmission timeout; it doubles on every retransmission.
    MIN_RTO_S = 0.2

    def unacked_close_s(self, rto_s: float = MIN_RTO_S) -> float:
        """Seconds from an unacknowledged send to the kernel closing the connection: the
        first retransmission timer at or past the limit (0.2, 0.6, 1.4, 3.0 s ... with the
        minimum RTO). 0.5 s -> 0.6 s; 1.0 s -> 1.4 s."""
        limit = self.unacked_limit_ms / 1000
        t, rto = 0.0, rto_s
        while t < limit:
            t += rto
            rto *= 2
        return t

    def next_ping(self, last_read: float, at: float) -> float:
        """When the coordinator pings a stream last read at ``last_read``, first at or after
        ``at``: idle streams are pinged every ``ping_every_ms``."""
        every = self.ping_every_ms / 1000
        k = max(1, math.ceil((at - last_read) / every - 1e-9))
        return last_read + k * every

    def cut_detected_at(self, last_read: float, cut_at: float) -> float:
        """When a stream last read at ``last_read`` and cut at ``cut_at`` is closed."""
        return self.next_ping(last_read, cut_at) + self.unacked_close_s()

    def frozen_detected_at(self, last_read: float, frozen_at: float) -> float:
        """When the stream of a process frozen at ``frozen_at`` (on a live host) is closed,
        if it is still frozen then."""
        return self.next_ping(last_read, frozen_at) + self.frozen_limit_ms / 1000

    def server_options(self) -> list[tuple[str, Any]]:
        """``grpc.aio.server`` options for the coordinator's agent-facing server."""
        return [
            ("grpc.max_receive_message_length", MAX_AGENT_MESSAGE),
            ("grpc.keepalive_time_ms", self.ping_every_ms),
            ("grpc.keepalive_timeout_ms", self.unacked_limit_ms),
            ("grpc.http2.ping_timeout_ms", self.frozen_limit_ms),
            ("grpc.keepalive_permit_without_calls", 1),
            # Ping an idle stream again and again: heartbeats are the only data frames.
            ("grpc.http2.max_pings_without_data", 0),
            # Agents ping us too (every agent_ping_every_ms at most); never count strikes.
            ("grpc.http2.min_ping_interval_without_data_ms", 1_000),
            ("grpc.http2.max_ping_strikes", 0),
        ]

    def client_options(self, server_name: str | None = None) -> list[tuple[str, Any]]:
        """``grpc.aio`` channel options for an agent's channel to a coordinator: a cut link
        is noticed when a heartbeat stays unacknowledged, a frozen coordinator after the
        PING timeout."""
        opts: list[tuple[str, Any]] = [
            ("grpc.keepalive_time_ms", self.agent_ping_every_ms),
            ("grpc.keepalive_timeout_ms", max(self.unacked_limit_ms, 1_000)),
            ("grpc.http2.ping_timeout_ms", self.frozen_limit_ms),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.max_receive_message_length", 16 << 20),
        ]
        if server_name:
            opts.append(("grpc.ssl_target_name_override", server_name))
        return opts
