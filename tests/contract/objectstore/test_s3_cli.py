"""``cloudless s3`` against a real etcd (the coordinator's client certificate in a data dir):
keys, buckets, permissions and a layout staged, previewed and applied; bad input named."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudless.cli.main import app
from cloudless.store.etcd import EtcdStore
from cloudless.store.tls import ClientTls
from cloudless.testing.etcd import BlockingEtcd, TestPki


@pytest.fixture
def cli(etcd_server: tuple[BlockingEtcd, TestPki], tmp_path: Path) -> list[str]:
    etcd, pki = etcd_server
    tls = tmp_path / "tls"
    tls.mkdir()
    creds = pki.client()
    (tls / "etcd-ca.pem").write_bytes(creds.ca_pem)
    (tls / "etcd-client.crt").write_bytes(creds.cert_pem)
    (tls / "etcd-client.key").write_bytes(creds.key_pem)
    # start from no layout (other tests share this etcd)
    asyncio.run(_clear(etcd.endpoints, creds))
    return ["--data-dir", str(tmp_path), "--endpoint", etcd.endpoints[0].split("//")[-1]]


async def _clear(endpoints: list[str], creds: ClientTls) -> None:
    store = EtcdStore(endpoints, creds)
    try:
        await store.delete("/cloudless/objectstore/", prefix=True)
    finally:
        await store.close()


def run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.output


def test_keys_buckets_and_permissions(cli: list[str]) -> None:
    code, out = run("s3", "key", "create", "alice", *cli)
    assert code == 0, out
    m = re.search(r"access key id:\s+(\S+)", out)
    assert m and "secret access key:" in out
    alice = m.group(1)
    code, out = run("s3", "key", "create", "bob", *cli)
    bob = re.search(r"access key id:\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    assert run("s3", "bucket", "create", "cli-bucket", "--owner", alice, *cli)[0] == 0
    code, out = run("s3", "bucket", "allow", "cli-bucket", bob, "--perm", "write", *cli)
    assert code == 0 and f"{bob}: write on bucket cli-bucket" in out

    bad = [
        # (args, message fragment)
        (["s3", "bucket", "create", "Bad_Name", "--owner", alice], "bucket name 'Bad_Name'"),
        (["s3", "bucket", "create", "cli-bucket", "--owner", alice], "already own"),
        (["s3", "bucket", "create", "other-bucket", "--owner", "NOPE"], "does not exist"),
        (["s3", "bucket", "allow", "cli-bucket", bob, "--perm", "god"], "permission 'god'"),
        (["s3", "bucket", "allow", "missing-bucket", bob], "does not exist"),
    ]
    for args, fragment in bad:
        code, out = run(*args, *cli)
        assert code == 1 and fragment in out, (args, out)


def test_layout_stage_preview_apply(cli: list[str]) -> None:
    run("s3", "layout", "stage", "n1", "--zone", "home", "--capacity", "1T",
        "--replication", "2", *cli)  # fmt: skip
    run("s3", "layout", "stage", "n2", "--zone", "office", "--capacity", "1T", *cli)
    code, out = run("s3", "layout", "preview", *cli)
    # R=2 over two zones, equal capacity: 256 copies each, all new
    assert code == 0 and "512 partition copies move" in out, out
    code, out = run("s3", "layout", "show", *cli)
    assert "staged:" in out and "n2: zone office" in out
    code, out = run("s3", "layout", "apply", "--version", "0", *cli)
    assert code == 0 and "applied layout version 1" in out, out
    code, out = run("s3", "layout", "apply", "--version", "1", *cli)
    assert code == 1 and "nothing staged" in out
    code, out = run("s3", "layout", "stage", "n3", "--zone", "x", "--remove", *cli)
    assert code == 1 and "either --zone" in out
    code, out = run("s3", "layout", "stage", "n3", "--zone", "x", "--capacity", "lots", *cli)
    assert code == 1 and "--capacity" in out
