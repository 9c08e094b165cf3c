"""``cloudless store snapshot save`` against a coordinator running its embedded etcd member
(a real etcd process), using the coordinator's etcd client certificate from its data dir."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudless.cli.main import app
from cloudless.lib.net import free_port

CLI = [sys.executable, "-m", "cloudless.cli.main"]
ENV = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd binary not installed")


def test_snapshot_save_from_an_etcd_backed_coordinator(tmp_path: Path) -> None:
    etcd_port = free_port()
    data = tmp_path / "c"
    coord = subprocess.Popen(
        [*CLI, "coordinator", "--data-dir", str(data), "--name", "c1", "--bootstrap",
         "--store", "etcd", "--api-port", str(free_port()), "--agent-port", str(free_port()),
         "--enroll-port", str(free_port()), "--etcd-client-port", str(etcd_port),
         "--etcd-peer-port", str(free_port()), "--root-key-size", "2048", "--bcrypt-cost", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    try:
        config = data / "admin" / "config.json"
        deadline = time.monotonic() + 60
        while not config.exists():
            assert coord.poll() is None, coord.communicate()[1]
            assert time.monotonic() < deadline, "coordinator did not bootstrap"
            time.sleep(0.2)
        dest = tmp_path / "backup.db"
        args = ["store", "snapshot", "save", str(dest), "--data-dir", str(data)]
        r = CliRunner().invoke(app, [*args, "--endpoint", f"127.0.0.1:{etcd_port}"])
        assert r.exit_code == 0, r.output
        digest = hashlib.sha256(dest.read_bytes()).hexdigest()
        assert r.stdout.startswith(f"snapshot saved to {dest} (")
        assert r.stdout.strip().endswith(f"sha256 {digest})")
        assert dest.stat().st_size > 0

        # The same file again is refused rather than overwritten.
        again = CliRunner().invoke(app, [*args, "--endpoint", f"127.0.0.1:{etcd_port}"])
        assert again.exit_code == 1
        assert again.stderr.strip() == f"error: {dest} already exists: choose a new file name"
    finally:
        coord.send_signal(signal.SIGTERM)
        try:
            _, err = coord.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            coord.kill()
            coord.communicate()
            raise
    assert coord.returncode == 0, err


def test_snapshot_save_needs_a_coordinator_data_dir(tmp_path: Path) -> None:
    r = CliRunner().invoke(
        app, ["store", "snapshot", "save", str(tmp_path / "x.db"), "--data-dir", str(tmp_path)]
    )
    assert r.exit_code == 1
    assert r.stderr.strip() == (
        f"error: {tmp_path / 'tls' / 'etcd-ca.pem'} does not exist: --data-dir must be the "
        "data dir of a coordinator that runs the etcd store (not --store memory)"
    )
