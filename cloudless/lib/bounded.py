"""Bounded parsing of untrusted documents (request bodies, spec files): JSON or YAML text to
plain data that every later step may walk recursively without risk.

Contract of ``load_json`` / ``load_yaml`` / ``load_any``: the result is made only of ``dict``
(scalar keys), ``list``, ``str``, ``int``, ``float``, ``bool`` and ``None``; it is nested at
most ``MAX_DEPTH`` levels; it holds at most ``MAX_VALUES`` values *counting every YAML alias
expansion* (an alias bomb is refused, never expanded); every float is finite and every number
lies within ``MAX_MAGNITUDE`` (int64). Anything else raises ``ValidationError`` naming the
path of the first offending value (``spec.resources.cpu: ...``). Nothing here raises another
exception type for any input, and no message repeats more than ``show``'s cap of the input.
"""

from __future__ import annotations

import json
import math
from typing import Any

import yaml

from cloudless.lib.errors import ValidationError

MAX_DEPTH = 32
MAX_VALUES = 100_000
MAX_MAGNITUDE = 2**63 - 1
MAX_NUMBER_CHARS = 40  # longer numerals are refused before Python converts them
SHOW_CHARS = 60


def show(value: object, limit: int = SHOW_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters: what an error may repeat of the input.
    Containers are not repr'd in full (they may be huge or shared many times)."""
    if isinstance(value, dict):
        return f"a mapping of {len(value)} keys"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)} items"
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value)} characters)"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**limit:
        return "a number too large to show"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _bad_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def _int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"a {len(text)}-digit number is out of range")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS * 8:
        raise ValueError(f"a {len(text)}-character number is out of range")
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"{text[:MAX_NUMBER_CHARS]} is out of range (not a finite number)")
    return v


def load_json(data: bytes | str, root: str = "body") -> Any:
    """Parse JSON text under the module's bounds; ``root`` names the document in errors."""
    if isinstance(data, bytes):
        try:
            data = data.decode()
        except UnicodeDecodeError:
            raise ValidationError(f"{root}: is not UTF-8 text") from None
    try:
        doc = json.loads(data, parse_constant=_bad_constant, parse_int=_int, parse_float=_float)
    except RecursionError:
        raise ValidationError(f"{root}: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:  # JSONDecodeError, and our number refusals
        raise ValidationError(f"{root}: is not valid JSON ({_one_line(str(e))})") from None
    check_plain(doc, root)
    return doc


class _BoundedLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses more than ``MAX_VALUES`` composed nodes, aliases included
    (each alias counts as the size of the node it names), and nesting past ``MAX_DEPTH``."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._composed = 0
        self._depth = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            alias = self.peek_event().anchor  # type: ignore[no-untyped-call]
            node = self.anchors.get(alias)
            self._count(self._sizes.get(id(node), 1) if node is not None else 1)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise ValidationError(f"nested deeper than {MAX_DEPTH} levels")
        before = self._composed
        self._count(1)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._sizes[id(node)] = self._composed - before
        return node

    def _count(self, n: int) -> None:
        self._composed += n
        if self._composed > MAX_VALUES:
            raise ValidationError(
                f"holds more than {MAX_VALUES:,} values once YAML aliases are expanded"
            )


def load_yaml(data: bytes | str, root: str = "spec", what: str = "YAML") -> Any:
    """Parse one YAML document under the module's bounds."""
    if isinstance(data, bytes):
        try:
            data = data.decode()
        except UnicodeDecodeError:
            raise ValidationError(f"{root}: is not UTF-8 text") from None
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(data)  # reads (and may refuse) the text at once
        doc = loader.get_single_data()
    except ValidationError as e:
        raise ValidationError(f"{root}: {e.message}") from None
    except RecursionError:
        raise ValidationError(f"{root}: nested deeper than {MAX_DEPTH} levels") from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as e:
        # ValueError: an integer past Python's digit limit; TypeError: an unhashable key
        raise ValidationError(f"{root}: is not valid {what} ({_one_line(str(e))})") from None
    finally:
        if loader is not None:
            loader.dispose()
    check_plain(doc, root)
    return doc


def load_any(data: bytes | str, root: str = "spec") -> Any:
    """JSON when the text starts with ``{`` (after blanks), YAML otherwise."""
    if isinstance(data, bytes):
        try:
            data = data.decode()
        except UnicodeDecodeError:
            raise ValidationError(f"{root}: is not UTF-8 text") from None
    if data.lstrip().startswith("{"):
        return load_json(data, root)
    return load_yaml(data, root, "YAML or JSON")


def check_plain(doc: Any, root: str) -> None:
    """Refuse (naming the path) anything outside the contract above: walked iteratively, at
    most ``MAX_VALUES`` values visited (a shared subtree counts each time it is reached)."""
    stack: list[tuple[Any, str, int]] = [(doc, root, 1)]
    seen = 0
    while stack:
        v, path, depth = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise ValidationError(f"{root}: holds more than {MAX_VALUES:,} values")
        if depth > MAX_DEPTH:
            raise ValidationError(f"{path}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(v, dict):
            for k, item in v.items():
                if not isinstance(k, str | int | float | bool) and k is not None:
                    raise ValidationError(f"{path}: key {show(k)} is not a plain scalar")
                stack.append((item, f"{path}.{path_key(k)}", depth + 1))
        elif isinstance(v, list):
            for i, item in enumerate(v):
                stack.append((item, f"{path}[{i}]", depth + 1))
        elif isinstance(v, bool) or v is None or isinstance(v, str):
            continue
        elif isinstance(v, int):
            if abs(v) > MAX_MAGNITUDE:
                raise ValidationError(f"{path}: {show(v)} is out of range")
        elif isinstance(v, float):
            if not math.isfinite(v):
                raise ValidationError(f"{path}: {v} is not a finite number")
            if abs(v) > MAX_MAGNITUDE:
                raise ValidationError(f"{path}: {v:g} is out of range")
        else:
            raise ValidationError(
                f"{path}: a YAML {type(v).__name__} is not plain data (quote it as a string)"
            )


def path_key(k: object) -> str:
    """A mapping key as a path element, cut to ``SHOW_CHARS``."""
    s = str(k)
    return s if len(s) <= SHOW_CHARS else s[:SHOW_CHARS] + "..."


def _one_line(s: str, limit: int = 200) -> str:
    s = " ".join(s.split())
    return s if len(s) <= limit else s[:limit] + "..."
