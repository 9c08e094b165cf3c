"""An in-process OCI registry (aiohttp) for tests that need what docker-registry cannot do on
demand: bearer-token challenges, corrupted blobs, chunked bodies, redirects, request counts."""

from __future__ import annotations

import base64
import collections
import hashlib
import json
from dataclasses import dataclass, field

from aiohttp import web

from cloudless.runtime.oci.image import MT_OCI_CONFIG, MT_OCI_LAYER_GZIP, MT_OCI_MANIFEST


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class FakeRegistry:
    auth: str = ""  # "", "basic" or "bearer"
    user: str = "alice"
    password: str = "s3cret"
    corrupt: set[str] = field(default_factory=set)  # blob digests served with a flipped byte
    chunked: bool = False
    redirect_blobs: bool = False
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)
    hits: collections.Counter[str] = field(default_factory=collections.Counter)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def add_image(self, repo: str, tag: str, layer_tar_gz: bytes, diff_id: str) -> str:
        """Store a one-layer image; returns the manifest digest."""
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Cmd": ["sh"]},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            }
        ).encode()
        self.blobs[digest_of(config)] = config
        self.blobs[digest_of(layer_tar_gz)] = layer_tar_gz
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MT_OCI_MANIFEST,
                "config": {
                    "mediaType": MT_OCI_CONFIG,
                    "digest": digest_of(config),
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": MT_OCI_LAYER_GZIP,
                        "digest": digest_of(layer_tar_gz),
                        "size": len(layer_tar_gz),
                    }
                ],
            }
        ).encode()
        self.manifests[(repo, tag)] = (manifest, MT_OCI_MANIFEST)
        self.manifests[(repo, digest_of(manifest))] = (manifest, MT_OCI_MANIFEST)
        return digest_of(manifest)

    # -- server --------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/token", self._token)
        app.router.add_route("*", "/v2/{repo:.+}/manifests/{ref}", self._manifest)
        app.router.add_route("*", "/v2/{repo:.+}/blobs/{digest}", self._blob)
        app.router.add_get("/storage/{digest}", self._storage)
        app.router.add_get("/v2/", self._base)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    def _challenge(self, scope: str) -> web.Response:
        if self.auth == "basic":
            hdr = 'Basic realm="fake"'
        else:
            hdr = f'Bearer realm="http://{self.host}/token",service="fake-registry",scope="{scope}"'
        return web.Response(status=401, headers={"WWW-Authenticate": hdr})

    def _authorized(self, request: web.Request, scope: str) -> bool:
        got = request.headers.get("Authorization", "")
        if not self.auth:
            return True
        if self.auth == "basic":
            return got == self._basic()
        return got == f"Bearer tok:{scope}"

    def _basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()

    async def _token(self, request: web.Request) -> web.Response:
        self.hits["token"] += 1
        if request.headers.get("Authorization") != self._basic():
            return web.Response(status=401)
        scope = request.query.get("scope", "")
        if request.query.get("service") != "fake-registry":
            return web.Response(status=400)
        return web.json_response({"token": f"tok:{scope}"})

    async def _base(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _manifest(self, request: web.Request) -> web.StreamResponse:
        repo, ref = request.match_info["repo"], request.match_info["ref"]
        scope = f"repository:{repo}:pull"
        if not self._authorized(request, scope):
            return self._challenge(scope)
        self.hits[f"manifest:{ref}"] += 1
        item = self.manifests.get((repo, ref))
        if item is None:
            return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN"}]}, status=404)
        data, mt = item
        return await self._send(request, data, mt, {"Docker-Content-Digest": digest_of(data)})

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        repo, digest = request.match_info["repo"], request.match_info["digest"]
        scope = f"repository:{repo}:pull"
        if not self._authorized(request, scope):
            return self._challenge(scope)
        self.hits[f"blob:{digest}"] += 1
        if digest not in self.blobs:
            return web.json_response({"errors": [{"code": "BLOB_UNKNOWN"}]}, status=404)
        if self.redirect_blobs:
            # Another host name for the same server: credentials must not follow.
            raise web.HTTPTemporaryRedirect(f"http://localhost:{self.port}/storage/{digest}")
        return await self._serve_blob(request, digest)

    async def _storage(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization"):
            return web.Response(status=400, text="credentials leaked to storage")
        return await self._serve_blob(request, request.match_info["digest"])

    async def _serve_blob(self, request: web.Request, digest: str) -> web.StreamResponse:
        data = self.blobs[digest]
        if digest in self.corrupt:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        return await self._send(request, data, "application/octet-stream", {})

    async def _send(
        self, request: web.Request, data: bytes, mt: str, headers: dict[str, str]
    ) -> web.StreamResponse:
        if not self.chunked:
            return web.Response(body=data, content_type=mt, headers=headers)
        resp = web.StreamResponse(headers={"Content-Type": mt, **headers})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(data), 1000):
            await resp.write(data[i : i + 1000])
        await resp.write_eof()
        return resp
