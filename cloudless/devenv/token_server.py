"""A docker-registry token service (the ``auth: token`` scheme) for the private registry.

The registry answers unauthenticated requests with ``WWW-Authenticate: Bearer realm=<this
server>/token,service=…,scope=…``; clients fetch a JWT here with HTTP basic credentials and
retry with ``Authorization: Bearer <jwt>``. Tokens are ES256 JWTs whose ``x5c`` header carries a
self-signed certificate that the registry trusts through its ``rootcertbundle``. Any listed
user gets the actions it asks for (no per-repository ACLs: this is a test environment).
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import time
from pathlib import Path

import bcrypt
import jwt
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ISSUER = "cloudless-devenv"
SERVICE = "cloudless-registry"


class TokenServer:
    def __init__(self, users: dict[str, str], cert_dir: Path) -> None:
        self._hashes = {
            u: bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=4)) for u, p in users.items()
        }
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cloudless token signer")])
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=7))
            .sign(self._key, hashes.SHA256())
        )
        cert_dir.mkdir(parents=True, exist_ok=True)
        self.bundle = cert_dir / "token-signer.pem"
        self.bundle.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.issued = 0

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/token", self._token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _user(self, header: str) -> str | None:
        if not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        hashed = self._hashes.get(user)
        if hashed is None or not bcrypt.checkpw(password.encode(), hashed):
            return None
        return user

    async def _token(self, request: web.Request) -> web.Response:
        user = self._user(request.headers.get("Authorization", ""))
        if user is None:
            return web.json_response(
                {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]},
                status=401,
                headers={"WWW-Authenticate": 'Basic realm="cloudless-token"'},
            )
        access = []
        for scope in request.query.getall("scope", []):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": user,
            "aud": request.query.get("service", SERVICE),
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        der = self._cert.public_bytes(serialization.Encoding.DER)
        token = jwt.encode(
            claims,
            self._key,
            algorithm="ES256",
            headers={"x5c": [base64.b64encode(der).decode()]},
        )
        self.issued += 1
        return web.json_response({"token": token, "access_token": token, "expires_in": 300})
