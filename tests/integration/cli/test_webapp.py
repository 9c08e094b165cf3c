"""``examples/webapp.yaml`` end to end: a web tier (``web``, two replicas) in front of a
key-value store over HTTP (``kv``) with its data on a volume, its write password a secret and
its programs configs, both health-checked. A value written through the web tier survives a
kill of the kv container (restarted by its policy) and a restart of the agent (which adopts
the running containers and keeps the volume); the kv replica is ``kv-0`` throughout.
``cloudless coordinator`` and ``cloudless agent --runtime containerd`` run as processes, the
CLI in-process.

This test runs without container networking, so there is no cluster DNS: the web tier's
``KV`` variable is set to kv-0's endpoint (its host port, kept across the kill and the agent
restart) instead of the service name ``kv:8080``. ``make demo`` runs the example as written,
by name, with networking on."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from cloudless.agent import secret_files
from cloudless.agent.volume_quota import image_support
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

ROOT = Path(__file__).resolve().parents[3]
PASSWORD = "kv-pass-e2e-7f3a"


def http(url: str, data: bytes | None = None, password: str = "") -> str:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if password:
        req.add_header("X-Password", password)
    with urllib.request.urlopen(req, timeout=3) as r:
        return str(r.read().decode().strip())


async def replicas(config: Path, workload: str) -> list[dict[str, Any]]:
    out = await cli("get", "replicas", "-w", workload, "-o", "json", config=config)
    return sorted(json.loads(out.stdout)["replicas"], key=lambda r: str(r["id"]))


def ready(r: dict[str, Any]) -> bool:
    return bool(r.get("ready")) and r.get("observed") == "running"


async def until_ready(config: Path, what: str, pred: Any = None) -> dict[str, Any]:
    """kv's replica once it is ready (and ``pred`` holds)."""
    deadline = time.monotonic() + 60
    r: dict[str, Any] = {}
    while time.monotonic() < deadline:
        rows = await replicas(config, "kv")
        r = rows[0] if rows else {}
        if ready(r) and (pred is None or pred(r)):
            return r
        await asyncio.sleep(0.3)
    raise AssertionError(f"{what}: last seen {r}")


async def until_web_ready(config: Path, want: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = [r for r in await replicas(config, "web") if r["desired"] == "running"]
        if len(rows) == want and all(ready(r) for r in rows):
            return rows
        await asyncio.sleep(0.3)
    raise AssertionError(f"{want} web replicas ready: last seen {rows}")


async def get_value(endpoint: str, path: str = "/cgi-bin/app") -> str:
    """The stored greeting (through the web tier by default), retried while the servers come
    up after a restart (a web answer of 502 means kv did not answer it)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            return await asyncio.to_thread(http, f"http://{endpoint}{path}?key=greeting")
        except (urllib.error.URLError, OSError):
            assert time.monotonic() < deadline, endpoint
            await asyncio.sleep(0.3)


async def test_webapp_data_survives_container_kill_and_agent_restart(tmp_path: Path) -> None:
    if not containerd_available() or not registry_available():
        pytest.skip("containerd/runc or docker-registry binaries are not installed")
    ns = f"kv-{secrets.token_hex(3)}"
    async with (
        PrivateRegistry(root_dir=tmp_path / "reg") as reg,
        PrivateContainerd(tmp_path / "ctrd") as ctrd,
    ):
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
            cfg = tmp_path / "c" / "admin" / "config.json"
            deadline = time.monotonic() + 60
            while not cfg.exists():
                assert coord.returncode is None and time.monotonic() < deadline
                await asyncio.sleep(0.2)
            while (await cli("token", "list", config=cfg)).exit_code != 0:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
            token = (await cli("token", "create", config=cfg)).stdout.strip()
            agent_args = [
                *CLI, "agent", "--join", f"https://127.0.0.1:{api}", "--token", token,
                "--data-dir", str(tmp_path / "a"), "--name", "box", "--zone", "z1",
                "--runtime", "containerd", "--containerd-socket", ctrd.address,
                "--namespace", ns, "--insecure-registry", reg.host,
            ]  # fmt: skip

            async def start_agent() -> asyncio.subprocess.Process:
                p = await asyncio.create_subprocess_exec(
                    *agent_args, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE, env=ENV,
                )  # fmt: skip
                procs.append(p)
                return p

            agent = await start_agent()

            # The example's own steps, with this test's registry and password.
            made = await cli("secret", "create", "kv-pass", "--from-literal", PASSWORD, config=cfg)
            assert made.exit_code == 0, made.output
            for name in ("kv", "web"):
                cgi = ROOT / "examples" / "webapp" / f"{name}.cgi"
                made = await cli(
                    "config", "create", f"{name}-cgi", "--from-file", str(cgi), config=cfg
                )
                assert made.exit_code == 0, made.output
            spec = (ROOT / "examples" / "webapp.yaml").read_text()
            kv_spec, web_spec = spec.replace("127.0.0.1:5000/busybox:1", image).split("\n---\n")
            applied = await cli("apply", "-f", "-", config=cfg, stdin=kv_spec)
            assert applied.exit_code == 0, applied.output
            r = await until_ready(cfg, "kv-0 ready")
            assert r["id"] == "kv-0", r
            kv_url = f"http://{r['endpoint']}/cgi-bin/kv?key=greeting"
            # No cluster DNS here: the web tier gets kv-0's endpoint instead of its name.
            assert "KV: kv:8080" in web_spec
            web_spec = web_spec.replace("KV: kv:8080", f"KV: {r['endpoint']}")
            applied = await cli("apply", "-f", "-", config=cfg, stdin=web_spec)
            assert applied.exit_code == 0, applied.output
            web = await until_web_ready(cfg, 2)
            front, other = web[0]["endpoint"], web[1]["endpoint"]
            assert front != other, web

            # kv takes writes only with the secret; the web tier holds it, its users do not.
            assert await asyncio.to_thread(http, kv_url, b"hello", "wrong") == "denied"
            assert await get_value(front) == "missing"
            app_url = f"http://{front}/cgi-bin/app?key=greeting"
            assert await asyncio.to_thread(http, app_url, b"hello, volume") == "stored"
            # Read back through the other web replica (the web tier keeps no state) and from
            # kv itself; the value is on kv-0's volume.
            assert await get_value(other) == "hello, volume"
            assert await get_value(r["endpoint"], "/cgi-bin/kv") == "hello, volume"
            on_disk = tmp_path / "a" / "volumes" / "kv" / "kv-0" / "data" / "greeting"
            assert on_disk.read_text() == "hello, volume"
            kv_endpoint = r["endpoint"]

            # 1. The container is killed (SIGKILL): restarted by its policy, data still there.
            p = await asyncio.create_subprocess_exec(
                "ctr", "-a", ctrd.address, "-n", ns, "task", "kill", "-s", "SIGKILL", "kv-0",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            out, _ = await p.communicate()
            assert p.returncode == 0, out
            r = await until_ready(cfg, "kv-0 restarted", lambda r: r["restarts"] >= 1)
            assert r["endpoint"] == kv_endpoint, r
            assert await get_value(front) == "hello, volume"

            # 2. The agent restarts: it adopts the running container; data still there.
            rc, err = await stop(agent)
            assert rc == 0 and "Traceback" not in err, err
            restarted_at = time.time()
            agent = await start_agent()
            before = r
            deadline = time.monotonic() + 60
            while True:  # the new agent process has connected and sent a heartbeat
                nodes = json.loads((await cli("get", "nodes", "-o", "json", config=cfg)).stdout)
                if nodes["nodes"][0]["last_heartbeat"] > restarted_at + 0.5:
                    break
                assert agent.returncode is None and time.monotonic() < deadline, nodes
                await asyncio.sleep(0.3)
            r = await until_ready(cfg, "kv-0 after the agent restart")
            # Adopted, not recreated: the same container, started when it was before (the
            # agent reads the start time of an adopted task from /proc: within a second).
            assert r["id"] == "kv-0" and abs(r["started_at"] - before["started_at"]) < 1.0, (
                before, r,
            )  # fmt: skip
            assert await get_value(front) == "hello, volume"
            assert await get_value(other) == "hello, volume"
            # The restart count outlived the agent (the container's label), not back to 0.
            assert r["restarts"] == before["restarts"] >= 1, (before, r)
            vols = json.loads((await cli("get", "volumes", "-o", "json", config=cfg)).stdout)
            assert [v["name"] for v in vols["volumes"]] == ["kv-0/data"]
            # held to its 64Mi hint where this host can (root, e2fsprogs): an ext4 image
            want = "image" if image_support() is None else "report"
            assert vols["volumes"][0]["quota"] == want, vols

            rc, err = await stop(agent)
            assert rc == 0 and "Traceback" not in err and PASSWORD not in err, err
            rc, err = await stop(coord)
            assert rc == 0 and "Traceback" not in err and PASSWORD not in err, err
        finally:
            for p in procs:
                if p.returncode is None:
                    p.kill()
                    await p.communicate()
            secret_files.unmount(tmp_path / "a" / "secrets")
            # The agent leaves replicas running when it stops (they outlive it): clear them.
            ls = await asyncio.create_subprocess_exec(
                "ctr", "-a", ctrd.address, "-n", ns, "containers", "ls", "-q",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            for cid in (await ls.communicate())[0].decode().split():
                for cmd in (("task", "kill", "-s", "SIGKILL", cid), ("task", "rm", "-f", cid),
                            ("container", "rm", cid)):  # fmt: skip
                    k = await asyncio.create_subprocess_exec(
                        "ctr", "-a", ctrd.address, "-n", ns, *cmd,
                        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                    )  # fmt: skip
                    await k.wait()
    remove_cgroups(f"/cloudless/{ns}")
