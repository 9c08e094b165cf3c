"""Pure OCI helpers: references, platform choice, chain IDs, runtime-spec building."""

from __future__ import annotations

import pytest

from cloudless.lib.errors import ValidationError
from cloudless.runtime import BindMount, ContainerSpec
from cloudless.runtime.errors import ImageNotFound
from cloudless.runtime.oci.image import (
    MT_DOCKER_MANIFEST,
    MT_OCI_INDEX,
    MT_OCI_MANIFEST,
    ImageConfig,
    chain_ids,
    go_arch,
    media_type_of,
    pick_platform,
    sha256_digest,
)
from cloudless.runtime.oci.reference import parse_reference
from cloudless.runtime.oci.spec import (
    build_runtime_spec,
    merge_env,
    parse_user,
    resolve_args,
)

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("ref", "host", "path", "tag", "digest"),
    [
        ("busybox", "docker.io", "library/busybox", "latest", ""),
        ("user/app:2", "docker.io", "user/app", "2", ""),
        ("127.0.0.1:5000/busybox:1", "127.0.0.1:5000", "busybox", "1", ""),
        ("localhost/a/b", "localhost", "a/b", "latest", ""),
        (f"reg.io/a@{D}", "reg.io", "a", "", D),
        (f"reg.io:443/a:1@{D}", "reg.io:443", "a", "1", D),
    ],
)
def test_parse_reference(ref: str, host: str, path: str, tag: str, digest: str) -> None:
    r = parse_reference(ref)
    assert (r.host, r.path, r.tag, r.digest) == (host, path, tag, digest)
    assert r.object == (digest or tag)


@pytest.mark.parametrize("bad", ["", " busybox", "Busybox", "a@sha256:12", "a:b:c:d/e", "a:t!"])
def test_bad_references_say_what_is_wrong(bad: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_reference(bad)
    assert "image" in str(e.value)


def test_pick_platform_by_platform_not_position() -> None:
    index = {
        "manifests": [
            {"mediaType": MT_OCI_MANIFEST, "digest": "sha256:arm", "size": 1,
             "platform": {"os": "linux", "architecture": "arm64"}},
            {"mediaType": MT_OCI_MANIFEST, "digest": "sha256:amd", "size": 1,
             "platform": {"os": "linux", "architecture": "amd64"}},
        ]
    }  # fmt: skip
    assert pick_platform(index, "amd64").digest == "sha256:amd"
    assert pick_platform(index, "arm64").digest == "sha256:arm"
    with pytest.raises(ImageNotFound) as e:
        pick_platform(index, "riscv64", ref="x")
    assert "linux/amd64, linux/arm64" in str(e.value)


@pytest.mark.parametrize(
    ("doc", "header", "expected"),
    [
        ({"mediaType": MT_DOCKER_MANIFEST}, "", MT_DOCKER_MANIFEST),
        ({"manifests": []}, "", MT_OCI_INDEX),
        ({"config": {}, "layers": []}, "application/json", MT_OCI_MANIFEST),
        ({}, MT_OCI_INDEX + "; charset=utf-8", MT_OCI_INDEX),
    ],
)
def test_media_type_of(doc: dict[str, object], header: str, expected: str) -> None:
    assert media_type_of(doc, header) == expected


def test_chain_ids_follow_the_oci_formula() -> None:
    a, b = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    # chain[0] = diff[0]; chain[1] = sha256("<chain[0]> <diff[1]>")
    assert chain_ids([a, b]) == [a, sha256_digest(f"{a} {b}".encode())]
    assert chain_ids([]) == []


def test_go_arch() -> None:
    assert [go_arch(m) for m in ("x86_64", "aarch64", "riscv64")] == ["amd64", "arm64", "riscv64"]


IMG = ImageConfig(
    env=("PATH=/bin", "A=img"), entrypoint=("httpd",), cmd=("-f",), working_dir="/www"
)


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        ((), (), ["httpd", "-f"]),  # image Entrypoint + Cmd
        ((), ("-p", "80"), ["httpd", "-p", "80"]),  # args replace Cmd only
        (("sh", "-c"), ("echo hi",), ["sh", "-c", "echo hi"]),  # command drops the image's both
        (("sleep",), (), ["sleep"]),
    ],
)
def test_resolve_args_docker_rule(
    command: tuple[str, ...], args: tuple[str, ...], expected: list[str]
) -> None:
    spec = ContainerSpec(id="c", image="i", command=command, args=args)
    assert resolve_args(spec, IMG) == expected


def test_no_command_anywhere_is_refused() -> None:
    with pytest.raises(ValidationError) as e:
        resolve_args(ContainerSpec(id="c", image="i"), ImageConfig())
    assert "command" in str(e.value)


def test_env_merge_spec_wins_and_path_defaults() -> None:
    spec = ContainerSpec(id="c", image="i", env={"A": "spec", "B": "2"})
    assert merge_env(spec, IMG) == ["PATH=/bin", "A=spec", "B=2"]
    assert merge_env(ContainerSpec(id="c", image="i"), ImageConfig())[0].startswith("PATH=/usr")


@pytest.mark.parametrize(
    ("user", "ids"), [("", (0, 0)), ("root", (0, 0)), ("1000", (1000, 1000)), ("5:6", (5, 6))]
)
def test_parse_user(user: str, ids: tuple[int, int]) -> None:
    assert parse_user(user) == ids


def test_named_users_are_refused_with_a_fix() -> None:
    with pytest.raises(ValidationError) as e:
        parse_user("www-data")
    assert "numeric" in str(e.value)


def test_runtime_spec_limits_and_defaults() -> None:
    spec = ContainerSpec(id="web-1", image="i", cpu_millicores=250, memory_bytes=64 << 20)
    oci = build_runtime_spec(spec, IMG, cgroups_path="/cloudless/ns/web-1")
    res = oci["linux"]["resources"]
    # 250 millicores = a quarter core: 25_000 us of every 100_000 us; shares 250*1024/1000 = 256.
    assert res["cpu"] == {"quota": 25_000, "period": 100_000, "shares": 256}
    assert res["memory"] == {"limit": 64 << 20}
    assert oci["linux"]["cgroupsPath"] == "/cloudless/ns/web-1"
    assert oci["process"]["cwd"] == "/www"
    assert {m["destination"] for m in oci["mounts"]} >= {
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"
    }  # fmt: skip
    assert "network" not in {n["type"] for n in oci["linux"]["namespaces"]}  # host network
    assert "/proc/kcore" in oci["linux"]["maskedPaths"]
    assert "CAP_SYS_ADMIN" not in oci["process"]["capabilities"]["bounding"]
    unlimited = build_runtime_spec(ContainerSpec(id="c", image="i"), IMG, cgroups_path="/x")
    assert "cpu" not in unlimited["linux"]["resources"]
    assert "memory" not in unlimited["linux"]["resources"]


def test_runtime_spec_joins_the_given_network_namespace() -> None:
    spec = ContainerSpec(id="web-1", image="i", netns="/run/netns/cl-web-1")
    oci = build_runtime_spec(spec, IMG, cgroups_path="/x")
    assert {"type": "network", "path": "/run/netns/cl-web-1"} in oci["linux"]["namespaces"]


def test_bind_mounts_follow_the_spec() -> None:
    spec = ContainerSpec(
        id="db-0",
        image="i",
        mounts=(BindMount("/agent/volumes/db/db-0/data", "/data"), BindMount("/s", "/seed", True)),
    )
    oci = build_runtime_spec(spec, IMG, cgroups_path="/x")
    assert oci["mounts"][-2:] == [
        {"destination": "/data", "type": "bind", "source": "/agent/volumes/db/db-0/data",
         "options": ["rbind", "rw"]},
        {"destination": "/seed", "type": "bind", "source": "/s", "options": ["rbind", "ro"]},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("kw", "problem"),
    [
        ({"id": "Bad Id"}, "container id"),
        ({"id": "a" * 77}, "at most 76"),
        ({"image": ""}, "image: required"),
        ({"memory_bytes": 1000}, "below the minimum"),
        ({"cpu_millicores": -1}, "negative"),
        ({"working_dir": "rel"}, "absolute"),
        ({"env": {"A=B": "x"}}, "env"),
        ({"labels": {"io.cloudless.managed": "x"}}, "reserved"),
        ({"mounts": (BindMount("rel", "/data"),)}, "mounts[0]: source 'rel'"),
        ({"netns": "cl-web-0"}, "netns: 'cl-web-0' must be the absolute path"),
    ],
)
def test_spec_validation_names_the_field(kw: dict[str, object], problem: str) -> None:
    base: dict[str, object] = {"id": "ok", "image": "img"}
    base.update(kw)
    with pytest.raises(ValidationError) as e:
        ContainerSpec(**base).validate()  # type: ignore[arg-type]
    assert problem in str(e.value)


def test_foreign_platform_images_are_refused_with_the_fix() -> None:
    cfg = ImageConfig.from_json({"os": "linux", "architecture": "arm64"})
    cfg.check_platform("arm64", "r/a:1")  # matches: fine
    ImageConfig.from_json({}).check_platform("amd64", "r/a:1")  # unknown: give it a chance
    with pytest.raises(ImageNotFound) as e:
        cfg.check_platform("amd64", "r/a:1")
    assert "linux/arm64" in str(e.value) and "linux/amd64 variant" in str(e.value)
