"""Injected identifiers and randomness.

Components take an ``IdSource`` and a ``random.Random``; tests pass seeded ones so that runs
repeat exactly.
"""

from __future__ import annotations

import random
import re
import secrets
from typing import Protocol

_ID_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def is_valid_id(value: str) -> bool:
    """DNS-label shaped: lowercase letters, digits and '-', 1..63 chars, no edge '-'."""
    return bool(_ID_RE.match(value))


class IdSource(Protocol):
    def new_id(self, prefix: str = "") -> str: ...


class RandomIds:
    """Random 12-hex-digit ids (48 bits), from ``secrets`` unless a seeded RNG is given."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng

    def new_id(self, prefix: str = "") -> str:
        bits = self._rng.getrandbits(48) if self._rng else secrets.randbits(48)
        return f"{prefix}{bits:012x}"


class SequentialIds:
    """Deterministic ids for tests: ``<prefix>1``, ``<prefix>2``…"""

    def __init__(self) -> None:
        self._n = 0

    def new_id(self, prefix: str = "") -> str:
        self._n += 1
        return f"{prefix}{self._n}"
