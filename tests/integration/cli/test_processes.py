"""``cloudless coordinator`` and ``cloudless agent`` as real processes: they start from flags,
an agent enrolls with a token captured from ``cloudless token create``, and SIGTERM stops
both cleanly (exit 0, no traceback)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner, Result

from cloudless.cli.main import app
from cloudless.lib.net import free_port

CLI = [sys.executable, "-m", "cloudless.cli.main"]
ENV = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}


def cli(*args: str, config: Path) -> Result:
    """Client commands run in-process; the daemons are the separate processes here."""
    return CliRunner().invoke(app, [*args, "--config", str(config)])


def wait_for(pred, what: str, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def stop(p: subprocess.Popen[str]) -> tuple[int, str]:
    p.send_signal(signal.SIGTERM)
    try:
        _, err = p.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
        raise AssertionError(f"did not stop on SIGTERM:\n{err}") from None
    return p.returncode, err


def test_coordinator_and_agent_processes(tmp_path: Path) -> None:
    api = free_port()
    coord = subprocess.Popen(
        [*CLI, "coordinator", "--data-dir", str(tmp_path / "c"), "--name", "c1", "--bootstrap",
         "--store", "memory", "--api-port", str(api), "--agent-port", str(free_port()),
         "--enroll-port", str(free_port()), "--root-key-size", "2048", "--bcrypt-cost", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    procs = [coord]
    try:
        config = tmp_path / "c" / "admin" / "config.json"
        wait_for(lambda: config.exists() or coord.poll() is not None, "the admin config")
        assert coord.poll() is None
        wait_for(lambda: cli("token", "list", config=config).exit_code == 0, "the API")
        made = cli("token", "create", config=config)
        assert made.exit_code == 0, made.stderr
        token = made.stdout.strip()
        agent = subprocess.Popen(
            [*CLI, "agent", "--join", f"https://127.0.0.1:{api}", "--token", token,
             "--data-dir", str(tmp_path / "a"), "--name", "edge-1", "--zone", "z1",
             "--label", "kind=test", "--runtime", "fake", "--cpu", "1", "--memory", "1Gi"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
        )  # fmt: skip
        procs.append(agent)

        def ready() -> bool:
            out = cli("get", "nodes", config=config).stdout.splitlines()
            return len(out) == 3 and out[2].split()[1:3] == ["edge-1", "ready"]

        wait_for(ready, "the agent's node to be ready")
        rc, err = stop(agent)
        assert rc == 0, err
        assert "received SIGTERM: shutting down" in err and "Traceback" not in err
        rc, err = stop(coord)
        assert rc == 0, err
        assert "coordinator c1 serving" in err
        assert f"export CLOUDLESS_CONFIG={config}" in err  # the next step, for a human
        assert "received SIGTERM: shutting down" in err and "Traceback" not in err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()


def test_coordinator_without_ca_or_bootstrap_says_what_to_do(tmp_path: Path) -> None:
    # In-process (the real Coordinator, through the CLI), to spare a Python start-up.
    r = CliRunner().invoke(
        app,
        ["coordinator", "--data-dir", str(tmp_path), "--store", "memory",
         "--api-port", str(free_port()), "--agent-port", str(free_port()),
         "--enroll-port", str(free_port())],
    )  # fmt: skip
    assert r.exit_code == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: no CA in {tmp_path / 'ca'}: start the first coordinator")
    assert "Traceback" not in r.output
