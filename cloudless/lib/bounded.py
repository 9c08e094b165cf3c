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
MAX_VALUES = 10_000  # a large spec holds a few hundred
MAX_MAGNITUDE = 2**63 - 1
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


def load_json(data: bytes | str, root: str = "body") -> Any:
    """Parse JSON text under the module's bounds; ``root`` names the document in errors."""
    if isinstance(data, bytes):
        try:
            data = data.decode()
        except UnicodeDecodeError:
            raise ValidationError(f"{root}: is not UTF-8 text") from None
    try:
        # NaN, Infinity and 1e999 parse to floats that check_plain refuses by path; a
        # numeral past Python's digit limit is a ValueError here.
        doc = json.loads(data)
    except RecursionError:
        raise ValidationError(f"{root}: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:  # JSONDecodeError, an integer past the digit limit
        raise ValidationError(f"{root}: is not valid JSON ({_one_line(str(e))})") from None
    check_plain(doc, root)
    return doc


# libyaml's parser when PyYAML was built with it (the wheels are): ~10x faster than PyYAML's
# pure-Python one, which took seconds for a 1 MiB body.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_OPEN = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSE = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def _check_events(text: str) -> None:
    """Refuse nesting past ``MAX_DEPTH`` and more than ``MAX_VALUES`` values, each alias
    counted as the size of what it names, from the parser's events: before anything is
    composed or constructed, and stopping at the first value past the bound."""
    count = 0
    sizes: dict[str, int] = {}  # anchor -> how many values it stands for
    open_: list[tuple[str | None, int]] = []  # (anchor, count when opened)
    for ev in yaml.parse(text, Loader=_Loader):
        if isinstance(ev, _OPEN):
            count += 1
            open_.append((ev.anchor, count))
            if len(open_) > MAX_DEPTH:
                raise ValidationError(f"nested deeper than {MAX_DEPTH} levels")
        elif isinstance(ev, _CLOSE):
            anchor, start = open_.pop()
            if anchor is not None:
                sizes[anchor] = count - start + 1
        elif isinstance(ev, yaml.ScalarEvent):
            count += 1
            if ev.anchor is not None:
                sizes[ev.anchor] = 1
        elif isinstance(ev, yaml.AliasEvent):
            count += sizes.get(ev.anchor or "", 1)  # an unknown anchor: the loader refuses it
        if count > MAX_VALUES:
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
    loader = None
    try:
        _check_events(data)
        loader = _Loader(data)
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
