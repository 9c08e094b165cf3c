"""Host ports for replicas that declare ports (Nomad-style dynamic ports).

Without container networking (``agent.network``) containers share the node's network
namespace, so two replicas of one server on one node cannot both bind its declared port. Each
declared port gets a host port from a range; the replica sees ``PORT`` (its first port) and
``CLOUDLESS_PORT_<declared>`` in its environment, and reports ``<node address>:<PORT>`` as its
endpoint.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable

DEFAULT_RANGE = (20000, 32000)


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


class PortAllocator:
    def __init__(
        self,
        lo: int = DEFAULT_RANGE[0],
        hi: int = DEFAULT_RANGE[1],
        is_free: Callable[[int], bool] = port_is_free,
    ) -> None:
        if not 0 < lo < hi <= 65535:
            raise ValueError(f"port range {lo}-{hi} is invalid")
        self.lo, self.hi = lo, hi
        self.is_free = is_free
        self.taken: set[int] = set()
        self._next = lo

    def reserve(self, ports: Iterable[int]) -> None:
        self.taken.update(ports)

    def release(self, ports: Iterable[int]) -> None:
        self.taken.difference_update(ports)

    def allocate(self, n: int) -> list[int]:
        """``n`` free host ports, or ``RuntimeError`` naming the exhausted range."""
        out: list[int] = []
        span = self.hi - self.lo
        for _ in range(span):
            if len(out) == n:
                break
            p = self._next
            self._next = self.lo + (self._next - self.lo + 1) % span
            if p not in self.taken and self.is_free(p):
                out.append(p)
                self.taken.add(p)
        if len(out) < n:
            self.release(out)
            raise RuntimeError(f"no free host port left in {self.lo}-{self.hi}")
        return out
