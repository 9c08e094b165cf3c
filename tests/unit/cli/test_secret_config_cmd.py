"""``cloudless secret`` and ``cloudless config`` share reading a value, listing and deleting:
each command against a recording client (what it calls, what it prints)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from cloudless.cli import secrets_cmd

ROW = {"name": "app", "type": "opaque", "size": 2048, "version": 3, "updated_at": 940.0}


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        self.calls.append((method, path, body))
        if method == "GET":
            plural = path.rsplit("/", 1)[1]
            return {plural: [ROW if plural == "secrets" else {**ROW, "type": "config"}]}
        if method == "POST":
            return {"name": body["name"], "version": 1, "size": 1}
        return {"deleted": path.rsplit("/", 1)[1]}


@pytest.fixture
def rec(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    r = Recorder()
    monkeypatch.setattr(secrets_cmd, "connect", lambda config: r)
    monkeypatch.setattr(secrets_cmd, "now", lambda: 1000.0)
    return r


def run(*args: str) -> Any:
    app = typer.Typer()
    secrets_cmd.register(app)
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "300"})


@pytest.mark.parametrize(
    ("kind", "cells"),
    [
        ("secret", ["app", "opaque", "2Ki", "3", "1m"]),  # updated 60 s before now
        ("config", ["app", "2Ki", "3", "1m"]),  # no type column
    ],
)
def test_list_and_delete_for_both_kinds(rec: Recorder, kind: str, cells: list[str]) -> None:
    out = run(kind, "list")
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines()[2].split() == cells  # header, rule, then the row
    listed = run(kind, "list", "-o", "json")
    assert json.loads(listed.stdout)[f"{kind}s"][0]["name"] == "app"
    deleted = run(kind, "delete", "app")
    assert deleted.exit_code == 0 and f"{kind} app deleted" in deleted.output
    assert [c[:2] for c in rec.calls] == [
        ("GET", f"/v1/{kind}s"), ("GET", f"/v1/{kind}s"), ("DELETE", f"/v1/{kind}s/app")
    ]  # fmt: skip


@pytest.mark.parametrize("kind", ["secret", "config"])
def test_create_takes_exactly_one_value_source(rec: Recorder, kind: str, tmp_path: Path) -> None:
    both = run(kind, "create", "app", "--from-literal", "x", "--from-file", str(tmp_path))
    assert both.exit_code != 0 and "exactly one of --from-literal or --from-file" in both.output
    missing = run(kind, "create", "app", "--from-file", str(tmp_path / "nope"))
    assert missing.exit_code != 0 and "No such file or directory" in missing.output
    assert rec.calls == []  # nothing sent
    (tmp_path / "v").write_bytes(b"a=1")
    assert run(kind, "create", "app", "--from-file", str(tmp_path / "v")).exit_code == 0
    ((method, path, body),) = rec.calls
    assert (method, path, body["data"]) == ("POST", f"/v1/{kind}s", "YT0x")  # base64 of a=1
