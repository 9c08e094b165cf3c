"""A small synchronous client for the user API (mutual TLS), used by the CLI and tests.

The client config (written by the first coordinator at bootstrap, like a kubeconfig) names
the API servers, the CA bundle and the client certificate. Redirects from followers are
followed; connection failures move on to the next server.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cloudless.lib.errors import CloudlessError

DEFAULT_CONFIG = Path(os.environ.get("CLOUDLESS_CONFIG", "~/.cloudless/config.json")).expanduser()


class ApiError(CloudlessError):
    def __init__(self, status: int, code: str, message: str, problems: list[str] | None = None):
        super().__init__(message, code=code)
        self.status = status
        self.problems = problems or []


@dataclass
class ClientConfig:
    servers: list[str]
    ca_file: Path
    cert_file: Path
    key_file: Path

    @classmethod
    def load(cls, path: Path | None = None) -> ClientConfig:
        p = (path or DEFAULT_CONFIG).expanduser()
        try:
            raw = json.loads(p.read_text())
        except FileNotFoundError:
            raise CloudlessError(
                f"no client config at {p}: pass --config, or set CLOUDLESS_CONFIG to the "
                "config.json the first coordinator wrote at bootstrap"
            ) from None
        except ValueError as e:
            raise CloudlessError(f"client config {p} is not JSON: {e}") from None
        base = p.parent
        return cls(
            servers=list(raw["servers"]),
            ca_file=base / raw["ca"],
            cert_file=base / raw["cert"],
            key_file=base / raw["key"],
        )


def _check_coordinator(url: str, der: bytes | None) -> None:
    """The server's certificate (already verified against the CA) must name a coordinator:
    a node's or a workload's certificate from the same CA must not pass for one."""
    from cryptography import x509

    from cloudless.security.identity import CertKind, SpiffeId

    try:
        cert = x509.load_der_x509_certificate(der or b"")
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sid = SpiffeId.parse(san.get_values_for_type(x509.UniformResourceIdentifier)[0])
    except (ValueError, IndexError, x509.ExtensionNotFound, CloudlessError):
        raise CloudlessError(f"{url} presented a certificate with no SPIFFE ID") from None
    if sid.kind is not CertKind.SERVICE or not sid.name.startswith("coordinator-"):
        raise CloudlessError(
            f"{url} presented {sid.uri}, which is not a coordinator: refusing to talk to it"
        )


class Client:
    def __init__(self, config: ClientConfig, timeout: float = 30.0) -> None:
        self.config = config
        self.timeout = timeout
        ctx = ssl.create_default_context(cafile=str(config.ca_file))
        ctx.check_hostname = False  # identity is checked by the SPIFFE SAN and CA, not DNS
        ctx.load_cert_chain(str(config.cert_file), str(config.key_file))
        self.ssl = ctx
        self._last_good = ""

    CONNECT_TIMEOUT = 3.0

    def _conn(self, url: str, timeout: float | None) -> http.client.HTTPSConnection:
        """Connected within ``CONNECT_TIMEOUT`` (an unreachable coordinator is skipped
        quickly), then reading with the full timeout."""
        u = urlsplit(url)
        conn = http.client.HTTPSConnection(
            u.hostname or "127.0.0.1",
            u.port or 8443,
            context=self.ssl,
            timeout=self.CONNECT_TIMEOUT,
        )
        conn.connect()
        assert conn.sock is not None
        _check_coordinator(url, conn.sock.getpeercert(binary_form=True))
        conn.sock.settimeout(timeout if timeout is not None else self.timeout)
        return conn

    def open(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> http.client.HTTPResponse:
        """Send a request, following redirects and failing over between servers."""
        last: Exception | None = None
        servers = list(self.config.servers)
        if self._last_good:  # the one that answered last (the leader, after a redirect) first
            servers = [self._last_good, *(x for x in servers if x != self._last_good)]
        tried = 0
        while servers and tried < 8:
            base = servers.pop(0)
            tried += 1
            try:
                conn = self._conn(base, timeout)
                headers = {"Content-Type": content_type} if body is not None else {}
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
            except OSError as e:
                last = e
                continue
            if resp.status in (307, 308):
                loc = resp.getheader("Location") or ""
                resp.read()
                u = urlsplit(loc)
                servers.insert(0, f"{u.scheme}://{u.netloc}")
                continue
            self._last_good = base
            return resp
        raise CloudlessError(f"no coordinator answered ({last}); tried {self.config.servers}")

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        content_type: str = "application/json",
    ) -> Any:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        resp = self.open(method, path, data, content_type=content_type)
        text = resp.read()
        try:
            doc = json.loads(text) if text else {}
        except ValueError:
            raise ApiError(
                resp.status, "bad_response", text[:200].decode(errors="replace")
            ) from None
        if resp.status >= 400:
            err = doc.get("error", {}) if isinstance(doc, dict) else {}
            raise ApiError(
                resp.status,
                err.get("code", "error"),
                err.get("message", str(doc)),
                err.get("problems"),
            )
        return doc

    def stream(self, path: str, headers: dict[str, str] | None = None) -> Iterator[bytes]:
        """The response's lines; ``headers``, if given, is filled with the response's."""
        resp = self.open("GET", path, timeout=3600)
        if headers is not None:
            headers.update(resp.getheaders())
        if resp.status >= 400:
            doc = json.loads(resp.read() or b"{}")
            err = doc.get("error", {})
            raise ApiError(resp.status, err.get("code", "error"), err.get("message", ""))
        try:
            while True:
                line = resp.readline()
                if not line:
                    return
                yield line
        finally:
            resp.close()  # a reader that stops early closes the connection

    # -- conveniences ---------------------------------------------------------------------

    def apply(self, spec_text: bytes) -> Any:
        return self.call("POST", "/v1/workloads", raw=spec_text, content_type="application/yaml")

    def nodes(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/v1/nodes")["nodes"])

    def workload(self, name: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/v1/workloads/{name}"))

    def create_token(self, **kw: Any) -> str:
        return str(self.call("POST", "/v1/tokens", kw)["token"])
