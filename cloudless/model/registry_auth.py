"""Registry credentials kept in a secret, and how a workload refers to them.

    cloudless secret create regcred --type registry --registry reg.example:5000 \\
        --username deploy --password-stdin
    # workload spec:
    image: reg.example:5000/team/web:1.4
    image_pull_secret: regcred

The value of a ``registry`` secret is Docker's ``config.json`` shape, so an existing
``~/.docker/config.json`` works as ``--from-file``::

    {"auths": {"reg.example:5000": {"username": "deploy", "password": "..."}}}
    {"auths": {"reg.example:5000": {"auth": "<base64 of deploy:...>"}}}

Keys may be written as URLs (``https://reg.example:5000/v1/``); Docker Hub's keys
(``index.docker.io``, ``registry-1.docker.io``) mean ``docker.io``. The coordinator sends the
value only to agents running a replica of a workload naming it, and the agent uses the entry for
the image's registry for that pull (never writing it to disk).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from cloudless.lib.errors import ValidationError
from cloudless.runtime.oci.reference import DOCKER_HUB
from cloudless.runtime.types import RegistryAuth

REGISTRY = "registry"  # the secret type
CONFIG_TYPE = "config"  # a config object: kept like a secret, readable back, mounted mode 0444
SECRET_TYPES = ("opaque", REGISTRY, CONFIG_TYPE)
_HUB_ALIASES = {"index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}


def normalize_host(key: str) -> str:
    """``"https://Reg.example:5000/v1/"`` -> ``"reg.example:5000"``; Hub aliases -> docker.io."""
    host = key.strip()
    if "://" in host:
        host = host.split("://", 1)[1]
    host = host.split("/", 1)[0].lower()
    return DOCKER_HUB if host in _HUB_ALIASES else host


def registry_secret(host: str, username: str, password: str) -> bytes:
    """The value of a registry secret holding one registry's credentials."""
    entry = {"username": username, "password": password}
    return json.dumps({"auths": {normalize_host(host): entry}}, sort_keys=True).encode()


def _entry(host: str, e: Any) -> RegistryAuth:
    where = f"auths.{host}"
    if not isinstance(e, dict):
        raise ValidationError(f"data: {where} must be an object with username and password")
    user, password = e.get("username"), e.get("password")
    if isinstance(e.get("auth"), str) and e["auth"]:
        try:
            user, _, password = base64.b64decode(e["auth"], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise ValidationError(
                f"data: {where}.auth is not base64 of username:password"
            ) from None
    if not isinstance(user, str) or not user or not isinstance(password, str):
        raise ValidationError(f"data: {where} needs a username and a password (or auth)")
    return RegistryAuth(user, password)


def parse_registry_secret(value: bytes) -> dict[str, RegistryAuth]:
    """Registry host -> credentials. Raises ``ValidationError`` naming what is wrong (never the
    password)."""
    try:
        doc = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        raise ValidationError(
            'data: a registry secret is JSON: {"auths": {"HOST": {"username": ..., '
            '"password": ...}}} (a docker config.json); or use --registry/--username'
        ) from None
    auths = doc.get("auths") if isinstance(doc, dict) else None
    if not isinstance(auths, dict) or not auths:
        raise ValidationError('data: a registry secret needs "auths" with at least one registry')
    return {normalize_host(str(h)): _entry(str(h), e) for h, e in auths.items()}


def auth_for(value: bytes, host: str) -> RegistryAuth | None:
    """The credentials in a registry secret for ``host`` (an image reference's host)."""
    return parse_registry_secret(value).get(normalize_host(host))
