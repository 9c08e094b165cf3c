"""Secrets a workload uses, by reference: the spec names them, never holds their values.

    secrets:
      - {name: db-pass, path: /run/secrets/db-pass}   # a file, mode 0400, on tmpfs
      - {name: db-pass, env: DB_PASSWORD}             # an environment variable

A secret is created apart (``cloudless secret create NAME --from-literal/--from-file``), kept
encrypted in the store (``cloudless.security.secretbox``) and sent only to the agents that run a
replica referring to it. Its value never appears in a spec, a replica, an event or a log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_SECRET_BYTES = 64 * 1024
CONFIG_KEY_PREFIX = "config/"
MAX_SECRET_REFS = 32
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def config_key(name: str) -> str:
    """The key of config ``name``'s value in an assignment's values (``Assigned.secrets``):
    configs have a name space of their own, so a config and a secret may share a name. Secret
    names are ids (no "/"), so a secret's key, its name, never looks like a config's."""
    return CONFIG_KEY_PREFIX + name


@dataclass(frozen=True, slots=True)
class SecretRef:
    name: str
    path: str = ""  # a file at this path inside the container, or
    env: str = ""  # this environment variable
