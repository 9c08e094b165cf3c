"""Each replica's own identity on this node: SVID files, issued through the coordinator and
renewed before they expire (what and why: ``cloudless.security.svid``).

``<root>/<replica id>/`` is bind-mounted read-only at ``svid.MOUNT_PATH``. Its
``svid.pem``, ``svid.key`` and ``bundle.pem`` are symbolic links into ``..data``, itself a
link to the current generation's directory; a renewal writes a new generation and swaps
``..data`` with one rename (Kubernetes' atomic writer), so a reader never sees a certificate
next to another generation's key. The key is made here for each generation and never leaves
the node.

``prepare`` issues the first generation before the container is created; if the coordinator
cannot be reached the container starts anyway with an empty directory and the identity
arrives with the next attempt (every ``retry_s``). ``run`` renews each identity at 2/3 of
its life (``rotation.renewal_due``, injected clock and RNG). ``remove`` deletes the files
when the replica ends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

from cloudless.lib.clock import Clock
from cloudless.runtime.types import BindMount
from cloudless.security import svid
from cloudless.security.keys import make_csr, new_private_key
from cloudless.security.rotation import renewal_due

log = logging.getLogger("cloudless.agent.identity")

# (workload, replica id, csr, ttl seconds) -> (certificate, trust bundle)
IssueCall = Callable[[str, str, bytes, int], Awaitable[tuple[bytes, bytes]]]
DATA = "..data"


def write_generation(directory: Path, cert: bytes, key: bytes, bundle: bytes) -> None:
    """Write one generation and switch ``..data`` to it atomically; drop older ones."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    gens = sorted(int(p.name[6:]) for p in directory.glob("..gen-*") if p.name[6:].isdigit())
    n = (gens[-1] + 1) if gens else 1
    gen = directory / f"..gen-{n}"
    gen.mkdir(mode=0o755)
    for name, data, mode in (
        (svid.CERT_FILE, cert, 0o444),
        (svid.KEY_FILE, key, 0o400),
        (svid.BUNDLE_FILE, bundle, 0o444),
    ):
        fd = os.open(gen / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    tmp = directory / "..data_tmp"
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(gen.name)
    tmp.replace(directory / DATA)
    for name in (svid.CERT_FILE, svid.KEY_FILE, svid.BUNDLE_FILE):
        link = directory / name
        if not link.is_symlink():
            link.symlink_to(f"{DATA}/{name}")
    for old in gens:
        shutil.rmtree(directory / f"..gen-{old}", ignore_errors=True)


class WorkloadIdentities:
    def __init__(
        self,
        root: Path,
        issue: IssueCall,
        clock: Clock,
        rng: random.Random,
        *,
        trust_domain: str = "cloudless",
        ttl_s: int = svid.DEFAULT_TTL_S,
        retry_s: float = 10.0,
    ) -> None:
        self.root = root
        self._issue_call = issue
        self.clock = clock
        self.rng = rng
        self.trust_domain = trust_domain
        self.ttl_s = ttl_s
        self._active: set[str] = set()
        self.retry_s = retry_s
        self._held: dict[str, tuple[str, float]] = {}  # replica -> (workload, renew at)
        self._changed = asyncio.Event()
        self.issued = 0
        self.failures = 0

    def mount(self, replica_id: str) -> BindMount:
        return BindMount(str(self.root / replica_id), svid.MOUNT_PATH, read_only=True)

    async def prepare(self, workload: str, replica_id: str) -> BindMount:
        """The replica's identity directory, with a current SVID if one could be had."""
        self._active.add(replica_id)
        held = self._held.get(replica_id)
        if held is None or held[1] <= self.clock.now():
            await self._issue(workload, replica_id)
        (self.root / replica_id).mkdir(parents=True, exist_ok=True, mode=0o755)
        return self.mount(replica_id)

    def remove(self, replica_id: str) -> None:
        self._active.discard(replica_id)
        self._held.pop(replica_id, None)
        shutil.rmtree(self.root / replica_id, ignore_errors=True)

    def renew_all(self) -> None:
        """Re-issue every identity now (the node's trust or issuing root changed)."""
        now = self.clock.now()
        self._held = {rid: (w, min(at, now)) for rid, (w, at) in self._held.items()}
        self._changed.set()

    def renew_at(self, replica_id: str) -> float | None:
        held = self._held.get(replica_id)
        return held[1] if held else None

    async def _issue(self, workload: str, replica_id: str) -> None:
        key = new_private_key()
        csr = make_csr(key, svid.workload_identity(replica_id, self.trust_domain))
        try:
            cert, bundle = await self._issue_call(workload, replica_id, csr, self.ttl_s)
            if replica_id in self._active:  # not removed while we waited
                d = self.root / replica_id
                await asyncio.to_thread(write_generation, d, cert, key, bundle)
        except Exception as e:  # unreachable or refused: retry later, keep the replica going
            self.failures += 1
            log.warning("identity for replica %s not issued (%s); retrying", replica_id, e)
            if replica_id in self._active:
                self._held[replica_id] = (workload, self.clock.now() + self.retry_s)
                self._changed.set()
            return
        if replica_id not in self._active:
            self.remove(replica_id)  # removed meanwhile: drop anything written
            return
        plan = renewal_due(cert, self.clock.now(), self.rng)
        self._held[replica_id] = (workload, plan.renew_at)
        self.issued += 1
        self._changed.set()

    async def run(self) -> None:
        while True:
            self._changed.clear()
            now = self.clock.now()
            due = [(rid, w) for rid, (w, at) in self._held.items() if at <= now]
            for rid, workload in due:
                if rid in self._held:
                    await self._issue(workload, rid)
            if due:
                continue
            nxt = min((at for _, at in self._held.values()), default=now + 3600.0)
            sleeper = asyncio.ensure_future(self.clock.sleep(min(3600.0, max(0.0, nxt - now))))
            changed = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait([sleeper, changed], return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                changed.cancel()
                await asyncio.gather(sleeper, changed, return_exceptions=True)
