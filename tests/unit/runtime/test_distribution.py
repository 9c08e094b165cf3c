"""The registry client against an in-process registry: auth flows, digests, HTTP framing."""

from __future__ import annotations

import pytest

from cloudless.runtime.errors import (
    DigestMismatch,
    ImageNotFound,
    RegistryUnauthorized,
    RegistryUnavailable,
)
from cloudless.runtime.oci.distribution import (
    DistributionClient,
    RegistryConfig,
    RegistryHost,
    parse_challenge,
)
from cloudless.runtime.oci.reference import parse_reference
from cloudless.runtime.types import RegistryAuth
from tests.unit.runtime.conftest import tiny_layer
from tests.unit.runtime.fake_registry import FakeRegistry, digest_of


def client_for(reg: FakeRegistry, user: str = "", password: str = "") -> DistributionClient:
    host = RegistryHost(plain_http=True, username=user, password=password)
    return DistributionClient(RegistryConfig({reg.host: host}))


@pytest.mark.parametrize(
    ("header", "scheme", "params"),
    [
        ('Basic realm="r"', "basic", {"realm": "r"}),
        (
            'Bearer realm="https://auth/token",service="reg",scope="repository:a/b:pull"',
            "bearer",
            {"realm": "https://auth/token", "service": "reg", "scope": "repository:a/b:pull"},
        ),
    ],
)
def test_parse_challenge(header: str, scheme: str, params: dict[str, str]) -> None:
    assert parse_challenge(header) == (scheme, params)


@pytest.mark.parametrize("auth", ["", "basic", "bearer"])
@pytest.mark.parametrize("chunked", [False, True])
async def test_manifest_and_blob_with_each_auth_scheme(
    fake_registry: FakeRegistry, auth: str, chunked: bool
) -> None:
    fake_registry.auth, fake_registry.chunked = auth, chunked
    layer, _ = tiny_layer()
    mdigest = fake_registry.add_image("app", "1", layer, "sha256:" + "1" * 64)
    ref = parse_reference(f"{fake_registry.host}/app:1")
    client = client_for(fake_registry, "alice", "s3cret")
    try:
        data, _, digest = await client.get_manifest(ref, "1")
        assert digest == mdigest == digest_of(data)
        assert await client.get_blob(ref, digest_of(layer)) == layer
        # The bearer token is fetched once and reused for the blob: 1 token request.
        assert fake_registry.hits["token"] == (1 if auth == "bearer" else 0)
    finally:
        await client.aclose()


@pytest.mark.parametrize("auth", ["basic", "bearer"])
async def test_wrong_or_missing_credentials_are_unauthorized(
    fake_registry: FakeRegistry, auth: str
) -> None:
    fake_registry.auth = auth
    fake_registry.add_image("app", "1", tiny_layer()[0], "sha256:" + "1" * 64)
    ref = parse_reference(f"{fake_registry.host}/app:1")
    for user, password in (("", ""), ("alice", "wrong")):
        client = client_for(fake_registry, user, password)
        with pytest.raises(RegistryUnauthorized) as e:
            await client.get_manifest(ref, "1")
        assert fake_registry.host in str(e.value)
        await client.aclose()


async def test_corrupted_blob_is_a_digest_mismatch(fake_registry: FakeRegistry) -> None:
    layer, _ = tiny_layer()
    fake_registry.add_image("app", "1", layer, "sha256:" + "1" * 64)
    fake_registry.corrupt.add(digest_of(layer))
    client = client_for(fake_registry)
    with pytest.raises(DigestMismatch) as e:
        await client.get_blob(parse_reference(f"{fake_registry.host}/app:1"), digest_of(layer))
    assert digest_of(layer) in str(e.value)
    await client.aclose()


async def test_redirected_blob_does_not_leak_credentials(fake_registry: FakeRegistry) -> None:
    fake_registry.auth, fake_registry.redirect_blobs = "basic", True
    layer, _ = tiny_layer()
    fake_registry.add_image("app", "1", layer, "sha256:" + "1" * 64)
    client = client_for(fake_registry, "alice", "s3cret")
    ref = parse_reference(f"{fake_registry.host}/app:1")
    # The blob redirects to another host, whose endpoint answers 400 to any Authorization
    # header: getting the bytes proves the credentials were not forwarded.
    assert await client.get_blob(ref, digest_of(layer)) == layer
    await client.aclose()


async def test_missing_image_and_unreachable_registry(fake_registry: FakeRegistry) -> None:
    client = client_for(fake_registry)
    with pytest.raises(ImageNotFound) as e:
        await client.get_manifest(parse_reference(f"{fake_registry.host}/nope:1"), "1")
    assert "not found" in str(e.value)
    await client.aclose()
    dead = DistributionClient(RegistryConfig({"127.0.0.1:1": RegistryHost(plain_http=True)}))
    with pytest.raises(RegistryUnavailable) as e2:
        await dead.get_manifest(parse_reference("127.0.0.1:1/app:1"), "1")
    assert "unreachable" in str(e2.value)
    await dead.aclose()


@pytest.mark.parametrize("auth", ["basic", "bearer"])
async def test_per_pull_credentials_do_not_lend_their_token(
    fake_registry: FakeRegistry, auth: str
) -> None:
    """A pull with a workload's credentials (``with_auth``) shares the connections and the
    token cache, keyed by credentials: an anonymous request afterwards is still refused."""
    fake_registry.auth = auth
    fake_registry.add_image("app", "1", tiny_layer()[0], "sha256:" + "1" * 64)
    ref = parse_reference(f"{fake_registry.host}/app:1")
    base = client_for(fake_registry)
    try:
        authed = base.with_auth(ref.host, RegistryAuth("alice", "s3cret"))
        await authed.get_manifest(ref, "1")
        assert authed.config.for_host(ref.host).plain_http  # transport settings kept
        with pytest.raises(RegistryUnauthorized) as e:
            await base.get_manifest(ref, "1")
        assert "image_pull_secret" in str(e.value)
        with pytest.raises(RegistryUnauthorized) as e:
            await base.with_auth(ref.host, RegistryAuth("alice", "nope")).get_manifest(ref, "1")
        assert fake_registry.host in str(e.value)
        assert "'alice'" in str(e.value) and "nope" not in str(e.value)
        # The right credentials again: the cached token is reused (bearer: one token call).
        await base.with_auth(ref.host, RegistryAuth("alice", "s3cret")).get_manifest(ref, "1")
        if auth == "bearer":
            # alice, anonymous, the wrong password: 3 token calls; alice's token was reused
            assert fake_registry.hits["token"] == 3
    finally:
        await base.aclose()
