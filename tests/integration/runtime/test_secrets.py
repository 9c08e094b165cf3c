"""Secrets on real containerd: a replica gets one secret as a file (tmpfs, 0400, read-only
mount) and as an environment variable, and a config of the same name as a file (0444: configs
have a name space of their own, their values keyed ``config/<name>``); new values reach the
files without a restart; the files go with the replica; the agent's assignment file never
holds a value."""

from __future__ import annotations

import asyncio
import contextlib
import stat
import time
from collections.abc import Callable
from dataclasses import replace

from cloudless.agent import secret_files
from cloudless.agent.link import AssignmentFile
from cloudless.agent.supervisor import Assigned, Supervisor
from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.lib.clock import SystemClock
from cloudless.model.replica import ReplicaState
from cloudless.model.workload import parse_workload
from tests.integration.runtime.conftest import Env


async def until(what: str, ok: Callable[[], bool], within: float = 20.0) -> None:
    t0 = time.monotonic()
    while not ok():
        if time.monotonic() - t0 > within:
            raise AssertionError(f"not {what} within {within} s")
        await asyncio.sleep(0.05)


async def test_secret_file_and_env_on_containerd(env: Env) -> None:
    root = env.tmp / "agent" / "secrets"
    await asyncio.to_thread(secret_files.ensure_tmpfs, root)
    rt = env.runtime()
    spec = parse_workload(
        {
            "name": "web",
            "image": env.image,
            "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"],
            "stop_timeout": 2,
            "secrets": [
                {"name": "db-pass", "path": "/run/secrets/db-pass"},
                {"name": "db-pass", "env": "DB_PASSWORD"},
            ],
            "configs": [{"name": "db-pass", "path": "/etc/web/web.conf"}],
        }
    )
    values = {"db-pass": b"hunter2", "config/db-pass": b"listen 8080\n"}
    a = Assigned("web-0", "web", 1, spec, secrets=values)
    assert "hunter2" not in repr(a)  # values are never shown
    sup = Supervisor(rt, SystemClock(), lambda: None, secrets_root=root)
    task = asyncio.create_task(sup.run([a]))
    try:
        await until("worker", lambda: "web-0" in sup.workers)
        st = sup.workers["web-0"].status
        await until("running", lambda: st.state is ReplicaState.RUNNING)
        host_file = root / "web-0" / "db-pass"
        assert secret_files.is_tmpfs(root) and stat.S_IMODE(host_file.stat().st_mode) == 0o400

        r = await rt.exec_in_container("web-0", ["cat", "/run/secrets/db-pass"])
        assert (r.exit_code, r.output) == (0, "hunter2")
        r = await rt.exec_in_container("web-0", ["sh", "-c", 'echo "$DB_PASSWORD"'])
        assert r.output.strip() == "hunter2"
        r = await rt.exec_in_container("web-0", ["ls", "-l", "/run/secrets/db-pass"])
        assert r.output.startswith("-r--------")
        r = await rt.exec_in_container("web-0", ["sh", "-c", "echo x > /run/secrets/db-pass"])
        assert r.exit_code != 0  # read-only mount (and 0400)
        # A config: a file too, readable by any user of the container (0444), read-only.
        conf = root / "web-0" / "config.db-pass"
        assert stat.S_IMODE(conf.stat().st_mode) == 0o444
        r = await rt.exec_in_container("web-0", ["cat", "/etc/web/web.conf"])
        assert (r.exit_code, r.output) == (0, "listen 8080\n")
        r = await rt.exec_in_container("web-0", ["ls", "-l", "/etc/web/web.conf"])
        assert r.output.startswith("-r--r--r--")
        r = await rt.exec_in_container("web-0", ["sh", "-c", "echo x > /etc/web/web.conf"])
        assert r.exit_code != 0

        # New values: the files change in place, the container is not restarted.
        pid = (await rt.get_container("web-0")).pid
        new = {"db-pass": b"correct horse", "config/db-pass": b"listen 9090\n"}
        sup.assign([replace(a, secrets=new)])

        async def seen() -> str:
            return (await rt.exec_in_container("web-0", ["cat", "/run/secrets/db-pass"])).output

        for _ in range(100):
            if await seen() == "correct horse":
                break
            await asyncio.sleep(0.05)
        assert await seen() == "correct horse"
        r = await rt.exec_in_container("web-0", ["cat", "/etc/web/web.conf"])
        assert r.output == "listen 9090\n" and stat.S_IMODE(conf.stat().st_mode) == 0o444
        assert (await rt.get_container("web-0")).pid == pid and st.restarts == 0

        sup.assign([])
        await sup.idle()
        assert not (root / "web-0").exists()  # the files went with the replica
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(Exception):
            await rt.delete_container("web-0")
        secret_files.unmount(root)


def test_assignment_file_never_holds_secret_values(tmp_path: object) -> None:
    from pathlib import Path

    d = Path(str(tmp_path))
    msg = pb.Assignments(
        generation=1,
        replicas=[
            pb.ReplicaAssignment(
                replica_id="web-0", workload="web", spec_json=b"{}", secrets={"db-pass": b"hunter2"}
            )
        ],
    )
    AssignmentFile(d).save(msg)
    assert b"hunter2" not in (d / "assignments.bin").read_bytes()
    assert msg.replicas[0].secrets["db-pass"] == b"hunter2"  # the live message is untouched
