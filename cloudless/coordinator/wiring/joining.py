"""Adding a coordinator to a running cluster (the K3s embedded-etcd model).

The joiner holds a one-time ``coordinator-join`` token. It fetches the CA bundle from any
coordinator's ``/v1/ca`` and keeps only the root the token pins (nothing is sent before
that); it then posts the token to ``/v1/cluster/join`` over TLS verified against that root.
The coordinator spends the token atomically and answers with the cluster's CA material and
the etcd client endpoints. With the CA the joiner mints its own certificates, adds its etcd
member as a learner through an existing member, starts it with
``--initial-cluster-state=existing`` and promotes it once it has caught up
(``cloudless.store.membership.join``; membership changes are retried with backoff).

Every coordinator registers itself under ``config/coordinator-<name>`` so that agents and
clients learn every coordinator's endpoints.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.request
from pathlib import Path
from typing import Any

from cloudless.agent.identity import fetch_pinned_ca
from cloudless.lib.errors import CloudlessError
from cloudless.security._files import write_private

CA_FILES = ("ca.crt", "ca.key", "ca.json")
# the cluster's Nebula CA (``<ca_dir>/nebula``), once the first coordinator made it: every
# coordinator runs a lighthouse and may lead, so every one signs Nebula certificates
NEBULA_DIR = "nebula"
NEBULA_FILES = ("ca.crt", "ca.key")
# present once a root rotation happened: the previous roots still trusted, secrets' key root
OPTIONAL_CA_FILES = ("trusted-roots.pem", "secrets-root.key")


class JoinFailed(CloudlessError):
    code = "join_failed"


def ca_material(ca_dir: Path) -> dict[str, str]:
    names = [*CA_FILES, *(n for n in OPTIONAL_CA_FILES if (ca_dir / n).exists())]
    nebula = [f"{NEBULA_DIR}/{n}" for n in NEBULA_FILES]
    if all((ca_dir / n).exists() for n in nebula):
        names += nebula
    return {name: (ca_dir / name).read_text() for name in names}


def _post_join(api_url: str, root_pem: bytes, body: dict[str, Any], timeout: float) -> Any:
    ctx = ssl.create_default_context(cadata=root_pem.decode())
    ctx.check_hostname = False  # the certificate is checked against the pinned root
    req = urllib.request.Request(
        f"{api_url.rstrip('/')}/v1/cluster/join",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            msg = json.loads(e.read())["error"]["message"]
        except Exception:
            msg = str(e)
        raise JoinFailed(f"join refused by {api_url}: {msg}") from None


async def request_join(
    api_url: str, token: str, name: str, timeout: float = 30.0
) -> dict[str, Any]:
    """Fetch and pin the CA, then spend the token; returns the join answer."""
    root, _ = await fetch_pinned_ca(api_url, token)
    try:
        answer = await asyncio.to_thread(
            _post_join, api_url, root, {"token": token, "name": name}, timeout
        )
    except OSError as e:
        raise JoinFailed(f"cannot reach {api_url}: {e}") from None
    if not isinstance(answer, dict) or "ca" not in answer or "etcd_endpoints" not in answer:
        raise JoinFailed(f"{api_url} gave a malformed join answer")
    return answer


def write_ca(ca_dir: Path, files: dict[str, str]) -> None:
    ca_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in CA_FILES:
        if name not in files:
            raise JoinFailed(f"join answer lacks CA file {name}")
        write_private(ca_dir / name, files[name].encode())
    for name in OPTIONAL_CA_FILES:
        if name in files:
            write_private(ca_dir / name, files[name].encode())
    nebula = [f"{NEBULA_DIR}/{n}" for n in NEBULA_FILES]
    got = [n for n in nebula if n in files]
    if got and len(got) != len(nebula):
        raise JoinFailed(f"join answer has {', '.join(got)} but not the whole Nebula CA")
    if got:
        (ca_dir / NEBULA_DIR).mkdir(exist_ok=True, mode=0o700)
        for name in nebula:
            write_private(ca_dir / name, files[name].encode())
