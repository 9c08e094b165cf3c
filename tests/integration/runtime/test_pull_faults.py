"""Pull faults against real containerd: registry down, auth, TLS, corrupt blobs, indexes."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cloudless.devenv import PrivateRegistry, build_busybox_image, busybox_layer_gz
from cloudless.runtime import (
    ContainerSpec,
    ContainerState,
    DigestMismatch,
    ImageNotFound,
    ImageNotPulled,
    RegistryUnauthorized,
    RegistryUnavailable,
)
from cloudless.runtime.oci.distribution import RegistryConfig, RegistryHost
from tests.integration.runtime.conftest import Env
from tests.unit.runtime.fake_registry import FakeRegistry

pytestmark = pytest.mark.integration


async def run_to_exit(rt: object, cid: str, image: str, script: str) -> int:
    from cloudless.runtime.containerd import ContainerdRuntime

    assert isinstance(rt, ContainerdRuntime)
    exits = rt.exits()
    await rt.create_container(ContainerSpec(id=cid, image=image, command=("sh", "-c", script)))
    await rt.start_container(cid)
    async with asyncio.timeout(15):
        async for e in exits:
            if e.id == cid:
                return e.exit_code
    raise AssertionError("no exit")


async def test_missing_image_and_registry_down(env: Env) -> None:
    rt = env.runtime()
    with pytest.raises(ImageNotFound):
        await rt.pull_image(env.registry.ref("nope", "1"))
    info = await rt.pull_image(env.image)
    await env.registry.stop()
    # Already here: the pull answers from the local store, with the same digest.
    assert (await rt.pull_image(env.image)).digest == info.digest
    with pytest.raises(RegistryUnavailable) as e:
        await rt.pull_image(env.registry.ref("other", "1"))
    assert "unreachable" in str(e.value)


async def test_htpasswd_registry_needs_the_right_password(env: Env, tmp_path: Path) -> None:
    async with PrivateRegistry(root_dir=tmp_path / "authreg", users={"alice": "s3cret"}) as reg:
        ref = await build_busybox_image(reg, "private", "1")  # pushing uses the credentials
        host = reg.host
        for cfg in (
            RegistryConfig({host: RegistryHost(plain_http=True)}),
            RegistryConfig({host: RegistryHost(plain_http=True, username="alice", password="x")}),
        ):
            with pytest.raises(RegistryUnauthorized) as e:
                await env.runtime(registry=cfg).pull_image(ref)
            assert f"registry {host}" in str(e.value)
        rt = env.runtime(registry=reg.registry_config())
        await rt.pull_image(ref)
        assert await run_to_exit(rt, "authed", ref, "exit 0") == 0


def make_tls(d: Path) -> tuple[str, str, str]:
    """A CA and a server certificate for 127.0.0.1, as PEM files."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(1).not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = (d / "ca.pem", d / "cert.pem", d / "key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(paths[0]), str(paths[1]), str(paths[2])


async def test_https_registry_is_verified_against_its_ca(env: Env, tmp_path: Path) -> None:
    ca, cert, key = make_tls(tmp_path)
    async with PrivateRegistry(root_dir=tmp_path / "tlsreg", tls=(cert, key), ca_file=ca) as reg:
        ref = await build_busybox_image(reg, "secure", "1")
        with pytest.raises(RegistryUnavailable) as e:
            await env.runtime(registry=RegistryConfig()).pull_image(ref)
        assert "not trusted" in str(e.value)
        rt = env.runtime(registry=reg.registry_config())
        info = await rt.pull_image(ref)
        assert info.digest.startswith("sha256:")


@pytest.mark.parametrize("docker", [False, True], ids=["oci", "docker-schema2"])
async def test_index_picks_this_platform_and_runs(env: Env, docker: bool) -> None:
    ref = await build_busybox_image(env.registry, "multi", "1", as_index=True, docker=docker)
    rt = env.runtime()
    await rt.pull_image(ref)
    assert await run_to_exit(rt, "multi", ref, "exit 4") == 4
    plain = await build_busybox_image(env.registry, "plain", "1", docker=docker)
    await rt.pull_image(plain)
    assert await run_to_exit(rt, "plain", plain, "exit 5") == 5


async def test_corrupt_layer_is_refused_and_nothing_is_registered(env: Env) -> None:
    fake = FakeRegistry()
    await fake.start()
    try:
        layer, diff_id = busybox_layer_gz()
        fake.add_image("bb", "1", layer, diff_id)
        fake.corrupt.add("sha256:" + hashlib.sha256(layer).hexdigest())
        rt = env.runtime(registry=RegistryConfig({fake.host: RegistryHost(plain_http=True)}))
        ref = f"{fake.host}/bb:1"
        with pytest.raises(DigestMismatch) as e:
            await rt.pull_image(ref)
        assert "corrupting" in str(e.value)
        with pytest.raises(ImageNotPulled):
            await rt.create_container(ContainerSpec(id="x", image=ref))
        assert "bb:1" not in await env.ctr("images", "ls", "-q")
    finally:
        await fake.stop()


async def test_bearer_token_registry_and_shared_concurrent_pulls(env: Env) -> None:
    fake = FakeRegistry(auth="bearer")
    await fake.start()
    try:
        layer, diff_id = busybox_layer_gz()
        fake.add_image("bb", "1", layer, diff_id)
        cfg = RegistryConfig(
            {fake.host: RegistryHost(plain_http=True, username="alice", password="s3cret")}
        )
        rt = env.runtime(registry=cfg)
        ref = f"{fake.host}/bb:1"
        a, b = await asyncio.gather(rt.pull_image(ref), rt.pull_image(ref))
        assert a == b
        layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
        assert fake.hits[f"blob:{layer_digest}"] == 1  # two pulls, one download
        assert fake.hits["token"] >= 1
        assert await run_to_exit(rt, "bearer", ref, "exit 0") == 0
        st = await rt.get_container("bearer")
        assert st.state is ContainerState.EXITED
    finally:
        await fake.stop()


async def test_two_images_sharing_a_layer_download_it_once(env: Env) -> None:
    fake = FakeRegistry()
    await fake.start()
    try:
        layer, diff_id = busybox_layer_gz()
        fake.add_image("one", "1", layer, diff_id)
        fake.add_image("two", "1", layer, diff_id)
        rt = env.runtime(registry=RegistryConfig({fake.host: RegistryHost(plain_http=True)}))
        await asyncio.gather(
            rt.pull_image(f"{fake.host}/one:1"), rt.pull_image(f"{fake.host}/two:1")
        )
        layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
        assert fake.hits[f"blob:{layer_digest}"] == 1
        assert await run_to_exit(rt, "two", f"{fake.host}/two:1", "exit 0") == 0
    finally:
        await fake.stop()


async def test_docker_registry_with_token_auth(env: Env, tmp_path: Path) -> None:
    users = {"alice": "s3cret"}
    async with PrivateRegistry(root_dir=tmp_path / "tokreg", users=users, token_auth=True) as reg:
        ref = await build_busybox_image(reg, "tokened", "1")
        wrong = RegistryConfig(
            {reg.host: RegistryHost(plain_http=True, username="alice", password="nope")}
        )
        with pytest.raises(RegistryUnauthorized) as e:
            await env.runtime(registry=wrong).pull_image(ref)
        assert "refused the credentials" in str(e.value)
        rt = env.runtime(registry=reg.registry_config())
        await rt.pull_image(ref)
        assert reg.token_server is not None and reg.token_server.issued >= 2  # push + pull
        assert await run_to_exit(rt, "tokened", ref, "exit 0") == 0
