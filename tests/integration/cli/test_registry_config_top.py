"""A private registry, a config and live usage through the whole path: Debian's
docker-registry with htpasswd auth on a private port, ``cloudless coordinator`` and
``cloudless agent --runtime containerd`` as processes, the CLI in-process.

Without credentials and with a wrong password the replica fails with a reason naming the
registry; fixing the ``image_pull_secret``'s password lets the next restart pull and run. The
password shows nowhere on the way back (secret list, get, describe, events, the daemons' logs).
A config is readable back (``config get``) and reaches the container as a file. The running
replica's live usage then shows in ``cloudless top``."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
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

PASSWORD = "pull-s3cret-e2e"
SLEEP = "trap 'exit 0' TERM; sleep 3600 & wait"


@dataclass
class Cluster:
    config: Path
    coord: asyncio.subprocess.Process
    agent: asyncio.subprocess.Process


@asynccontextmanager
async def one_node(
    tmp_path: Path, ctrd: PrivateContainerd, ns: str, registry: str
) -> AsyncIterator[Cluster]:
    """A coordinator and a containerd agent, as processes; the agent reaches ``registry`` over
    plain HTTP and holds no credentials of its own."""
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
            "--namespace", ns, "--insecure-registry", registry,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=ENV,
        )  # fmt: skip
        procs.append(agent)
        yield Cluster(config, coord, agent)
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.communicate()
        secret_files.unmount(tmp_path / "a" / "secrets")  # the agent leaves it mounted


def web_spec(image: str, pull_secret: str | None) -> str:
    doc: dict[str, Any] = {
        "name": "web",
        "image": image,
        "command": ["sh", "-c", f"cat /etc/web/app.conf; echo; {SLEEP}"],
        "configs": [{"name": "web-conf", "path": "/etc/web/app.conf"}],
        "resources": {"cpu": "50m", "memory": "16Mi"},
        "restart": {"policy": "always", "backoff": 0.5, "backoff_max": 1},
        # Kept on the new version while it fails to pull (no rollback to the version before).
        "update": {"auto_rollback": False},
    }
    if pull_secret:
        doc["image_pull_secret"] = pull_secret
    return json.dumps(doc)


async def replica(config: Path) -> dict[str, Any]:
    out = (await cli("get", "replicas", "-o", "json", config=config)).stdout
    rows = json.loads(out)["replicas"]
    return dict(rows[0]) if rows else {}


async def until(config: Path, pred: Any, what: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    r: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = await replica(config)
        if r and pred(r):
            return r
        await asyncio.sleep(0.3)
    raise AssertionError(f"{what}: last seen {r}")


async def test_private_pull_with_image_pull_secret(tmp_path: Path) -> None:
    if not containerd_available() or not registry_available():
        pytest.skip("containerd/runc or docker-registry binaries are not installed")
    ns = f"reg-{secrets.token_hex(3)}"
    users = {"deploy": PASSWORD}
    async with (
        PrivateRegistry(root_dir=tmp_path / "reg", users=users) as reg,
        PrivateContainerd(tmp_path / "ctrd") as ctrd,
    ):
        image = await build_busybox_image(reg, "team/web", "1")  # pushed with the credentials
        async with one_node(tmp_path, ctrd, ns, reg.host) as c:
            cfg = c.config

            async def secret(name: str, password: str, *extra: str) -> Any:
                return await cli(
                    "secret", "create", name, "--type", "registry", "--registry", reg.host,
                    "--username", "deploy", "--password-stdin", *extra, config=cfg,
                    stdin=password + "\n",
                )  # fmt: skip

            # A config (not secret): readable back, and mounted as a file.
            conf = await cli(
                "config", "create", "web-conf", "--from-literal", "greeting=hello-config",
                config=cfg,
            )  # fmt: skip
            assert conf.exit_code == 0, conf.output
            shown = await cli("config", "get", "web-conf", config=cfg)
            assert shown.stdout == "greeting=hello-config", shown.output
            listed = json.loads((await cli("config", "list", "-o", "json", config=cfg)).stdout)
            assert [c["name"] for c in listed["configs"]] == ["web-conf"]
            # A secret of the same name: configs have their own name space, both stay.
            same = await cli("secret", "create", "web-conf", "--from-literal", "x", config=cfg)
            assert same.exit_code == 0, same.output
            shown = await cli("config", "get", "web-conf", config=cfg)
            assert shown.stdout == "greeting=hello-config", shown.output
            listed = json.loads((await cli("secret", "list", "-o", "json", config=cfg)).stdout)
            assert "web-conf" in [x["name"] for x in listed["secrets"]]

            # Bad references are refused at apply, each naming the field and the fix.
            made = await cli("secret", "create", "plain", "--from-literal", "x", config=cfg)
            assert made.exit_code == 0, made.output
            other = await cli(
                "secret", "create", "elsewhere", "--type", "registry", "--registry",
                "ghcr.io", "--username", "u", "--password-stdin", config=cfg, stdin="p\n",
            )  # fmt: skip
            assert other.exit_code == 0, other.output
            for name, why in (
                ("nope", "spec.image_pull_secret: secret 'nope' does not exist"),
                ("plain", "spec.image_pull_secret: secret 'plain' is a opaque secret"),
                ("elsewhere", f"holds credentials for ghcr.io, not for {reg.host}"),
            ):
                bad = await cli("apply", "-f", "-", config=cfg, stdin=web_spec(image, name))
                assert bad.exit_code != 0 and why in bad.output, (name, bad.output)
            bad = await cli(
                "secret", "create", "broken", "--type", "registry", "--from-literal", "{}",
                config=cfg,
            )  # fmt: skip
            assert bad.exit_code != 0 and 'needs "auths"' in bad.output, bad.output

            # No credentials: the replica fails, and says which registry wants them.
            applied = await cli("apply", "-f", "-", config=cfg, stdin=web_spec(image, None))
            assert applied.exit_code == 0, applied.output
            r = await until(cfg, lambda r: "requires a username" in r["reason"], "no creds")
            assert f"registry {reg.host} requires a username and password" in r["reason"]

            # A wrong password: refused, naming the registry and the user (not the password).
            assert (await secret("regcred", "wrong-password")).exit_code == 0
            applied = await cli("apply", "-f", "-", config=cfg, stdin=web_spec(image, "regcred"))
            assert applied.exit_code == 0, applied.output
            r = await until(cfg, lambda r: "refused access" in r["reason"], "wrong password")
            assert f"registry {reg.host} refused access to team/web (HTTP 401)" in r["reason"]
            assert "user 'deploy'" in r["reason"] and "wrong-password" not in r["reason"]

            # The right password: the secret's new value reaches the agent, and the next
            # restart (backoff 0.5-1 s) pulls and runs.
            fixed = await secret("regcred", PASSWORD)
            assert fixed.exit_code == 0 and "version 2" in fixed.output, fixed.output
            r = await until(cfg, lambda r: r["observed"] == "running", "running")
            assert r["spec_version"] == 2, r  # the version naming the pull secret
            for _ in range(50):
                logs = await cli("logs", r["id"], config=cfg)
                if "greeting=hello-config" in logs.output:  # the config's file
                    break
                await asyncio.sleep(0.2)
            assert "greeting=hello-config" in logs.output, logs.output
            as_config = json.loads(web_spec(image, "regcred"))
            as_config["configs"].append({"name": "plain", "path": "/etc/web/plain"})
            bad = await cli("apply", "-f", "-", config=cfg, stdin=json.dumps(as_config))
            why = (
                "spec.configs[1].name: config 'plain' does not exist "
                "(there is a secret of that name: refer to it under secrets)"
            )
            assert bad.exit_code != 0 and why in bad.output, bad.output

            # Its live usage reaches `cloudless top` with the heartbeats (a sample per interval).
            deadline = time.monotonic() + 30
            while True:
                top = await cli("top", "replicas", "-o", "json", config=cfg)
                assert top.exit_code == 0, top.output
                rows = json.loads(top.stdout)["replicas"]
                if rows and rows[0]["measured"] and rows[0]["memory_bytes"] > 0:
                    break
                assert time.monotonic() < deadline, rows
                await asyncio.sleep(0.5)
            assert rows[0]["memory_limit_bytes"] == 16 << 20 and rows[0]["net_rx_bps"] == -1
            nodes = json.loads((await cli("top", "nodes", "-o", "json", config=cfg)).stdout)
            assert [(n["name"], n["replicas"]) for n in nodes["nodes"]] == [("box", 1)]
            for top_args in (("top", "replicas", "--sort", "memory"), ("top", "nodes")):
                shown = await cli(*top_args, config=cfg)
                assert shown.exit_code == 0 and "box" in shown.output, shown.output

            listed = json.loads((await cli("secret", "list", "-o", "json", config=cfg)).stdout)
            types = {s["name"]: s["type"] for s in listed["secrets"]}  # configs are not listed
            assert types == {
                "plain": "opaque", "elsewhere": "registry", "regcred": "registry",
                "web-conf": "opaque",  # the secret beside the config of that name
            }  # fmt: skip
            for args in (
                ("secret", "list"),
                ("get", "workloads", "-o", "yaml"),
                ("describe", "workload", "web"),
                ("get", "replicas", "-o", "json"),
                ("events",),
            ):
                shown = await cli(*args, config=cfg)
                assert shown.exit_code == 0, (args, shown.output)
                assert PASSWORD not in shown.output, args
            rc, err = await stop(c.agent)
            assert rc == 0 and "Traceback" not in err, err
            assert PASSWORD not in err
            rc, err = await stop(c.coord)
            assert rc == 0 and "Traceback" not in err, err
            assert PASSWORD not in err
    remove_cgroups(f"/cloudless/{ns}")
