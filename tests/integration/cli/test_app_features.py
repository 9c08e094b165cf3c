"""Health checks, a volume and a secret through the whole path: ``cloudless coordinator`` and
``cloudless agent --runtime containerd`` as processes, the CLI in-process. The secret goes up
with ``secret create``, reaches the container (file and env), and shows nowhere on the way
back (secret list, get/describe, events); the replica is ``db-0``, ready by its readiness
check, and its volume is listed with its node."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from cloudless.agent import secret_files
from cloudless.devenv import (
    PrivateContainerd,
    PrivateRegistry,
    build_busybox_image,
    containerd_available,
    registry_available,
    remove_cgroups,
)
from cloudless.lib.net import free_port
from tests.integration.cli.test_containerd_agent import CLI, ENV, cli, stop

pytestmark = pytest.mark.integration

VALUE = "hunter2-e2e"
APP = (
    "trap 'exit 0' TERM; cat /run/secrets/db-pass > /data/copy; "
    'echo "$DB_PASSWORD" > /data/env; : > /tmp/ready; sleep 3600 & wait'
)


def db_spec(image: str, secret: str = "db-pass", ready_file: str = "/tmp/ready") -> str:
    return json.dumps(
        {
            "name": "db",
            "image": image,
            "command": ["sh", "-c", APP],
            "resources": {"cpu": "50m", "memory": "16Mi"},
            "volumes": [{"name": "data", "mount_path": "/data", "size": "8Mi"}],
            "secrets": [
                {"name": secret, "path": "/run/secrets/db-pass"},
                {"name": secret, "env": "DB_PASSWORD"},
            ],
            "health": {"readiness": {"exec": f"test -f {ready_file}", "interval": "300ms"}},
            "update": {"progress_deadline": "3s"},
        }
    )


async def test_volume_secret_and_readiness_end_to_end(tmp_path: Path) -> None:
    if not containerd_available() or not registry_available():
        pytest.skip("containerd/runc or docker-registry binaries are not installed")
    ns = f"app-{secrets.token_hex(3)}"
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

                # A reference to a secret that does not exist is refused, with its path.
                bad = await cli("apply", "-f", "-", config=config, stdin=db_spec(image, "nope"))
                assert bad.exit_code != 0
                assert "spec.secrets[0].name: secret 'nope' does not exist" in bad.output

                made = await cli(
                    "secret", "create", "db-pass", "--from-literal", VALUE, config=config
                )
                assert made.exit_code == 0, made.output
                applied = await cli("apply", "-f", "-", config=config, stdin=db_spec(image))
                assert applied.exit_code == 0, applied.output
                waited = await cli("wait", "workload", "db", "--timeout", "60", config=config)
                assert waited.exit_code == 0, waited.output

                async def replica() -> dict[str, object]:
                    out = (await cli("get", "replicas", "-o", "json", config=config)).stdout
                    return dict(json.loads(out)["replicas"][0])

                for _ in range(100):
                    r = await replica()
                    if r.get("ready"):
                        break
                    await asyncio.sleep(0.2)
                assert r["id"] == "db-0" and r["ready"] is True, r

                data = tmp_path / "a" / "volumes" / "db" / "db-0" / "data"
                assert (data / "copy").read_text() == VALUE  # the file reached the container
                assert (data / "env").read_text().strip() == VALUE  # and the variable

                vols = json.loads((await cli("get", "volumes", "-o", "json", config=config)).stdout)
                (v,) = vols["volumes"]
                assert (v["name"], v["mount_path"], v["size_hint_bytes"]) == (
                    "db-0/data", "/data", 8 << 20,
                )  # fmt: skip
                assert v["node_id"] == r["node_id"]

                # The value shows nowhere on the way back.
                for args in (
                    ("secret", "list", "-o", "json"),
                    ("get", "workloads", "-o", "yaml"),
                    ("describe", "workload", "db"),
                    ("get", "replicas", "-o", "json"),
                    ("events",),
                ):
                    shown = await cli(*args, config=config)
                    assert shown.exit_code == 0, (args, shown.output)
                    assert VALUE not in shown.output, args
                listed = json.loads(
                    (await cli("secret", "list", "-o", "json", config=config)).stdout
                )
                assert [(s["name"], s["size"]) for s in listed["secrets"]] == [
                    ("db-pass", len(VALUE))
                ]

                # A change that never becomes ready: rolled back automatically (a new version
                # with the old spec), then an undo to version 1 restarts nothing.
                broken = db_spec(image, ready_file="/tmp/never")
                applied = await cli("apply", "-f", "-", config=config, stdin=broken)
                assert applied.exit_code == 0, applied.output

                async def rollout() -> dict[str, Any]:
                    out = await cli("rollout", "status", "db", "-o", "json", config=config)
                    return dict(json.loads(out.stdout))

                for _ in range(150):
                    ro = await rollout()
                    if ro["version"] == 3 and ro["rollout"]["state"] == "complete":
                        break
                    await asyncio.sleep(0.2)
                assert ro["version"] == 3, ro
                assert str(ro["cause"]).startswith(
                    "automatic rollback of version 2: db-0 not ready"
                )
                hist = await cli("rollout", "history", "db", config=config)
                assert "automatic rollback of version 2" in hist.output, hist.output
                undone = await cli("rollout", "undo", "db", "--to-version", "1", config=config)
                assert undone.exit_code == 0 and "version 1 is back, as version 4" in undone.output
                for _ in range(100):
                    ro = await rollout()
                    if ro["rollout"]["state"] == "complete":
                        break
                    await asyncio.sleep(0.2)
                assert ro["version"] == 4 and ro["replicas"]["ready"] == 1, ro

                deleted = await cli("delete", "workload", "db", config=config)
                assert deleted.exit_code == 0, deleted.output
                rc, err = await stop(agent)
                assert rc == 0 and "Traceback" not in err, err
                assert VALUE not in err  # nor in the agent's log
                rc, err = await stop(coord)
                assert rc == 0 and "Traceback" not in err, err
                assert VALUE not in err
                assert (data / "copy").exists()  # the volume outlives the workload
            finally:
                for p in procs:
                    if p.returncode is None:
                        p.kill()
                        await p.communicate()
                secret_files.unmount(tmp_path / "a" / "secrets")  # the agent leaves it mounted
    remove_cgroups(f"/cloudless/{ns}")
