"""Workload identity on real containerd: the replica reads its SVID, key and bundle at
/run/cloudless/identity (read-only); a renewal reaches the running container without a
restart; the files go with the replica."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from pathlib import Path

from cloudless.agent.supervisor import Assigned, Supervisor
from cloudless.agent.workload_identity import WorkloadIdentities
from cloudless.lib.clock import SystemClock
from cloudless.model.replica import ReplicaState
from cloudless.model.workload import parse_workload
from cloudless.security import svid
from cloudless.security.ca import CertificateAuthority
from cloudless.security.identity import CertKind
from tests.integration.runtime.conftest import Env


async def until(what: str, ok: Callable[[], bool], within: float = 20.0) -> None:
    t0 = time.monotonic()
    while not ok():
        if time.monotonic() - t0 > within:
            raise AssertionError(f"not {what} within {within} s")
        await asyncio.sleep(0.05)


def _host(root: Path, name: str) -> str:
    return (root / "web-0" / name).read_text()


async def test_svid_in_the_container_and_renewed_in_place(env: Env) -> None:
    ca = CertificateAuthority.init(env.tmp / "ca", root_key_size=2048)

    async def issue(workload: str, rid: str, csr: bytes, ttl: int) -> tuple[bytes, bytes]:
        sid = svid.workload_identity(rid, ca.trust_domain)
        return ca.sign_csr(csr, sid, CertKind.WORKLOAD, ttl_seconds=ttl), ca.bundle_pem

    root = env.tmp / "agent" / "identities"
    ids = WorkloadIdentities(root, issue, SystemClock(), random.Random(), ttl_s=600)
    rt = env.runtime()
    spec = parse_workload(
        {
            "name": "web",
            "image": env.image,
            "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"],
            "stop_timeout": 2,
        }
    )
    sup = Supervisor(rt, SystemClock(), lambda: None, identities=ids)
    renewals = asyncio.create_task(ids.run())
    task = asyncio.create_task(sup.run([Assigned("web-0", "web", 1, spec)]))
    try:
        await until("worker", lambda: "web-0" in sup.workers)
        st = sup.workers["web-0"].status
        await until("running", lambda: st.state is ReplicaState.RUNNING)

        async def inside(name: str) -> str:
            r = await rt.exec_in_container("web-0", ["cat", f"{svid.MOUNT_PATH}/{name}"])
            assert r.exit_code == 0, r.output
            return r.output

        cert = await inside(svid.CERT_FILE)
        assert cert == await asyncio.to_thread(_host, root, svid.CERT_FILE)
        assert "PRIVATE KEY" in await inside(svid.KEY_FILE)
        assert await inside(svid.BUNDLE_FILE) == ca.bundle_pem.decode()
        r = await rt.exec_in_container("web-0", ["sh", "-c", f"echo x > {svid.MOUNT_PATH}/x"])
        assert r.exit_code != 0  # read-only mount

        # a renewal: new files, seen by the running container, no restart
        pid = (await rt.get_container("web-0")).pid
        ids.renew_all()
        for _ in range(100):
            if await inside(svid.CERT_FILE) != cert:
                break
            await asyncio.sleep(0.05)
        renewed = await inside(svid.CERT_FILE)
        assert renewed != cert
        assert renewed == await asyncio.to_thread(_host, root, svid.CERT_FILE)
        assert (await rt.get_container("web-0")).pid == pid and st.restarts == 0

        sup.assign([])
        await sup.idle()
        assert not await asyncio.to_thread((root / "web-0").exists)  # gone with the replica
    finally:
        for t in (task, renewals):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        with contextlib.suppress(Exception):
            await rt.delete_container("web-0")
