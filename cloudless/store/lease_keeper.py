"""Keep an etcd lease alive from a thread of its own, so a busy event loop cannot lose it.

A coordinator's event loop can lag by seconds under load (thousands of agents reconnecting,
a large listing, a burst of enrollments). When its election lease was renewed on that loop,
such a lag let the lease expire: leadership lapsed, every agent was redirected, and the
reconnect storm made the next lag longer, a spiral measured by the load harness. Go systems do
not have the problem because their runtime preempts a busy handler; here the renewals run on
a daemon thread with a *synchronous* gRPC channel of its own (which waits without the GIL),
independent of the loop.

Safety does not depend on this thread: leader-only writes are fenced on the election key's
revision, so a lease kept alive by a process whose loop is stuck still cannot let two leaders
write. The keeper only decides how long a slow leader stays leader.

``LeaseKeeper`` reports ``last_ok`` (monotonic time at which the last acknowledged renewal was
*sent*) and ``expired`` (etcd said the lease is gone); ``stop()`` ends the thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
from etcd3aio import _protobuf as _pb

from cloudless.store.tls import ClientTls

log = logging.getLogger(__name__)

_rpc: Any = _pb.rpc_pb2  # type: ignore[attr-defined]
_rpc_grpc: Any = _pb.rpc_pb2_grpc  # type: ignore[attr-defined]


class LeaseKeeper:
    def __init__(
        self,
        endpoints: Callable[[], tuple[str, ...]],
        tls: Callable[[], ClientTls],
        lease_id: int,
        interval: float,
        timeout: float,
    ) -> None:
        self.lease_id = lease_id
        self.interval = interval
        self.timeout = timeout
        self.last_ok: float | None = None
        self.expired = False
        self._endpoints = endpoints
        self._tls = tls
        self._stop = threading.Event()
        self._move = threading.Event()  # reconnect: to the first of the current endpoints
        self._wake = threading.Event()  # set with either
        self._thread = threading.Thread(
            target=self._run, name=f"lease-keeper-{lease_id:x}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def reconnect(self) -> None:
        """Leave the current connection after the renewal under way and connect to the
        first of the store's endpoints with its current TLS (before a member restarts)."""
        self._move.set()
        self._wake.set()

    def _channel(self, endpoint: str) -> grpc.Channel:
        tls = self._tls()  # the store's current TLS: it follows a root rotation
        creds = grpc.ssl_channel_credentials(
            root_certificates=tls.ca_pem,
            private_key=tls.key_pem,
            certificate_chain=tls.cert_pem,
        )
        opts = [("grpc.ssl_target_name_override", tls.server_name)]
        return grpc.secure_channel(endpoint, creds, options=opts)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set() and not self.expired:
            if self._move.is_set():
                self._move.clear()
                self._wake.clear()
                i = 0
            endpoints = self._endpoints()  # the store's current ones
            endpoint = endpoints[i % len(endpoints)]
            i += 1
            try:
                with self._channel(endpoint) as ch:
                    self._renew_on(ch)
            except Exception as e:  # a broken channel: the next endpoint, after a breath
                log.debug("lease %x keeper: %s on %s", self.lease_id, e, endpoint)
                self._stop.wait(0.05)

    def _renew_on(self, ch: grpc.Channel) -> None:
        """Renew every ``interval`` over one keepalive stream until stopped, expired or the
        stream fails (then the caller reconnects)."""
        stub = _rpc_grpc.LeaseStub(ch)
        requests: queue.Queue[Any] = queue.Queue()

        def feed() -> Any:
            while True:
                item = requests.get()
                if item is None:
                    return
                yield item

        responses = stub.LeaseKeepAlive(feed())
        try:
            while not self._stop.is_set() and not self._move.is_set():
                sent = time.monotonic()
                requests.put(_rpc.LeaseKeepAliveRequest(ID=self.lease_id))
                resp = _next_within(responses, self.timeout)
                if resp is None:
                    raise TimeoutError(f"no keepalive answer in {self.timeout:.1f}s")
                if resp.TTL <= 0:
                    self.expired = True
                    return
                self.last_ok = sent
                self._wake.wait(max(0.0, self.interval - (time.monotonic() - sent)))
        finally:
            requests.put(None)
            responses.cancel()


def _next_within(responses: Any, timeout: float) -> Any:
    """The next message of a streaming call, or None if none comes within ``timeout``."""
    box: list[Any] = []
    done = threading.Event()

    def read() -> None:
        try:
            box.append(next(responses))
        except Exception as e:
            box.append(e)
        done.set()

    threading.Thread(target=read, daemon=True).start()
    if not done.wait(timeout):
        return None
    got = box[0]
    if isinstance(got, Exception):
        raise got
    return got
