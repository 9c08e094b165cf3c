"""A planned departure end to end, with real processes: a coordinator and two agents
(``--runtime fake``). ``cloudless agent leave`` on the node holding a replica: the replica is
started and ready on the other node before the leaving agent stops its own (make-before-
break), the agent exits 0, and the node is ``departed`` (not offline, not failed).

The not-ready window is measured two ways: the API is sampled every 20 ms for the number of
ready replicas during the whole leave, and the event log (ordered by store revision) must
show the replacement running before the old replica is told to stop."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from cloudless.cli.main import app
from cloudless.cli.session import connect
from cloudless.lib.net import free_port

CLI = [sys.executable, "-m", "cloudless.cli.main"]
ENV = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
WEB = b"""
name: web
image: busybox:latest
command: [sleep, "3600"]
resources: {cpu: 100m, memory: 16Mi}
replicas: 1
"""


def wait_for(pred, what: str, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _ready(w: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        r
        for r in w["replicas"]
        if r["observed"] == "running" and r["ready"] and r["desired"] == "running"
    ]


def test_agent_leave_moves_its_replica_before_stopping_it(tmp_path: Path) -> None:
    api = free_port()
    coord = subprocess.Popen(
        [*CLI, "coordinator", "--data-dir", str(tmp_path / "c"), "--name", "c1", "--bootstrap",
         "--store", "memory", "--api-port", str(api), "--agent-port", str(free_port()),
         "--enroll-port", str(free_port()), "--root-key-size", "2048", "--bcrypt-cost", "4",
         "--scheduler", "availability"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    procs: list[subprocess.Popen[str]] = [coord]
    try:
        config = tmp_path / "c" / "admin" / "config.json"
        wait_for(lambda: config.exists() or coord.poll() is not None, "the admin config")
        assert coord.poll() is None
        runner = CliRunner()
        wait_for(
            lambda: runner.invoke(app, ["token", "list", "--config", str(config)]).exit_code == 0,
            "the API",
        )
        client = connect(config)
        agents: dict[str, subprocess.Popen[str]] = {}
        # owner-reserved hours 12 h from now (local time), so they do not act during the test
        later = datetime.datetime.now() + datetime.timedelta(hours=12)
        reserved = f"{later.strftime('%a')} {later.hour}-{later.hour + 1}"
        for i in (1, 2):
            token = runner.invoke(app, ["token", "create", "--config", str(config)])
            agents[f"edge-{i}"] = subprocess.Popen(
                [*CLI, "agent", "--join", f"https://127.0.0.1:{api}",
                 "--token", token.stdout.strip(), "--data-dir", str(tmp_path / f"a{i}"),
                 "--name", f"edge-{i}", "--zone", f"z{i}", "--runtime", "fake",
                 "--cpu", "1", "--memory", "1Gi", "--reserved-hours", reserved],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV,
            )  # fmt: skip
            procs.append(agents[f"edge-{i}"])

        def states() -> dict[str, str]:
            return {n["name"]: n["state"] for n in client.call("GET", "/v1/nodes")["nodes"]}

        wait_for(lambda: list(states().values()) == ["ready", "ready"], "two ready nodes")
        client.apply(WEB)
        wait_for(lambda: len(_ready(client.workload("web"))) == 1, "web ready")
        [old] = _ready(client.workload("web"))
        names = {n["id"]: n["name"] for n in client.call("GET", "/v1/nodes")["nodes"]}
        leaving = names[old["node_id"]]
        index = 1 if leaving == "edge-1" else 2

        samples: list[tuple[float, int]] = []
        done = threading.Event()

        def sample() -> None:
            probe = connect(config)
            while not done.is_set():
                samples.append((time.monotonic(), len(_ready(probe.workload("web")))))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            t0 = time.monotonic()
            left = runner.invoke(
                app,
                ["agent", "leave", "--data-dir", str(tmp_path / f"a{index}"),
                 "--deadline", "60s", "--reason", "owner reclaimed it"],
            )  # fmt: skip
            took = time.monotonic() - t0
            if left.exit_code != 0:
                agents[leaving].kill()
                raise AssertionError(left.output + agents[leaving].communicate()[1])
            assert "left" in left.stdout
            wait_for(lambda: states()[leaving] == "departed", "the node departed", timeout=10)
            time.sleep(0.5)
        finally:
            done.set()
            sampler.join()

        proc = agents[leaving]
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "left the cluster" in err and "Traceback" not in err
        # zero not-ready window: every sample during the leave saw a ready replica
        assert samples and min(n for _, n in samples) >= 1, samples
        [new] = _ready(client.workload("web"))
        assert new["node_id"] != old["node_id"]
        # the event log, in store order: the replacement ran before the old one was stopped
        events = [
            json.loads(line)["message"] for line in client.stream("/v1/events?tail=500") if line
        ]
        ran = next(i for i, m in enumerate(events) if f"{new['id']} on" in m and "-> running" in m)
        stopped = next(
            i for i, m in enumerate(events) if f"replica {old['id']}: node draining" in m
        )
        assert ran < stopped, events
        assert any("leaving (owner reclaimed it)" in m for m in events)
        assert any("-> departed (left as announced)" in m for m in events), events
        # no reliability penalty: the departed node is not judged down
        assert states() == {leaving: "departed", names[new["node_id"]]: "ready"}
        # describe node shows the learned model, the reserved hours and the departure
        shown = runner.invoke(app, ["describe", "node", leaving, "--config", str(config)])
        assert shown.exit_code == 0, shown.output
        assert "departed" in shown.stdout and "leave (owner reclaimed it)" in shown.stdout
        assert "Availability" in shown.stdout and "Next hours (UTC)" in shown.stdout
        assert "Reserved hours" in shown.stdout and "UTC" in shown.stdout
        # explain says what availability the live replicas are predicted to give
        ex = runner.invoke(app, ["explain", "web", "--config", str(config)])
        assert ex.exit_code == 0, ex.output
        assert (
            "predicted availability" in ex.stdout and "(at least 1 of 1 replicas up)" in ex.stdout
        )
        print(
            f"\nleave took {took:.2f}s; {len(samples)} samples every 20 ms, "
            f"min ready replicas {min(n for _, n in samples)}"
        )
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
