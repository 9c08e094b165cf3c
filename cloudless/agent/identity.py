"""The agent's identity on disk, and enrollment.

Files under ``<data_dir>/identity/`` (0600): ``node.key`` (never leaves the node), ``node.crt``,
``ca.pem`` and ``node.json`` (node id and the coordinators' agent endpoints).

Enrollment, as swarmkit and K3s do it: fetch the CA bundle from the coordinator's API over
unauthenticated TLS, keep only the root whose digest the join token pins (nothing is sent
before that check), then call ``Enrollment.Enroll`` over TLS that verifies the coordinator
against that root, with the token and a CSR for a fresh key.

A transient failure of ``Enroll`` (``UNAVAILABLE``, ``DEADLINE_EXCEEDED``, ...: the answer may
have been lost after the coordinator redeemed the token) is retried with backoff, on every
announced endpoint in turn, with the **same** key and CSR: the coordinator answers a retry by
the node that redeemed the token with its certificate. A refusal (``PERMISSION_DENIED``...) is
final and says why.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import re
import secrets
import ssl
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.api.gen.cloudlessapi import agent_pb2_grpc as pbg
from cloudless.lib.backoff import Backoff
from cloudless.lib.errors import CloudlessError
from cloudless.lib.keepalive import Keepalive
from cloudless.security._files import write_private
from cloudless.security.identity import SpiffeId
from cloudless.security.keys import make_csr, new_private_key
from cloudless.security.tokens import pinned_ca


class EnrollmentFailed(CloudlessError):
    code = "enrollment_failed"


@dataclass
class AgentIdentity:
    node_id: str
    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes
    coordinators: list[str] = field(default_factory=list)
    trust_domain: str = "cloudless"

    @staticmethod
    def dir(data_dir: Path) -> Path:
        return data_dir / "identity"

    def save(self, data_dir: Path) -> None:
        d = self.dir(data_dir)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        meta = {
            "node_id": self.node_id,
            "coordinators": self.coordinators,
            "trust_domain": self.trust_domain,
        }
        for name, data in (
            ("node.key", self.key_pem),
            ("node.crt", self.cert_pem),
            ("ca.pem", self.ca_pem),
            ("node.json", json.dumps(meta).encode()),
        ):
            write_private(d / name, data)

    @classmethod
    def load(cls, data_dir: Path) -> AgentIdentity | None:
        d = cls.dir(data_dir)
        if not (d / "node.json").exists():
            return None
        meta = json.loads((d / "node.json").read_text())
        return cls(
            node_id=meta["node_id"],
            key_pem=(d / "node.key").read_bytes(),
            cert_pem=(d / "node.crt").read_bytes(),
            ca_pem=(d / "ca.pem").read_bytes(),
            coordinators=list(meta.get("coordinators", [])),
            trust_domain=meta.get("trust_domain", "cloudless"),
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem,
            private_key=self.key_pem,
            certificate_chain=self.cert_pem,
        )


RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.UNKNOWN,
    }
)
ENROLL_BACKOFF = Backoff(base=0.25, factor=2.0, cap=5.0, jitter=0.5)


@functools.cache
def _unverified_tls() -> ssl.SSLContext:
    """A client context that verifies nothing (trust comes from the token's digest, checked
    right after). Built once: ``ssl.create_default_context()`` would load the system's CA
    store on every call, which cost more CPU than the whole enrollment."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _fetch_ca_blocking(api_url: str, timeout: float) -> dict[str, object]:
    ctx = _unverified_tls()
    with urllib.request.urlopen(f"{api_url.rstrip('/')}/v1/ca", context=ctx, timeout=timeout) as r:
        body = json.loads(r.read())
    if not isinstance(body, dict):
        raise EnrollmentFailed(f"{api_url}/v1/ca did not answer with a JSON object")
    return body


async def fetch_pinned_ca(
    api_url: str, token: str, timeout: float = 10.0
) -> tuple[bytes, list[str]]:
    """The CA root pinned by ``token`` and the agent endpoints the coordinator announces."""
    try:
        body = await asyncio.to_thread(_fetch_ca_blocking, api_url, timeout)
    except OSError as e:
        raise EnrollmentFailed(f"cannot reach the coordinator at {api_url}: {e}") from None
    ca = str(body.get("ca_bundle_pem", "")).encode()
    root = pinned_ca(token, ca)
    endpoints = body.get("enroll_endpoints") or body.get("agent_endpoints", [])
    if not isinstance(endpoints, list) or not endpoints:
        raise EnrollmentFailed(f"{api_url}/v1/ca announced no enrollment endpoint")
    return root, [str(e) for e in endpoints]


def new_node_id(name: str) -> str:
    """``<name as a DNS label>-<6 hex digits>``, e.g. ``pi-kitchen-3fa9c1``."""
    base = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:50] or "node"
    return f"{base}-{secrets.token_hex(3)}"


def channel_options(server_name: str | None = None) -> list[tuple[str, object]]:
    return Keepalive().client_options(server_name)


async def enroll(
    api_url: str,
    token: str,
    *,
    node_name: str,
    facts: pb.NodeFacts,
    node_id: str | None = None,
    timeout: float = 30.0,
    attempts: int = 10,
) -> AgentIdentity:
    """Enroll a new node: pinned CA, fresh key, CSR, ``Enroll`` (retried, see the module)."""
    root, endpoints = await fetch_pinned_ca(api_url, token)
    key_pem = new_private_key()
    # The node picks its id (as Nomad clients do); the coordinator refuses one already taken.
    node_id = node_id or new_node_id(node_name)
    csr = make_csr(key_pem, SpiffeId.node(node_id))
    request = pb.EnrollRequest(token=token, csr_pem=csr, node_name=node_name, facts=facts)
    resp = await send_enroll(endpoints, root, request, timeout=timeout, attempts=attempts)
    return AgentIdentity(
        node_id=resp.node_id,
        key_pem=key_pem,
        cert_pem=resp.cert_pem,
        ca_pem=resp.ca_bundle_pem or root,
        coordinators=list(resp.coordinators),
    )


async def send_enroll(
    endpoints: list[str],
    root: bytes,
    request: pb.EnrollRequest,
    *,
    timeout: float = 30.0,
    attempts: int = 10,
    backoff: Backoff = ENROLL_BACKOFF,
    rng: random.Random | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> pb.EnrollResponse:
    """Send the *same* ``request`` until one endpoint answers, at most ``attempts`` times.

    Endpoints are tried in turn; after a round in which all failed transiently
    (``RETRYABLE``) it waits ``backoff.delay(round)``. Any other status is a refusal:
    ``EnrollmentFailed`` with the coordinator's reason, at once.
    """
    if not endpoints:
        raise EnrollmentFailed("no enrollment endpoint to send to")
    rng = rng or random.Random()
    creds = grpc.ssl_channel_credentials(root_certificates=root)
    last: grpc.aio.AioRpcError | None = None
    for attempt in range(attempts):
        if attempt and attempt % len(endpoints) == 0:
            await sleep(backoff.delay(attempt // len(endpoints) - 1, rng))
        ep = endpoints[attempt % len(endpoints)]
        async with grpc.aio.secure_channel(ep, creds, options=channel_options()) as ch:
            try:
                resp: pb.EnrollResponse = await pbg.EnrollmentStub(ch).Enroll(
                    request, timeout=timeout
                )
                return resp
            except grpc.aio.AioRpcError as e:
                if e.code() not in RETRYABLE:
                    raise EnrollmentFailed(f"enrollment refused: {e.details()}") from None
                last = e
    detail = f"{last.code().name}: {last.details()}" if last is not None else "no answer"
    raise EnrollmentFailed(
        f"no coordinator endpoint completed the enrollment after {attempts} attempts "
        f"({detail}); check that a coordinator is up and retry"
    )
