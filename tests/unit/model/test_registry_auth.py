"""Registry secrets (docker config.json shape) and ``image_pull_secret`` in a spec: tables of
good and bad values, every bad one named by its field and never echoing a password."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from cloudless.agent.assignment import Assigned, pull_auth
from cloudless.lib.errors import CloudlessError, ValidationError
from cloudless.model.registry_auth import (
    auth_for,
    normalize_host,
    parse_registry_secret,
    registry_secret,
)
from cloudless.model.workload import parse_workload
from cloudless.model.workload_codec import workload_to_dict
from cloudless.runtime.types import RegistryAuth


@pytest.mark.parametrize(
    ("key", "host"),
    [
        ("reg.example:5000", "reg.example:5000"),
        ("https://Reg.Example:5000/v1/", "reg.example:5000"),
        ("https://index.docker.io/v1/", "docker.io"),  # what `docker login` writes for Hub
        ("registry-1.docker.io", "docker.io"),
        ("ghcr.io", "ghcr.io"),
    ],
)
def test_hosts_are_normalized(key: str, host: str) -> None:
    assert normalize_host(key) == host


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


GOOD: list[tuple[bytes, str, RegistryAuth | None]] = [
    (registry_secret("127.0.0.1:5000", "deploy", "pw"), "127.0.0.1:5000",
     RegistryAuth("deploy", "pw")),
    (b'{"auths": {"r:1": {"auth": "' + b64("u:p:with:colons").encode() + b'"}}}', "r:1",
     RegistryAuth("u", "p:with:colons")),  # the password is everything after the first colon
    (b'{"auths": {"https://index.docker.io/v1/": {"username": "u", "password": ""}}}',
     "docker.io", RegistryAuth("u", "")),
    (registry_secret("a:1", "u", "p"), "b:1", None),  # no entry for that registry
]  # fmt: skip


@pytest.mark.parametrize(("value", "host", "auth"), GOOD)
def test_credentials_for_a_host(value: bytes, host: str, auth: RegistryAuth | None) -> None:
    assert auth_for(value, host) == auth


BAD: list[tuple[bytes, str]] = [
    (b"hunter2", "data: a registry secret is JSON"),
    (b"[]", 'data: a registry secret needs "auths"'),
    (b'{"auths": {}}', 'needs "auths" with at least one registry'),
    (b'{"auths": {"r:1": "hunter2"}}', "data: auths.r:1 must be an object"),
    (b'{"auths": {"r:1": {"password": "hunter2"}}}', "data: auths.r:1 needs a username"),
    (b'{"auths": {"r:1": {"auth": "%%%hunter2"}}}', "data: auths.r:1.auth is not base64"),
]


@pytest.mark.parametrize(("value", "why"), BAD)
def test_bad_registry_secrets_are_named(value: bytes, why: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_registry_secret(value)
    assert why in e.value.message
    assert "hunter2" not in e.value.message


def spec(**extra: Any) -> dict[str, Any]:
    return {"name": "web", "image": "reg.example:5000/team/web:1", **extra}


def test_image_pull_secret_parses_and_round_trips() -> None:
    s = parse_workload(spec(image_pull_secret="regcred"))
    assert s.image_pull_secret == "regcred"
    assert s.secret_names() == {"regcred"}
    assert parse_workload(workload_to_dict(s)) == s
    assert "image_pull_secret" not in workload_to_dict(parse_workload(spec()))


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("RegCred", "spec.image_pull_secret: 'RegCred' is not a secret name"),
        (["regcred"], "spec.image_pull_secret: a list of 1 items is not a string"),
    ],
)
def test_bad_image_pull_secret(value: Any, why: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_workload(spec(image_pull_secret=value))
    assert any(why in p for p in e.value.problems), e.value.problems


def assigned(secrets: dict[str, bytes], pull_secret: str = "regcred") -> Assigned:
    s = parse_workload(spec(image_pull_secret=pull_secret) if pull_secret else spec())
    return Assigned("web-0", "web", 1, s, secrets=secrets)


def test_pull_auth_takes_the_entry_for_the_image_registry() -> None:
    value = registry_secret("reg.example:5000", "deploy", "pw")
    assert pull_auth(assigned({"regcred": value})) == RegistryAuth("deploy", "pw")
    assert pull_auth(assigned({}, pull_secret="")) is None


@pytest.mark.parametrize(
    ("secrets", "why"),
    [
        ({}, "image_pull_secret 'regcred': the coordinator sent no value"),
        (
            {"regcred": registry_secret("ghcr.io", "u", "hunter2")},
            "image_pull_secret 'regcred' holds no credentials for reg.example:5000",
        ),
        ({"regcred": b"hunter2"}, "image_pull_secret 'regcred': data: a registry secret is JSON"),
    ],
)
def test_pull_auth_failures_name_the_secret(secrets: dict[str, bytes], why: str) -> None:
    with pytest.raises(CloudlessError) as e:
        pull_auth(assigned(secrets))
    assert why in e.value.message and "hunter2" not in e.value.message


def test_repr_hides_the_password() -> None:
    assert "hunter2" not in repr(RegistryAuth("u", "hunter2"))
