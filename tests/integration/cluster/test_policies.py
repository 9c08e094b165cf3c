"""CEL admission policies against a live coordinator: apply with a dry run, denials naming
the policy and the expression, dry-run mode warnings, malformed CEL refused with nothing
stored."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from cloudless.cli.client import ApiError, Client, ClientConfig
from cloudless.cli.users import issue_user

REGISTRY = '["registry.local/"].exists(r, object.image.startsWith(r))'


def spec(name: str, image: str = "registry.local/app:1", ns: str = "default") -> bytes:
    return json.dumps(
        {
            "name": name,
            "image": image,
            "namespace": ns,
            "resources": {"cpu": "10m", "memory": "1Mi"},
        }
    ).encode()


def policy(name: str, expr: str, **kw: object) -> dict[str, object]:
    return {"name": name, "validations": [{"expression": expr, "message": "not allowed"}], **kw}


def _scenario(admin: Client, tmp: Path) -> None:
    admin.apply(spec("old", image="docker.io/library/busybox"))
    # dry run: compiled, reported, not stored
    res = admin.call("POST", "/v1/policies?dry_run=true", policy("registries", REGISTRY))
    assert res["dry_run"] is True
    assert [w["workload"] for w in res["would_deny"]] == ["old"]
    assert "registries" in res["would_deny"][0]["why"]
    assert admin.call("GET", "/v1/policies")["policies"] == []
    admin.apply(spec("still-fine", image="docker.io/x"))  # nothing enforced yet

    admin.call("POST", "/v1/policies", policy("registries", REGISTRY))
    with pytest.raises(ApiError) as e:
        admin.apply(spec("evil", image="docker.io/evil"))
    assert e.value.status == 403 and e.value.code == "policy_denied"
    assert "policy registries: not allowed" in e.value.message and REGISTRY in e.value.message
    with pytest.raises(ApiError):
        admin.call("GET", "/v1/workloads/evil")  # nothing was created
    admin.apply(spec("good"))

    # the requesting user is visible to policies; scale is checked too
    admin.call(
        "POST",
        "/v1/policies",
        policy("small", 'user.role == "admin" || object.replicas <= 3'),
    )
    dev_cfg, _ = issue_user(admin, "dana", "developer", tmp / "dana")
    dev = Client(ClientConfig.load(dev_cfg))
    dev.apply(spec("mine"))
    with pytest.raises(ApiError) as e:
        dev.call("POST", "/v1/workloads/mine/scale", {"replicas": 4})
    assert "policy small" in e.value.message
    admin.call("POST", "/v1/workloads/mine/scale", {"replicas": 4})  # admin may

    # dry-run mode: the write goes through, the warning is in a header and an event
    admin.call("POST", "/v1/policies", policy("labels", '"team" in object.labels', mode="dry-run"))
    resp = admin.open("POST", "/v1/workloads", spec("unlabelled"), content_type="application/json")
    resp.read()
    assert resp.status == 201
    assert "policy labels" in (resp.getheader("Cloudless-Warning") or "")

    # malformed CEL: 400 naming the expression's problem; nothing stored
    for bad, why in [
        ("object.image.startsWith(", "does not compile"),
        ('objekt.image == "x"', "unknown variable"),
    ]:
        with pytest.raises(ApiError) as e:
            admin.call("POST", "/v1/policies", policy("broken", bad))
        assert e.value.status == 400 and why in e.value.message
    names = {p["name"] for p in admin.call("GET", "/v1/policies")["policies"]}
    assert names == {"registries", "small", "labels"}

    # a denied write is audited with the policy's reason
    audit = admin.call("GET", "/v1/audit?tail=50")["entries"]
    assert any(not a["allowed"] and "policy registries" in a["reason"] for a in audit)
    admin.call("DELETE", "/v1/policies/registries")
    admin.apply(spec("evil", image="docker.io/evil"))


async def test_admission_policies(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _coord, admin, _agents, _start = cluster
    await asyncio.to_thread(_scenario, admin, tmp_path)
