"""The whole path through the CLI on a real container runtime: ``cloudless coordinator`` and
``cloudless agent --runtime containerd`` as processes (a private containerd and a private
plain-HTTP registry with a busybox image), then ``apply``, ``wait`` and ``logs`` show the
container's own output."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cloudless.cli.main import app
from cloudless.devenv import (
    PrivateContainerd,
    PrivateRegistry,
    build_busybox_image,
    containerd_available,
    registry_available,
    remove_cgroups,
)
from cloudless.lib.net import free_port

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "cloudless.cli.main"]
ENV = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}


async def cli(*args: str, config: Path, stdin: str | None = None) -> Result:
    """A client command, in-process (the daemons are the separate processes here)."""
    return await asyncio.to_thread(
        CliRunner().invoke, app, [*args, "--config", str(config)], input=stdin
    )


async def stop(p: asyncio.subprocess.Process) -> tuple[int, str]:
    p.send_signal(signal.SIGTERM)
    try:
        _, err = await asyncio.wait_for(p.communicate(), 20)
    except TimeoutError:
        p.kill()
        _, err = await p.communicate()
        raise AssertionError(f"did not stop on SIGTERM:\n{err.decode()}") from None
    return p.returncode or 0, err.decode()


async def test_agent_runs_a_real_container(tmp_path: Path) -> None:
    if not containerd_available() or not registry_available():
        pytest.skip("containerd/runc or docker-registry binaries are not installed")
    ns = f"cli-{secrets.token_hex(3)}"
    async with PrivateRegistry(root_dir=tmp_path / "reg") as reg:
        async with PrivateContainerd(tmp_path / "ctrd") as ctrd:
            image = await build_busybox_image(reg, "busybox", "1")
            api = free_port()
            coord = await asyncio.create_subprocess_exec(
                *CLI, "coordinator", "--data-dir", str(tmp_path / "c"), "--name", "c1",
                "--bootstrap", "--store", "memory", "--api-port", str(api),
                "--agent-port", str(free_port()), "--enroll-port", str(free_port()),
                "--root-key-size", "2048", "--bcrypt-cost", "4",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=ENV,
            )  # fmt: skip
            procs = [coord]
            try:
                config = tmp_path / "c" / "admin" / "config.json"
                deadline = time.monotonic() + 60
                while not config.exists():
                    assert coord.returncode is None and time.monotonic() < deadline
                    await asyncio.sleep(0.2)
                while (await cli("token", "list", config=config)).exit_code != 0:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.2)
                token = (await cli("token", "create", config=config)).stdout.strip()
                agent = await asyncio.create_subprocess_exec(
                    *CLI, "agent", "--join", f"https://127.0.0.1:{api}", "--token", token,
                    "--data-dir", str(tmp_path / "a"), "--name", "box", "--zone", "z1",
                    "--runtime", "containerd", "--containerd-socket", ctrd.address,
                    "--namespace", ns, "--insecure-registry", reg.host,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=ENV,
                )  # fmt: skip
                procs.append(agent)
                spec = json.dumps(
                    {
                        "name": "echo",
                        "image": image,
                        "command": ["sh", "-c", "echo hello from busybox; exec sleep 3600"],
                        "resources": {"cpu": "50m", "memory": "16Mi"},
                        "replicas": 1,
                    }
                )
                applied = await cli("apply", "-f", "-", config=config, stdin=spec)
                assert applied.exit_code == 0, applied.stderr
                waited = await cli("wait", "workload", "echo", "--timeout", "60", config=config)
                assert waited.exit_code == 0, waited.stderr + (await cli(
                    "describe", "workload", "echo", config=config)).stdout  # fmt: skip
                reps = json.loads(
                    (await cli("get", "replicas", "-o", "json", config=config)).stdout
                )
                rid = reps["replicas"][0]["id"]
                for _ in range(50):
                    logs = await cli("logs", rid, config=config)
                    if logs.stdout:
                        break
                    await asyncio.sleep(0.2)
                assert logs.exit_code == 0, logs.stderr
                assert logs.stdout == "hello from busybox\n"
                node = (await cli("describe", "node", "box", config=config)).stdout
                assert rid in node and "running" in node

                deleted = await cli("delete", "workload", "echo", config=config)
                assert deleted.exit_code == 0, deleted.stderr
                rc, err = await stop(agent)
                assert rc == 0 and "Traceback" not in err, err
                rc, err = await stop(coord)
                assert rc == 0 and "Traceback" not in err, err
            finally:
                for p in procs:
                    if p.returncode is None:
                        p.kill()
                        await p.communicate()
    remove_cgroups(f"/cloudless/{ns}")
