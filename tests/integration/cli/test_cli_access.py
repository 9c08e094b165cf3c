"""``cloudless user|role|policy|audit|ca`` as a user types them (CliRunner) against a real
coordinator: a user's config directory is written with private files and works at once;
bad roles and policies exit 1 with the reason; revocation locks the user out."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_cli_cluster import Cluster, run_cli, started


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with started(tmp_path_factory.mktemp("cli-access")) as c:
        yield c


run = run_cli


def test_user_role_policy_audit_and_ca(cluster: Cluster, tmp_path: Path) -> None:
    admin = cluster.client_config
    out = tmp_path / "dana"
    run(admin, "user", "create", "dana", "--role", "developer", "-n", "web", "--out", str(out))
    for f in ("config.json", "dana.key", "dana.crt", "ca.pem"):
        assert stat.S_IMODE((out / f).stat().st_mode) == 0o600, f
    dana = out / "config.json"
    spec = tmp_path / "shop.yaml"
    spec.write_text("name: shop\nimage: busybox\nnamespace: web\n")
    run(dana, "apply", "-f", str(spec))
    spec.write_text("name: shop2\nimage: busybox\n")  # namespace default: not dana's
    r = run(dana, "apply", "-f", str(spec), ok=False)
    assert "role developer" in r.output and "namespace default" in r.output
    r = run(dana, "get", "workloads", ok=False)  # every namespace: not dana's to list
    assert "-n NS" in r.output
    listed = json.loads(run(dana, "get", "workloads", "-n", "web", "-o", "json").stdout)
    assert [w["name"] for w in listed["workloads"]] == ["shop"]
    users = json.loads(run(admin, "user", "list", "-o", "json").stdout)["users"]
    assert [(u["name"], u["role"], u["namespaces"]) for u in users] == [
        ("dana", "developer", ["web"])
    ]

    role = tmp_path / "role.yaml"
    role.write_text("name: odd\nrules:\n  - verbs: [launch]\n    resources: [workloads]\n")
    r = run(admin, "role", "apply", "-f", str(role), ok=False)
    assert "unknown 'launch'" in r.output

    pol = tmp_path / "policy.yaml"
    pol.write_text(
        "name: labels\nvalidations:\n  - expression: '\"team\" in object.labels'\n"
        "    message: every workload needs a team label\n"
    )
    r = run(admin, "policy", "apply", "-f", str(pol), "--dry-run")
    assert "shop" in r.output and "not stored" in r.output
    assert json.loads(run(admin, "policy", "list", "-o", "json").stdout)["policies"] == []
    pol.write_text("name: bad\nvalidations:\n  - expression: 'object.image.startsWith('\n")
    r = run(admin, "policy", "apply", "-f", str(pol), ok=False)
    assert "does not compile" in r.output

    status = json.loads(run(admin, "ca", "status", "-o", "json").stdout)
    assert status["roots"][0]["role"] == "issuing" and status["users"][0]["name"] == "dana"
    assert "issuing" in run(admin, "ca", "status").stdout
    entries = json.loads(run(admin, "audit", "-o", "json").stdout)["entries"]
    assert any(not e["allowed"] and e["name"] == "shop2" for e in entries)

    run(admin, "user", "revoke", "dana")
    r = run(dana, "get", "workloads", ok=False)
    assert "revoked" in r.output
