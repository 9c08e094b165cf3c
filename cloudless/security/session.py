"""Guards for sessions that outlive one check: open connections and streaming RPCs.

``RevocationGuard`` ends the block the moment the peer's certificate is revoked and, given a
clock, the moment it expires, with ``PermissionDenied`` (``reason_code``
``certificate_revoked`` or ``certificate_expired``). Two ways to end it:

* ``cancel_task=True`` (default): the task running the block is cancelled and the
  cancellation becomes ``PermissionDenied`` on exit (an ordinary cancellation stays a
  ``CancelledError``). Right for code that owns its task, e.g. an asyncio stream handler.
* ``cancel_task=False``: nothing is cancelled; the block awaits through ``guard.race(aw)``
  (or calls ``guard.raise_if_ended()``), which raises the moment the session ends. Right for
  framework-owned tasks such as grpc.aio streaming handlers, where a cancellation can land
  inside the framework's own awaits.

Everything else about the peer was checked when the session started (``Authorizer``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from cryptography import x509

from cloudless.lib.clock import Clock
from cloudless.lib.first import first_of
from cloudless.security.errors import PermissionDenied
from cloudless.security.identity import load_certificate
from cloudless.security.revocation import RevocationList

T = TypeVar("T")


class RevocationGuard:
    """``async with RevocationGuard(revocations, cert, clock=clock): ...``"""

    def __init__(
        self,
        revocations: RevocationList,
        cert: x509.Certificate | bytes | str,
        *,
        clock: Clock | None = None,
        cancel_task: bool = True,
    ) -> None:
        self.revocations = revocations
        self.cancel_task = cancel_task
        self._ended_event = asyncio.Event()
        self.cert = load_certificate(cert)
        self.clock = clock
        self.ended: PermissionDenied | None = None  # why the guard ended the session
        self._task: asyncio.Task[Any] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._expiry: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RevocationGuard:
        entry = self.revocations.check(self.cert)
        if entry is not None:
            raise PermissionDenied(
                f"certificate revoked ({entry.describe()})", reason_code="certificate_revoked"
            )
        self._task = asyncio.current_task()
        self._unsubscribe = self.revocations.watch(lambda _: self._on_revocation())
        if self.clock is not None:
            self._expiry = asyncio.get_running_loop().create_task(self._expire(self.clock))
        return self

    def _end(self, why: PermissionDenied) -> None:
        if self.ended is None:
            self.ended = why
            self._ended_event.set()
            if self.cancel_task and self._task is not None:
                self._task.cancel()

    def raise_if_ended(self) -> None:
        if self.ended is not None:
            raise self.ended

    async def race(self, aw: Awaitable[T]) -> T:
        """Await ``aw`` unless the session ends first (then ``aw`` is cancelled and the
        reason raised)."""
        if self.ended is not None:
            if asyncio.iscoroutine(aw):
                aw.close()  # never started: do not leave it un-awaited
            raise self.ended
        try:
            which, value = await first_of(aw, self._ended_event.wait())
        except Exception:
            self.raise_if_ended()  # the session's end outranks the work's failure
            raise
        self.raise_if_ended()
        assert which == 0
        result: T = value
        return result

    def _on_revocation(self) -> None:
        entry = self.revocations.check(self.cert)
        if entry is not None:
            self._end(
                PermissionDenied(
                    f"session ended: certificate revoked ({entry.describe()})",
                    reason_code="certificate_revoked",
                )
            )

    async def _expire(self, clock: Clock) -> None:
        not_after = self.cert.not_valid_after_utc.timestamp()
        await clock.sleep(not_after - clock.now())
        self._end(
            PermissionDenied(
                "session ended: certificate expired; renew it and reconnect",
                reason_code="certificate_expired",
            )
        )

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._expiry is not None:
            self._expiry.cancel()
            # gather returns the child's CancelledError as a value; a cancellation of *this*
            # task would still propagate
            await asyncio.gather(self._expiry, return_exceptions=True)
        if (
            self.ended is not None
            and self.cancel_task
            and exc_type is asyncio.CancelledError
            and self._task
        ):
            self._task.uncancel()
            raise self.ended
