"""The lease that protects a new container's rootfs snapshot until its record exists."""

from __future__ import annotations

import secrets

from cloudless.api.gen.containerd.services.leases.v1 import leases_pb2
from cloudless.lib.clock import Clock
from cloudless.runtime.containerd.client import ContainerdClient
from cloudless.runtime.containerd.pull import rfc3339

#: A lease is reused for this long, and expires (containerd GC) twice as late.
REUSE_SECONDS = 3600


class CreateLease:
    """One lease serves every create for up to an hour, then a new one is made; each expires by
    itself two hours after creation. This saves two metadata writes (fsyncs) per create, and
    costs nothing lasting: snapshots of deleted containers are removed explicitly."""

    def __init__(self, client: ContainerdClient, clock: Clock) -> None:
        self.c = client
        self.clock = clock
        self._current: tuple[str, float] | None = None

    async def get(self) -> str:
        now = self.clock.now()
        if self._current is None or now - self._current[1] > REUSE_SECONDS:
            lease_id = f"cloudless-create-{int(now)}-{secrets.token_hex(3)}"
            exp = {"containerd.io/gc.expire": rfc3339(now + 2 * REUSE_SECONDS)}
            await self.c.call(
                self.c.leases.Create, leases_pb2.CreateRequest(id=lease_id, labels=exp), "lease"
            )
            self._current = (lease_id, now)
        return self._current[0]

    async def exists(self, lease: str) -> bool:
        resp = await self.c.call(
            self.c.leases.List, leases_pb2.ListRequest(filters=[f"id=={lease}"]), "list leases"
        )
        return len(resp.leases) > 0

    def forget(self) -> None:
        self._current = None
