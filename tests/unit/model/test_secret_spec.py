"""``secrets:`` in a workload spec: references only, every bad one named by its path."""

from typing import Any

import pytest

from cloudless.lib.errors import ValidationError
from cloudless.model.secrets import SecretRef
from cloudless.model.workload import parse_workload
from cloudless.model.workload_codec import workload_to_dict


def spec(secrets: Any) -> dict[str, Any]:
    return {"name": "web", "image": "r/web:1", "secrets": secrets}


def test_parses_and_round_trips() -> None:
    s = parse_workload(
        spec([{"name": "db-pass", "path": "/run/secrets/db"}, {"name": "db-pass", "env": "PW"}])
    )
    assert s.secrets == (
        SecretRef("db-pass", path="/run/secrets/db"),
        SecretRef("db-pass", env="PW"),
    )
    assert parse_workload(workload_to_dict(s)) == s
    assert "secrets" not in workload_to_dict(parse_workload(spec(None)))


BAD: list[tuple[Any, str]] = [
    ("db-pass", "spec.secrets: expected a list"),
    (["db-pass"], "spec.secrets[0]: expected a mapping"),
    ([{"name": "db-pass"}], "spec.secrets[0]: needs exactly one of path (a file) or env"),
    ([{"name": "x", "path": "/a", "env": "A"}], "needs exactly one of path"),
    ([{"name": "DB", "env": "A"}], "spec.secrets[0].name: 'DB' must be"),
    ([{"name": "x", "env": "1A"}], "spec.secrets[0].env: '1A' is not an environment variable"),
    ([{"name": "x", "env": "A=B"}], "is not an environment variable name"),
    ([{"name": "x", "path": "rel"}], "spec.secrets[0].path: 'rel' must be an absolute path"),
    ([{"name": "x", "path": "/etc"}], "'/etc' is a system path"),
    ([{"name": "x", "path": "/a/../../b"}], "leaves the container's root"),
    ([{"name": "x", "env": "A", "value": "hunter2"}], "spec.secrets[0].value: unknown field"),
    (
        [{"name": "x", "env": "A"}, {"name": "y", "env": "A"}],
        "spec.secrets[1]: env 'A' is already used by spec.secrets[0]",
    ),
    ([{"name": f"s{i}", "env": f"A{i}"} for i in range(33)], "33 secrets, at most 32"),
]


@pytest.mark.parametrize("secret_path", ["/data", "/data/pass", "/data/x/y"])
def test_a_secret_file_may_not_sit_in_a_volume(secret_path: str) -> None:
    doc = {
        **spec([{"name": "x", "path": secret_path}]),
        "volumes": [{"name": "data", "mount_path": "/data"}],
    }
    with pytest.raises(ValidationError) as e:
        parse_workload(doc)
    assert e.value.problems == [
        f"spec.secrets[0].path: {secret_path!r} is inside volume 'data' (mounted at /data); "
        "put secret files outside volumes, e.g. /run/secrets"
    ]
    doc["secrets"] = [{"name": "x", "path": "/database"}]  # a sibling, not inside: fine
    parse_workload(doc)


@pytest.mark.parametrize(("secrets", "problem"), BAD)
def test_bad_input_names_the_field(secrets: Any, problem: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_workload(spec(secrets))
    assert any(problem in p for p in e.value.problems), e.value.problems


def test_configs_parse_round_trip_and_may_not_take_a_secrets_place() -> None:
    s = parse_workload({**spec([{"name": "pw", "env": "PW"}]), "configs": [
        {"name": "web-conf", "path": "/etc/web.conf"}, {"name": "level", "env": "LOG_LEVEL"},
    ]})  # fmt: skip
    assert s.configs == (
        SecretRef("web-conf", path="/etc/web.conf"),
        SecretRef("level", env="LOG_LEVEL"),
    )
    # value keys: configs have a name space of their own
    assert s.secret_names() == {"pw", "config/web-conf", "config/level"}
    assert parse_workload(workload_to_dict(s)) == s
    # a secret and a config of one name, in one workload: two values, two files
    both = parse_workload({**spec([{"name": "app", "path": "/run/secrets/app"}]), "configs": [
        {"name": "app", "path": "/etc/app.conf"},
    ]})  # fmt: skip
    assert both.secret_names() == {"app", "config/app"}
    with pytest.raises(ValidationError) as e:
        parse_workload(
            {**spec([{"name": "pw", "env": "PW"}]), "configs": [{"name": "c", "env": "PW"}]}
        )
    assert e.value.problems == ["spec.configs[0]: env 'PW' is already used by spec.secrets[0]"]
    with pytest.raises(ValidationError) as e:
        parse_workload({**spec(None), "configs": [{"name": "c", "path": "/etc"}]})
    assert "spec.configs[0].path: '/etc' is a system path" in e.value.problems[0]
