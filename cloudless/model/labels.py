"""What a label and a short name may be, for users' specs and agents' reports alike.

* A label key is 1-63 characters of letters, digits, ``.``, ``_``, ``-`` and ``/``,
  starting and ending with a letter or digit (the join token's pinned labels use the same).
* A label value is at most ``MAX_LABEL_VALUE`` printable characters on one line.
* A short text (a node name, an address, an architecture) is one printable line of at most
  ``MAX_TEXT`` characters.

Each check returns the reason a value is refused, or ``None``; none of them repeats more than
a capped amount of the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from cloudless.lib.bounded import path_key, show

LABEL_KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$")
MAX_LABEL_VALUE = 253
MAX_TEXT = 253
MAX_LABELS = 64


def label_key_problem(key: object) -> str | None:
    if not isinstance(key, str) or not LABEL_KEY.match(key):
        return (
            f"label key {show(key)} must be 1-63 letters, digits, '.', '_', '-' or '/', "
            "starting and ending with a letter or digit"
        )
    return None


def label_value_problem(value: object) -> str | None:
    return text_problem(value, MAX_LABEL_VALUE, what="label value")


def text_problem(value: object, limit: int = MAX_TEXT, *, what: str = "value") -> str | None:
    if not isinstance(value, str):
        return f"{show(value)} is not a string"
    if len(value) > limit:
        return f"{what} {show(value)} is longer than {limit} characters"
    if not value.isprintable():
        return f"{what} {show(value)} has control characters or line breaks"
    return None


def labels_problems(labels: Mapping[Any, Any], path: str) -> list[str]:
    """``path.key: reason`` for every bad label (and one for too many)."""
    out = []
    if len(labels) > MAX_LABELS:
        out.append(f"{path}: {len(labels)} labels is more than the limit of {MAX_LABELS}")
    for k, v in labels.items():
        kp = f"{path}.{path_key(k)}"
        why = label_key_problem(k) or label_value_problem(v)
        if why:
            out.append(f"{kp}: {why}")
    return out
