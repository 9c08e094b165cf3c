"""Users and roles against a live coordinator (in-memory store, real mTLS HTTPS): each
built-in role's writes allowed or refused with a 403 naming role, verb, resource and
namespace; every write audited; a revoked user refused on its very next request."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path
from typing import Any

import pytest

from cloudless.cli.client import ApiError, Client, ClientConfig
from cloudless.cli.users import issue_user
from cloudless.lib.errors import CloudlessError
from cloudless.security.ca import CertificateAuthority
from cloudless.security.identity import CertKind, SpiffeId
from cloudless.security.keys import make_csr, new_private_key

SPEC = "name: {name}\nimage: busybox\nnamespace: {ns}\nresources: {{cpu: 10m, memory: 1Mi}}\n"


def spec(name: str, ns: str = "default") -> bytes:
    return SPEC.format(name=name, ns=ns).encode()


def user(admin: Client, tmp: Path, name: str, role: str, **kw: Any) -> Client:
    path, _ = issue_user(admin, name, role, tmp / "users" / name, **kw)
    return Client(ClientConfig.load(path))


def refused(call: Any, *args: Any) -> ApiError:
    with pytest.raises(ApiError) as e:
        call(*args)
    assert e.value.status == 403, e.value
    return e.value


def _scenario(admin: Client, tmp: Path) -> None:
    dev = user(admin, tmp, "dana", "developer", namespaces=["web"])
    view = user(admin, tmp, "vic", "viewer")
    op = user(admin, tmp, "otto", "operator")
    assert dev.call("GET", "/v1/users/whoami")["role"] == "developer"

    # developer: workloads in its namespace only
    dev.apply(spec("shop", "web"))
    e = refused(dev.apply, spec("intruder", "default"))
    assert e.code == "forbidden"
    for word in ("dana", "developer", "create", "workloads", "namespace default"):
        assert word in e.message, (word, e.message)
    admin.apply(spec("billing", "default"))
    refused(dev.call, "POST", "/v1/workloads/billing/scale", {"replicas": 3})
    refused(dev.apply, spec("billing", "web"))  # moving another namespace's workload
    assert admin.workload("billing")["spec"]["namespace"] == "default"  # nothing changed
    dev.call("POST", "/v1/workloads/shop/scale", {"replicas": 2})
    refused(dev.call, "GET", "/v1/workloads")  # every namespace: not its to list
    names = [w["name"] for w in dev.call("GET", "/v1/workloads?namespace=web")["workloads"]]
    assert names == ["shop"]
    refused(dev.create_token)

    # viewer reads, never writes
    assert {w["name"] for w in view.call("GET", "/v1/workloads")["workloads"]} == {
        "shop",
        "billing",
    }
    e = refused(view.call, "DELETE", "/v1/workloads/shop")
    assert "role viewer grants no 'delete' on 'workloads'" in e.message

    # operator: workloads anywhere, no users
    op.call("POST", "/v1/workloads/billing/scale", {"replicas": 0})
    refused(op.call, "GET", "/v1/users")

    # custom role: unknown verbs refused, nothing stored
    with pytest.raises(ApiError) as bad:
        admin.call(
            "POST",
            "/v1/roles",
            {"name": "x", "rules": [{"verbs": ["launch"], "resources": ["workloads"]}]},
        )
    assert bad.value.status == 400 and "launch" in bad.value.message
    assert "x" not in [r["name"] for r in admin.call("GET", "/v1/roles")["roles"]]
    admin.call(
        "POST",
        "/v1/roles",
        {
            "name": "scaler",
            "rules": [
                {"verbs": ["get", "update"], "resources": ["workloads"], "namespaces": ["default"]}
            ],
        },
    )
    sc = user(admin, tmp, "sam", "scaler")
    sc.call("POST", "/v1/workloads/billing/scale", {"replicas": 1})
    refused(sc.call, "POST", "/v1/workloads/shop/scale", {"replicas": 1})

    # the audit log has allowed and denied writes with who and what
    entries = admin.call("GET", "/v1/audit?tail=100")["entries"]
    denied = [x for x in entries if not x["allowed"]]
    assert any(x["user"].endswith("/user/dana") and x["name"] == "intruder" for x in denied)
    ok = [x for x in entries if x["allowed"] and x["verb"] == "update" and x["name"] == "shop"]
    assert ok and ok[0]["status"] == 200 and ok[0]["role"] == "developer"
    refused(view.call, "GET", "/v1/audit")

    # revoking takes effect at once
    admin.call("DELETE", "/v1/users/dana")
    with pytest.raises(ApiError) as gone:
        dev.call("GET", "/v1/workloads?namespace=web")
    assert gone.value.status == 403 and gone.value.code == "certificate_revoked"
    with pytest.raises(ApiError) as dup:
        issue_user(admin, "vic", "viewer", tmp / "again")
    assert dup.value.status == 409

    # a followed stream ends the moment its user is revoked, not at its next request
    ended = threading.Event()

    def follow() -> None:
        with contextlib.suppress(Exception):
            for _ in view.stream("/v1/events?follow=1&tail=1"):
                pass
        ended.set()

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    assert not ended.wait(1.0)  # streaming
    admin.call("DELETE", "/v1/users/vic")
    assert ended.wait(5.0), "the revoked user's stream is still open"
    t.join(5)


async def test_roles_audit_and_revocation(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _coord, admin, _agents, _start = cluster
    await asyncio.to_thread(_scenario, admin, tmp_path)


def _bad_input(admin: Client, tmp: Path, foreign: CertificateAuthority) -> None:
    key = new_private_key()
    csr = make_csr(key, SpiffeId.user("eve")).decode()
    good = {"name": "eve", "role": "viewer", "csr_pem": csr}
    # (body, status, fragment) -- each refused, naming the field
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({**good, "name": "Eve!"}, 400, "name:"),
        ({**good, "name": "admin"}, 400, "reserved"),
        ({**good, "role": "root"}, 400, "role: 'root' does not exist"),
        ({**good, "namespaces": ["Not A Label"]}, 400, "not a namespace name"),
        ({**good, "csr_pem": "hello"}, 400, "csr_pem: required"),
        ({**good, "ttl_seconds": -5}, 400, "ttl_seconds"),
        # a CSR for another identity: the CA refuses to certify eve's name on it
        ({**good, "name": "mallory"}, 400, "identity_mismatch"),
    ]
    for body, status, fragment in cases:
        with pytest.raises(ApiError) as e:
            admin.call("POST", "/v1/users", body)
        assert e.value.status == status, (body, e.value)
        assert fragment in e.value.message or fragment == e.value.code, (fragment, e.value)
    assert admin.call("GET", "/v1/users")["users"] == []  # nothing was created

    # a user certificate from another cluster's CA, even one naming admin: refused at TLS
    key_pem, cert_pem = foreign.issue(SpiffeId.user("admin"), CertKind.USER)
    d = tmp / "foreign"
    d.mkdir()
    (d / "k.pem").write_bytes(key_pem)
    (d / "c.pem").write_bytes(cert_pem)
    (d / "ca.pem").write_text(admin.call("GET", "/v1/ca")["ca_bundle_pem"])
    c = Client(ClientConfig([admin.config.servers[0]], d / "ca.pem", d / "c.pem", d / "k.pem"))
    with pytest.raises((ApiError, CloudlessError)) as e:
        c.call("POST", "/v1/tokens", {})
    assert "no coordinator answered" in str(e.value)  # the handshake itself fails
    assert admin.call("GET", "/v1/tokens")["tokens"] == []  # nothing was created


async def test_bad_user_input_and_foreign_certificates(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    coord, admin, _agents, _start = cluster
    foreign = CertificateAuthority.init(tmp_path / "evil-ca", root_key_size=2048)
    await asyncio.to_thread(_bad_input, admin, tmp_path, foreign)
    # one of our certificates for a user that was never created: refused, naming the fix
    key, cert = coord.ca.issue(SpiffeId.user("ghost", coord.ca.trust_domain), CertKind.USER)
    d = tmp_path / "ghost"
    d.mkdir()
    (d / "k.pem").write_bytes(key)
    (d / "c.pem").write_bytes(cert)
    (d / "ca.pem").write_bytes(coord.ca.bundle_pem)
    ghost = Client(ClientConfig([admin.config.servers[0]], d / "ca.pem", d / "c.pem", d / "k.pem"))
    with pytest.raises(ApiError) as e:
        await asyncio.to_thread(ghost.call, "GET", "/v1/nodes")
    assert e.value.status == 403 and "cloudless user create ghost" in e.value.message
