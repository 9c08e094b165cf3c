"""The OCI distribution API (a registry) as a client: manifests, blobs, push, and auth.

Auth follows the registry's lead: on ``401`` the ``WWW-Authenticate`` challenge says either
``Basic`` (send the configured credentials) or ``Bearer realm=…,service=…,scope=…`` (fetch a
token from the realm, with credentials if configured, cache it per scope, retry). Every error
is typed: unreachable -> ``RegistryUnavailable``, 401/403 -> ``RegistryUnauthorized``, missing
manifest -> ``ImageNotFound``, bad bytes -> ``DigestMismatch``.

Credentials come from the host's ``RegistryHost`` (set per agent) or, for one pull, from
``with_auth`` (a workload's ``image_pull_secret``). Cached tokens are keyed by host, scope and
a fingerprint of the credentials that earned them, so a pull never rides on a token obtained
with another workload's credentials (or with none).
"""

from __future__ import annotations

import base64
import json
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlencode, urljoin

from cloudless.runtime.errors import (
    DigestMismatch,
    ImageNotFound,
    RegistryUnauthorized,
    RegistryUnavailable,
    RuntimeFailure,
)
from cloudless.runtime.oci.http import HttpClient, HttpError, Response
from cloudless.runtime.oci.image import MANIFEST_ACCEPT, sha256_digest
from cloudless.runtime.oci.reference import Reference
from cloudless.runtime.types import RegistryAuth


@dataclass(frozen=True)
class RegistryHost:
    """How to reach one registry host (``"127.0.0.1:5000"``)."""

    plain_http: bool = False
    ca_file: str | None = None
    username: str = ""
    password: str = ""


@dataclass(frozen=True)
class RegistryConfig:
    """Per-host settings; hosts not listed use HTTPS with the system CAs and no credentials."""

    hosts: Mapping[str, RegistryHost] = field(default_factory=dict)

    def for_host(self, host: str) -> RegistryHost:
        return self.hosts.get(host) or RegistryHost()

    def ssl_contexts(self) -> dict[str, ssl.SSLContext]:
        out = {}
        for host, h in self.hosts.items():
            if h.ca_file:
                out[host] = ssl.create_default_context(cafile=h.ca_file)
        return out


_CHALLENGE_RE = re.compile(r'(\w+)="([^"]*)"')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``'Bearer realm="https://a/token",service="r"'`` -> ``("bearer", {"realm": …})``."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_RE.findall(rest))


class DistributionClient:
    def __init__(
        self,
        config: RegistryConfig | None = None,
        http: HttpClient | None = None,
        *,
        auth_cache: dict[tuple[str, str, str], str] | None = None,
    ):
        self.config = config or RegistryConfig()
        self.http = http or HttpClient(ssl_contexts=self.config.ssl_contexts())
        # (host, scope, credentials fingerprint) -> Authorization value
        self._auth: dict[tuple[str, str, str], str] = {} if auth_cache is None else auth_cache

    def with_auth(self, host: str, auth: RegistryAuth) -> DistributionClient:
        """A client using ``auth`` for ``host`` (keeping the host's transport settings), sharing
        this one's connections and token cache."""
        h = replace(self.config.for_host(host), username=auth.username, password=auth.password)
        config = RegistryConfig({**self.config.hosts, host: h})
        return DistributionClient(config, self.http, auth_cache=self._auth)

    def _fingerprint(self, host: str) -> str:
        h = self.config.for_host(host)
        return RegistryAuth(h.username, h.password).fingerprint() if h.username else ""

    def _base(self, ref: Reference) -> str:
        scheme = "http" if self.config.for_host(ref.host).plain_http else "https"
        return f"{scheme}://{ref.api_host}/v2/{ref.path}"

    async def request(
        self,
        ref: Reference,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        push: bool = False,
    ) -> Response:
        """Send with auth (answering one challenge) and redirects; errors are typed."""
        scope = f"repository:{ref.path}:{'pull,push' if push else 'pull'}"
        key = (ref.host, scope, self._fingerprint(ref.host))
        answered = False
        for _ in range(6):
            hdrs = dict(headers or {})
            if key in self._auth:
                hdrs["Authorization"] = self._auth[key]
            resp = await self._send(ref, method, url, hdrs, body)
            if resp.status == 401 and not answered and key[0]:
                # First challenge of this request (or a cached token went stale / lacks scope).
                answered = True
                await resp.read()
                self._auth[key] = await self._answer(ref, resp.header("www-authenticate"), scope)
                continue
            if resp.status in (401, 403):
                await resp.read()
                self._auth.pop(key, None)
                raise RegistryUnauthorized(
                    f"registry {ref.host} refused access to {ref.path} (HTTP {resp.status}); "
                    f"{self._whose(ref.host)}"
                )
            if resp.status in (301, 302, 303, 307, 308) and resp.header("location"):
                await resp.read()
                url = urljoin(url, resp.header("location"))
                if not url.startswith(self._base(ref).split("/v2/")[0]):
                    key = ("", "", "")  # never send our credentials to another host
                continue
            return resp
        raise RuntimeFailure(f"registry {ref.host}: too many redirects or auth rounds for {url}")

    async def _send(
        self, ref: Reference, method: str, url: str, headers: dict[str, str], body: bytes | None
    ) -> Response:
        try:
            return await self.http.request(method, url, headers, body)
        except HttpError as e:
            raise RegistryUnavailable(
                f"registry {ref.host} is unreachable ({e}); check that it is running and that "
                "the node can reach it"
            ) from e

    def _whose(self, host: str) -> str:
        user = self.config.for_host(host).username
        if not user:
            return "no credentials were given: set the workload's image_pull_secret"
        return f"check the password of user {user!r} for this registry"

    async def _answer(self, ref: Reference, challenge: str, scope: str) -> str:
        h = self.config.for_host(ref.host)
        scheme, params = parse_challenge(challenge)
        basic = ""
        if h.username:
            basic = "Basic " + base64.b64encode(f"{h.username}:{h.password}".encode()).decode()
        if scheme == "basic":
            if not basic:
                raise RegistryUnauthorized(
                    f"registry {ref.host} requires a username and password; set the "
                    "workload's image_pull_secret (cloudless secret create NAME --type registry)"
                )
            return basic
        if scheme != "bearer" or "realm" not in params:
            raise RegistryUnauthorized(
                f"registry {ref.host}: unsupported auth challenge {challenge!r}"
            )
        # Ask for the challenge's scope and ours (a HEAD before a push is challenged for pull
        # only, but the token will be reused for the push).
        scopes = list(dict.fromkeys([params.get("scope", scope), scope]))
        query = [("scope", s) for s in scopes]
        if "service" in params:
            query.append(("service", params["service"]))
        token_url = f"{params['realm']}?{urlencode(query)}"
        try:
            resp = await self.http.request(
                "GET", token_url, {"Authorization": basic} if basic else {}
            )
        except HttpError as e:
            raise RegistryUnavailable(f"token service of {ref.host} unreachable: {e}") from e
        data = await resp.read()
        if resp.status in (401, 403):
            raise RegistryUnauthorized(
                f"token service for {ref.host} refused the credentials (HTTP {resp.status}); "
                f"{self._whose(ref.host)}"
            )
        if resp.status != 200:
            raise RegistryUnavailable(f"token service for {ref.host} answered HTTP {resp.status}")
        try:
            doc = json.loads(data)
            token = doc.get("token") or doc["access_token"]
        except (ValueError, KeyError, AttributeError) as e:
            raise RegistryUnavailable(f"token service for {ref.host} sent no token") from e
        return f"Bearer {token}"

    # -- pull ----------------------------------------------------------------------------

    async def get_manifest(self, ref: Reference, obj: str) -> tuple[bytes, str, str]:
        """(bytes, content type, digest) of a manifest or index; the digest is verified."""
        resp = await self.request(
            ref, "GET", f"{self._base(ref)}/manifests/{obj}", headers={"Accept": MANIFEST_ACCEPT}
        )
        data = await resp.read()
        if resp.status == 404:
            raise ImageNotFound(
                f"image {ref} not found in registry {ref.host}; check the name and tag"
            )
        if resp.status != 200:
            raise RegistryUnavailable(
                f"registry {ref.host} answered HTTP {resp.status} for manifest {obj}: "
                f"{data[:200]!r}"
            )
        actual = sha256_digest(data)
        expected = obj if obj.startswith("sha256:") else resp.header("docker-content-digest")
        if expected and expected != actual:
            raise DigestMismatch(
                f"manifest {obj} of {ref}: registry sent content with digest {actual}, "
                f"expected {expected}; the registry or a proxy is corrupting data"
            )
        return data, resp.header("content-type"), actual

    async def open_blob(self, ref: Reference, digest: str) -> Response:
        resp = await self.request(ref, "GET", f"{self._base(ref)}/blobs/{digest}")
        if resp.status != 200:
            body = await resp.read()
            if resp.status == 404:
                raise ImageNotFound(f"blob {digest} of {ref} is missing from registry {ref.host}")
            raise RegistryUnavailable(
                f"registry {ref.host} answered HTTP {resp.status} for blob {digest}: {body[:200]!r}"
            )
        return resp

    async def get_blob(self, ref: Reference, digest: str) -> bytes:
        resp = await self.open_blob(ref, digest)
        data = await resp.read()
        if sha256_digest(data) != digest:
            raise DigestMismatch(
                f"blob {digest} of {ref}: content has digest {sha256_digest(data)}; "
                "the registry or a proxy is corrupting data"
            )
        return data

    # -- push ----------------------------------------------------------------------------

    async def push_blob(self, ref: Reference, data: bytes) -> str:
        """Upload ``data`` unless the registry has it; returns its digest."""
        digest = sha256_digest(data)
        head = await self.request(ref, "HEAD", f"{self._base(ref)}/blobs/{digest}", push=True)
        await head.read()
        if head.status == 200:
            return digest
        start = await self.request(ref, "POST", f"{self._base(ref)}/blobs/uploads/", push=True)
        await start.read()
        if start.status != 202:
            raise RuntimeFailure(f"registry {ref.host}: upload start answered {start.status}")
        loc = urljoin(f"{self._base(ref)}/", start.header("location"))
        sep = "&" if "?" in loc else "?"
        put = await self.request(
            ref,
            "PUT",
            f"{loc}{sep}{urlencode({'digest': digest})}",
            headers={"Content-Type": "application/octet-stream"},
            body=data,
            push=True,
        )
        body = await put.read()
        if put.status != 201:
            raise RuntimeFailure(
                f"registry {ref.host}: blob upload answered {put.status}: {body[:200]!r}"
            )
        return digest

    async def put_manifest(self, ref: Reference, tag: str, data: bytes, media_type: str) -> str:
        resp = await self.request(
            ref,
            "PUT",
            f"{self._base(ref)}/manifests/{tag}",
            headers={"Content-Type": media_type},
            body=data,
            push=True,
        )
        body = await resp.read()
        if resp.status != 201:
            raise RuntimeFailure(
                f"registry {ref.host}: manifest put answered {resp.status}: {body[:200]!r}"
            )
        return sha256_digest(data)

    async def aclose(self) -> None:
        await self.http.aclose()
