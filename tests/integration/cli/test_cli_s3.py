"""``cloudless s3`` as a user types it (CliRunner) against a real coordinator's API, with no
etcd credentials: keys, buckets, permissions and a layout staged, previewed and applied; a
viewer may list buckets but not mint keys; bad input exits 1 naming the field."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudless.cli.main import app

from .test_cli_cluster import Cluster, run_cli, started

runner = CliRunner()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with started(tmp_path_factory.mktemp("cli-s3")) as c:
        yield c


run = run_cli


def key_id(output: str) -> str:
    m = re.search(r"access key id:\s+(\S+)", output)
    assert m and re.search(r"secret access key:\s+\S{40}", output), output
    return m.group(1)


def test_keys_buckets_permissions_and_roles(cluster: Cluster, tmp_path: Path) -> None:
    admin = cluster.client_config
    alice = key_id(run(admin, "s3", "key", "create", "alice").stdout)
    bob = key_id(run(admin, "s3", "key", "create", "bob").stdout)
    run(admin, "s3", "bucket", "create", "cli-bucket", "--owner", alice)
    r = run(admin, "s3", "bucket", "allow", "cli-bucket", bob, "--perm", "write")
    assert f"{bob}: write on bucket cli-bucket" in r.stdout
    keys = json.loads(run(admin, "s3", "key", "list", "-o", "json").stdout)["keys"]
    assert sorted(k["name"] for k in keys) == ["alice", "bob"]
    assert all("secret" not in k for k in keys)

    bad = [
        # (args, words in the refusal)
        (["s3", "bucket", "create", "Bad_Name", "--owner", alice], "name: bucket name 'Bad_Name'"),
        (["s3", "bucket", "create", "cli-bucket", "--owner", alice], "already own"),
        (["s3", "bucket", "create", "other-bucket", "--owner", "NOPE"], "owner: access key"),
        (["s3", "bucket", "allow", "cli-bucket", bob, "--perm", "god"], "perm: 'god'"),
        (["s3", "bucket", "allow", "missing-bucket", bob], "does not exist"),
        (["s3", "key", "delete", "CLNOPE"], "not found"),
        (["s3", "key", "delete", "CL-1"], "id: 'CL-1' is not an access key id"),
    ]
    for args, words in bad:
        r = run(admin, *args, ok=False)
        assert words in r.output, (args, r.output)

    out = tmp_path / "vic"
    run(admin, "user", "create", "vic", "--role", "viewer", "--out", str(out))
    vic = out / "config.json"
    r = run(vic, "s3", "key", "create", "mallory", ok=False)
    assert "role viewer" in r.output and "s3keys" in r.output
    r = run(vic, "s3", "bucket", "list")
    assert "cli-bucket" in r.stdout
    run(vic, "s3", "key", "list", ok=False)  # key ids are not the viewer's to see
    entries = json.loads(run(admin, "audit", "-o", "json").stdout)["entries"]
    s3keys = [
        (e["user"].rsplit("/", 1)[-1], e["verb"], e["allowed"])
        for e in entries
        if e["resource"] == "s3keys"
    ]
    assert ("admin", "create", True) in s3keys and ("vic", "create", False) in s3keys, s3keys

    r = run(admin, "s3", "key", "delete", bob)
    assert f"access key {bob} deleted; its grants on cli-bucket removed" in r.stdout, r.stdout
    keys = json.loads(run(admin, "s3", "key", "list", "-o", "json").stdout)["keys"]
    assert [k["key_id"] for k in keys] == [alice]
    buckets = json.loads(run(admin, "s3", "bucket", "list", "-o", "json").stdout)["buckets"]
    assert [b["allow"] for b in buckets] == [{alice: "owner"}]
    assert [(b["public_read"], b["lifecycle_rules"], b["cors_rules"]) for b in buckets] == [
        (False, 0, 0)
    ]
    assert "PUBLIC" in run(admin, "s3", "bucket", "list").stdout


def test_layout_stage_preview_apply(cluster: Cluster) -> None:
    admin = cluster.client_config
    run(admin, "s3", "layout", "stage", "n1", "--zone", "home", "--capacity", "1T",
        "--replication", "2")  # fmt: skip
    run(admin, "s3", "layout", "stage", "n2", "--zone", "office", "--capacity", "1T")
    r = run(admin, "s3", "layout", "preview")
    # R=2 over two zones, equal capacity: 256 copies each, all new
    assert "512 partition copies move" in r.stdout, r.stdout
    r = run(admin, "s3", "layout", "show")
    assert "staged:" in r.stdout and "n2: zone office" in r.stdout
    r = run(admin, "s3", "layout", "apply", "--version", "0")
    assert "applied layout version 1" in r.stdout
    r = run(admin, "s3", "layout", "apply", "--version", "1", ok=False)
    assert "nothing staged" in r.output
    r = run(admin, "s3", "layout", "stage", "n3", "--zone", "x", "--capacity", "lots", ok=False)
    assert "capacity:" in r.output
    r = runner.invoke(app, ["s3", "layout", "stage", "n3", "--zone", "x", "--remove",
                            "--config", str(admin)])  # fmt: skip
    assert r.exit_code == 2 and "either --zone" in r.output
    assert "layout version 1" in run(admin, "s3", "status").stdout
