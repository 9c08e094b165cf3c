"""The CLI end to end against a real coordinator (in-memory store, real mTLS HTTPS and gRPC on
loopback) and two agents on the fake runtime, all in a background thread's event loop; the
commands run through typer's CliRunner in the test thread, exactly as a user types them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cloudless.agent.agent import Agent, AgentConfig
from cloudless.cli.main import app
from cloudless.coordinator.wiring.config import CoordinatorConfig
from cloudless.coordinator.wiring.process import Coordinator
from cloudless.lib.clock import SystemClock
from cloudless.lib.net import free_port
from cloudless.model.resources import Resources
from cloudless.runtime.fake import FakeBehavior, FakeRuntime

GREETING = b"hello from a fake container\n"

WEB = """
name: web
image: busybox:latest
command: [httpd, -f, -p, "8080"]
resources: {cpu: 100m, memory: 16Mi}
replicas: 2
placement:
  spread: [zone]
"""


class Cluster:
    """A coordinator and agents on an event loop in a daemon thread."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.tasks: list[asyncio.Task[None]] = []
        self.config = CoordinatorConfig(
            data_dir=root / "coord",
            name="c1",
            store="memory",
            bootstrap=True,
            api_port=free_port(),
            agent_port=free_port(),
            enroll_port=free_port(),
            root_key_size=2048,
            bcrypt_cost=4,
        )
        self.client_config = root / "coord" / "admin" / "config.json"

    def _do(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        self.thread.start()
        self._do(self._start())

    async def _start(self) -> None:
        coord = Coordinator(self.config)
        self.tasks.append(asyncio.create_task(coord.run()))
        await asyncio.wait_for(coord.ready.wait(), 30)

    def add_agent(self, name: str, zone: str, token: str) -> None:
        async def start() -> None:
            cfg = AgentConfig(
                data_dir=self.root / name,
                join=self.config.api_url,
                token=token,
                name=name,
                zone=zone,
                region="local",
                capacity_override=Resources(4000, 2 << 30, 10 << 30, 10**9),
                monitor_interval_s=0.5,
            )
            rt = FakeRuntime(SystemClock(), default=FakeBehavior(stdout=GREETING))
            self.tasks.append(asyncio.create_task(Agent(cfg, rt).run()))

        self._do(start())

    def stop(self) -> None:
        async def stop() -> None:
            for t in self.tasks:
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            # Whatever those left behind (request handlers, streams) ends here too.
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        self._do(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


runner = CliRunner()


def cli(cluster: Cluster, *args: str, input: str | None = None, ok: bool = True) -> Any:
    r = runner.invoke(app, [*args, "--config", str(cluster.client_config)], input=input)
    if ok:
        assert r.exit_code == 0, f"{args}: exit {r.exit_code}\n{r.output}"
    return r


def run_cli(config: Path, *args: str, ok: bool = True) -> Any:
    """``cloudless ARGS --config CONFIG`` (any user's client config): exit 0, or with
    ``ok=False`` a refusal (exit 1)."""
    r = runner.invoke(app, [*args, "--config", str(config)])
    if ok:
        assert r.exit_code == 0, f"{args}: exit {r.exit_code}\n{r.output}"
    else:
        assert r.exit_code == 1, f"{args}: expected a refusal\n{r.output}"
    return r


@contextlib.contextmanager
def started(root: Path) -> Iterator[Cluster]:
    """A coordinator (and no agent) under ``root`` while the block runs."""
    c = Cluster(root)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def eventually(pred: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def doc(cluster: Cluster, *args: str) -> Any:
    return json.loads(cli(cluster, *args, "-o", "json").stdout)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("cli"))
    c.start()
    try:
        for name, zone in (("n1", "zone-a"), ("n2", "zone-b")):
            # the token is alone on stdout, so $(cloudless token create) captures it
            token = cli(c, "token", "create", "--label", f"made-for={name}").stdout.strip()
            assert token.startswith("CLD1:") and "\n" not in token
            c.add_agent(name, zone, token)
        eventually(
            lambda: [n["state"] for n in doc(c, "get", "nodes")["nodes"]] == ["ready"] * 2,
            "two ready nodes",
        )
        yield c
    finally:
        c.stop()


def test_get_nodes_table(cluster: Cluster) -> None:
    out = cli(cluster, "get", "nodes").stdout
    lines = out.splitlines()
    assert lines[0].split() == [
        "ID", "NAME", "STATE", "ZONE", "REGION", "ARCH", "CPU", "MEMORY", "HEARTBEAT"
    ]  # fmt: skip
    rows = {line.split()[1]: line.split() for line in lines[2:]}
    assert sorted(rows) == ["n1", "n2"]
    assert rows["n1"][2:5] == ["ready", "zone-a", "local"]
    # allocatable = declared capacity minus the agent's reserve (100m CPU, 256Mi memory):
    # 4000m - 100m = 3900m; 2Gi - 256Mi = 1792Mi = 1.75Gi, shown as 1.8Gi
    assert rows["n1"][6].split("/")[1] == "3900m"
    assert rows["n1"][8].split("/")[1] == "1.8Gi"
    one = cli(cluster, "get", "node", "n2", "-o", "yaml").stdout
    assert yaml.safe_load(one)["zone"] == "zone-b"


def test_apply_get_describe_wait(cluster: Cluster, tmp_path: Path) -> None:
    spec = tmp_path / "web.yaml"
    spec.write_text(WEB)
    r = cli(cluster, "apply", "-f", str(spec), "--wait", "--timeout", "20")
    assert r.stdout.splitlines()[0] == "workload/web created (version 1)"
    assert "workload/web: 2/2 running" in r.stderr
    assert cli(cluster, "apply", "-f", str(spec)).stdout.strip() == (
        "workload/web configured (version 1)"  # unchanged spec: same version
    )
    row = cli(cluster, "get", "workloads").stdout.splitlines()[2].split()
    assert row[:3] == ["web", "2/2", "1"]

    reps = doc(cluster, "get", "replicas", "--workload", "web")["replicas"]
    assert len(reps) == 2 and {r["observed"] for r in reps} == {"running"}
    table = cli(cluster, "get", "replicas", "-w", "web", "--node", "n1").stdout
    assert len(table.splitlines()) == 3  # header, rule, one replica (spread over 2 zones)
    assert " n1 " in table.splitlines()[2]

    text = cli(cluster, "describe", "workload", "web").stdout
    assert "2 running / 2 wanted" in text
    assert "image: busybox:latest" in text  # the spec, defaults left out
    assert "args:" not in text
    assert "workload web created (version 1)" in text  # its events
    node = cli(cluster, "describe", "node", "n1").stdout
    assert "n1 (" in node and "zone-a / local" in node and "made-for=n1" in node
    assert f"{reps[0]['id']}" in node or f"{reps[1]['id']}" in node


def test_scale_and_wait(cluster: Cluster) -> None:
    cli(cluster, "apply", "-f", "-", input=WEB.replace("name: web", "name: scaled"))
    assert cli(cluster, "scale", "scaled", "3").stdout.strip() == "workload/scaled scaled to 3"
    r = cli(cluster, "wait", "workload", "scaled", "--running", "3", "--timeout", "20")
    assert r.stdout.strip() == "workload/scaled: 3/3 running"
    w = doc(cluster, "get", "workloads", "scaled")
    assert (w["replicas_wanted"], w["replicas_running"]) == (3, 3)


def test_a_spec_no_node_can_ever_run_is_refused(cluster: Cluster) -> None:
    huge = WEB.replace("name: web", "name: huge").replace("memory: 16Mi", "memory: 64Gi")
    r = cli(cluster, "apply", "-f", "-", input=huge, ok=False)
    assert r.exit_code == 1
    assert r.stderr.splitlines()[1].startswith("  spec.resources: no node can ever run huge")
    assert cli(cluster, "explain", "-f", "-", input=huge).stdout.splitlines()[0] == (
        "workload huge: 0/2 nodes fit: 2 insufficient memory"
    )


def test_wait_times_out_with_the_reason(cluster: Cluster) -> None:
    # 2500m each, 3900m allocatable per node: one per node, so of 3 replicas on 2 nodes, 2
    # run and 1 stays unplaced (the 100m replicas of the other tests still fit beside them)
    crowded = (
        WEB.replace("name: web", "name: crowded")
        .replace("replicas: 2", "replicas: 3")
        .replace("cpu: 100m", "cpu: 2500m")
    )
    cli(cluster, "apply", "-f", "-", input=crowded)
    r = cli(cluster, "wait", "workload", "crowded", "--timeout", "2s", ok=False)
    assert r.exit_code == 1
    assert r.stderr.startswith("error: timed out after 2s: crowded has 2/3 replicas running")
    assert "1 unplaced: " in r.stderr
    row = cli(cluster, "get", "workloads", "crowded").stdout.splitlines()[2]
    assert row.split()[:3] == ["crowded", "2/3", "1"] and "1: " in row


def test_explain_a_file_and_best_nodes(cluster: Cluster, tmp_path: Path) -> None:
    spec = tmp_path / "new.yaml"
    spec.write_text(WEB.replace("name: web", "name: not-applied"))
    out = cli(cluster, "explain", "-f", str(spec), "--top", "2").stdout.splitlines()
    assert out[0] == "workload not-applied: 2/2 nodes fit"
    assert out[1].split()[:3] == ["#", "NODE", "TOTAL"]
    ranked = [line.split() for line in out[3:]]
    assert [r[0] for r in ranked] == ["1", "2"]
    assert {r[1] for r in ranked} == {"n1", "n2"}
    assert float(ranked[0][3]) >= float(ranked[1][3])  # best first
    r = cli(cluster, "explain", "not-applied", "-f", str(spec), ok=False)  # both: refused
    assert r.exit_code == 1
    assert "give a workload NAME or -f FILE (one of them)" in r.stderr


def test_apply_several_documents_one_bad(cluster: Cluster) -> None:
    good = WEB.replace("name: web", "name: multi").replace("replicas: 2", "replicas: 1")
    bad = "name: multi-bad\nimage: x\nreplicas: many\n"
    r = cli(cluster, "apply", "-f", "-", input=good + "---\n" + bad, ok=False)
    assert r.exit_code == 1
    assert r.stdout.strip() == "workload/multi created (version 1)"  # the good one went in
    lines = r.stderr.splitlines()
    assert lines[0] == "stdin#2:"
    assert any(line.startswith("  spec.replicas:") for line in lines)
    assert lines[-1] == "error: 1 of 2 workloads were not applied"


def test_bad_input_shows_field_paths(cluster: Cluster) -> None:
    bad = "name: bad\nimage: x\nresources: {memory: 12XB}\nreplicas: -1\n"
    r = cli(cluster, "apply", "-f", "-", input=bad, ok=False)
    assert r.exit_code == 1
    lines = r.stderr.splitlines()
    assert lines[0] == "error: the request was refused:"
    assert '  spec.resources.memory: "12XB" is not a size (e.g. 512Mi, 1G)' in lines
    assert any(line.startswith("  spec.replicas: -1") for line in lines)
    assert "Traceback" not in r.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["get", "workloads", "nope"], "error: workload 'nope' not found"),
        (["describe", "workload", "nope"], "error: workload 'nope' not found"),
        (["scale", "nope", "2"], "error: workload 'nope' not found"),
        (["delete", "workload", "nope"], "error: workload 'nope' not found"),
        (["cordon", "nope"], "error: node 'nope' not found (by id or name)"),
        (["logs", "nope"], "error: replica 'nope' not found"),
        (["token", "revoke", "tok-nope"], "error: no join token tok-nope"),
    ],
)
def test_unknown_names_are_clear_errors(cluster: Cluster, args: list[str], message: str) -> None:
    r = cli(cluster, *args, ok=False)
    assert r.exit_code == 1
    assert r.stderr.startswith(message), r.stderr


def test_logs_of_a_fake_container(cluster: Cluster) -> None:
    cli(cluster, "apply", "-f", "-", input=WEB.replace("name: web", "name: talker"))
    cli(cluster, "wait", "workload", "talker", "--timeout", "20")
    rid = doc(cluster, "get", "replicas", "-w", "talker")["replicas"][0]["id"]
    out = eventually(
        lambda: cli(cluster, "logs", rid, "--tail", "10").stdout, "the container's output"
    )
    assert out == GREETING.decode()
    assert cli(cluster, "logs", rid[:-3]).stdout == GREETING.decode()  # a unique id prefix
    by_workload = cli(cluster, "logs", "talker")  # like `kubectl logs deploy/talker`
    assert by_workload.stdout == GREETING.decode()
    assert by_workload.stderr.startswith("replica talker-") and "(2 replicas)" in by_workload.stderr


def test_tokens_list_and_revoke(cluster: Cluster) -> None:
    token = cli(cluster, "token", "create", "--use", "coordinator-join", "--ttl", "1h").stdout
    assert token.strip()
    toks = doc(cluster, "token", "list")["tokens"]
    fresh = [t for t in toks if t["use"] == "coordinator-join"]
    assert len(fresh) == 1 and fresh[0]["state"] == "active"
    used = [t for t in toks if t["state"] == "used"]
    assert len(used) == 2  # the agents' enrollment tokens
    tid = fresh[0]["token_id"]
    assert cli(cluster, "token", "revoke", tid).stdout.strip() == f"token {tid} revoked"
    table = cli(cluster, "token", "list").stdout
    row = next(line.split() for line in table.splitlines() if line.startswith(tid))
    assert row[1:4] == ["coordinator-join", "revoked", "in"]


def test_events_tail(cluster: Cluster) -> None:
    lines = cli(cluster, "events", "--tail", "3").stdout.splitlines()
    assert len(lines) == 3
    assert all(len(line) > 21 and line[4] == "-" and line[19:21] == "  " for line in lines)
    mine = cli(cluster, "events", "--workload", "web", "--tail", "100").stdout
    assert "workload web created (version 1)" in mine
    assert "scaled" not in mine  # other workloads' events are filtered out


def test_cordon_uncordon_drain_delete(cluster: Cluster) -> None:
    def state(name: str) -> str:
        return str(doc(cluster, "get", "nodes", name)["state"])

    out = cli(cluster, "cordon", "n1").stdout
    assert out.startswith("node/n1 (") and out.strip().endswith("cordoned: state cordoned")
    assert state("n1") == "cordoned"
    cli(cluster, "uncordon", "n1")
    assert state("n1") == "ready"

    cli(cluster, "apply", "-f", "-", input=WEB.replace("name: web", "name: movable"))
    cli(cluster, "wait", "workload", "movable", "--timeout", "20")
    # what is still there at the deadline is stopped regardless
    out = cli(cluster, "drain", "n2", "--deadline", "5m").stdout
    assert out.strip().endswith("draining: state draining, deadline in 300s")

    def all_on_n1() -> bool:
        reps = doc(cluster, "get", "replicas", "-w", "movable")["replicas"]
        live = [r for r in reps if r["desired"] == "running"]
        names = {n["id"]: n["name"] for n in doc(cluster, "get", "nodes")["nodes"]}
        return len(live) == 2 and all(names[r["node_id"]] == "n1" for r in live)

    eventually(all_on_n1, "replicas moved off the drained node")
    assert "deadline" in cli(cluster, "drain", "n2", "--deadline", "soon", ok=False).output
    r = cli(cluster, "delete", "workload", "movable")
    assert r.stdout.startswith("workload/movable deleting")
    # Deleting is asynchronous: the workload shows as deleting while its replicas stop,
    # then it is gone (the reconciler acts at once on a quiet cluster, and the fake runtime
    # stops replicas at once, so it may already be gone when we look).
    r = cli(cluster, "get", "workloads", "movable", "-o", "json", ok=False)
    if r.exit_code == 0:
        assert json.loads(r.stdout)["deleted"] is True
    else:
        assert "not found" in r.output
    eventually(
        lambda: cli(cluster, "get", "workloads", "movable", ok=False).exit_code == 1,
        "the deleted workload to be gone",
    )
    assert "movable" not in cli(cluster, "get", "replicas").stdout


def follow(cluster: Cluster, *args: str) -> subprocess.Popen[str]:
    """A follow command in its own process, so the test can read it and then press Ctrl-C.
    A watchdog kills it after 20s, so a line that never comes fails the test, not hangs it."""
    p = subprocess.Popen(
        [sys.executable, "-m", "cloudless.cli.main", *args, "--config", str(cluster.client_config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    watchdog = threading.Timer(20, p.kill)
    watchdog.daemon = True
    watchdog.start()
    return p


def interrupt(p: subprocess.Popen[str]) -> tuple[int, str]:
    p.send_signal(signal.SIGINT)
    try:
        _, err = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise AssertionError("did not stop on Ctrl-C") from None
    return p.returncode, err


def test_follow_events_and_logs_until_ctrl_c(cluster: Cluster) -> None:
    p = follow(cluster, "events", "-f", "--tail", "1")
    try:
        assert p.stdout is not None
        # The first (old) line proves the listing is done: every later event is followed.
        assert p.stdout.readline()
        cli(cluster, "apply", "-f", "-", input=WEB.replace("name: web", "name: followed"))
        wanted = "workload followed created (version 1)"
        lines = [p.stdout.readline().rstrip() for _ in range(1)]
        while lines[-1] and not lines[-1].endswith(wanted):
            lines.append(p.stdout.readline().rstrip())
        assert lines[-1].endswith(wanted), lines
    finally:
        rc, err = interrupt(p)
    assert rc == 130 and "Traceback" not in err, err

    cli(cluster, "wait", "workload", "followed", "--timeout", "20")
    rid = doc(cluster, "get", "replicas", "-w", "followed")["replicas"][0]["id"]
    p = follow(cluster, "logs", rid, "-f")
    try:
        assert p.stdout is not None
        assert p.stdout.readline() == GREETING.decode()
    finally:
        rc, err = interrupt(p)
    assert rc == 130 and "Traceback" not in err, err


def test_no_coordinator_answering_names_the_server(cluster: Cluster, tmp_path: Path) -> None:
    raw = json.loads(cluster.client_config.read_text())
    dead = f"https://127.0.0.1:{free_port()}"
    base = cluster.client_config.parent
    cfg = tmp_path / "config.json"
    cfg.write_text(
        json.dumps({"servers": [dead], **{k: str(base / raw[k]) for k in ("ca", "cert", "key")}})
    )
    r = runner.invoke(app, ["get", "nodes", "--config", str(cfg)])
    assert r.exit_code == 1
    assert r.stderr.startswith("error: no coordinator answered (")
    assert dead in r.stderr and "Traceback" not in r.output
    # A dead server first, then the live one: the client fails over.
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "servers": [dead, *raw["servers"]]}))
    assert runner.invoke(app, ["get", "nodes", "--config", str(cfg)]).exit_code == 0
