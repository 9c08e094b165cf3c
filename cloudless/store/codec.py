"""Codecs: how a table's values become bytes and back, with a schema version.

Stored form: ``{"schema": <kind>, "v": <version>, "data": <json>}``. Reading checks the kind
and version and decodes; anything wrong is a ``DecodeError`` naming the key, never a crash.
Older versions are upgraded by the codec's ``migrations`` (``{old_version: fn(data)->data}``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from collections.abc import Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from cloudless.store.errors import DecodeError

T = TypeVar("T")
Json = Any
Migration = Callable[[Json], Json]


class Codec(Protocol[T]):
    """``encode`` to JSON-able data and ``decode`` back; ``decode`` raises on bad input
    (any exception; the table turns it into a ``DecodeError`` naming the key)."""

    kind: str
    version: int
    migrations: Mapping[int, Migration]

    def encode(self, value: T) -> Json: ...

    def decode(self, data: Json) -> T: ...


def dump(codec: Codec[T], value: T) -> bytes:
    doc = {"schema": codec.kind, "v": codec.version, "data": codec.encode(value)}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def load(codec: Codec[T], key: str, raw: bytes) -> T:
    """Decode ``raw`` stored at ``key`` or raise ``DecodeError`` saying what is wrong."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise DecodeError(key, f"not JSON ({e})") from None
    if not isinstance(doc, dict) or "v" not in doc or "data" not in doc:
        raise DecodeError(key, "missing the schema envelope {schema, v, data}")
    if doc.get("schema") != codec.kind:
        raise DecodeError(key, f"holds a {doc.get('schema')!r}, expected {codec.kind!r}")
    v = doc["v"]
    if not isinstance(v, int) or v < 1:
        raise DecodeError(key, f"schema version {v!r} is not a positive integer")
    if v > codec.version:
        raise DecodeError(
            key,
            f"written with {codec.kind} schema v{v}, this build reads up to v{codec.version}; "
            "upgrade this coordinator",
        )
    data = doc["data"]
    while v < codec.version:
        step = codec.migrations.get(v)
        if step is None:
            raise DecodeError(key, f"no migration from {codec.kind} schema v{v}")
        try:
            data = step(data)
        except Exception as e:
            raise DecodeError(key, f"migration from v{v} failed: {e}") from None
        v += 1
    try:
        return codec.decode(data)
    except Exception as e:
        raise DecodeError(key, f"{codec.kind} v{v}: {type(e).__name__}: {e}") from None


class DictCodec:
    """Plain JSON objects (``dict``), optionally with required fields checked on read."""

    def __init__(
        self,
        kind: str,
        *,
        version: int = 1,
        required: tuple[str, ...] = (),
        migrations: Mapping[int, Migration] | None = None,
    ) -> None:
        self.kind = kind
        self.version = version
        self.required = required
        self.migrations: Mapping[int, Migration] = migrations or {}

    def encode(self, value: dict[str, Any]) -> Json:
        return value

    def decode(self, data: Json) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise TypeError(f"expected an object, got {type(data).__name__}")
        missing = [f for f in self.required if f not in data]
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}")
        return data


D = TypeVar("D")


class DataclassCodec(Generic[D]):
    """A (frozen) dataclass whose fields are JSON types, nested dataclasses, or tuples of them.

    Unknown fields are refused on read (they mean a newer schema without a version bump),
    unless ``ignore_unknown``: for a record its writer rewrites often (a heartbeat, a
    registration), which a node of a newer version may extend while older readers still
    read what they know. Missing fields fall back to the dataclass defaults. ``omit_default``:
    top-level fields written only when they differ from their default, so a record that does
    not use fields added later reads unchanged on a node from before them.
    """

    def __init__(
        self,
        cls: type[D],
        *,
        kind: str | None = None,
        version: int = 1,
        migrations: Mapping[int, Migration] | None = None,
        ignore_unknown: bool = False,
        omit_default: tuple[str, ...] = (),
    ) -> None:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls!r} is not a dataclass")
        self.cls = cls
        self.ignore_unknown = ignore_unknown
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name in omit_default:
            if name not in fields or fields[name].default is dataclasses.MISSING:
                raise ValueError(f"{cls.__name__}.{name}: not a field with a plain default")
        self.omit_default = {n: fields[n].default for n in omit_default}
        self.kind = kind or cls.__name__
        self.version = version
        self.migrations: Mapping[int, Migration] = migrations or {}

    def encode(self, value: D) -> Json:
        data: dict[str, Json] = dataclasses.asdict(value)  # type: ignore[call-overload]
        for name, default in self.omit_default.items():
            if name in data and data[name] == default:
                del data[name]
        return data

    def decode(self, data: Json) -> D:
        if not isinstance(data, dict):
            raise TypeError(f"expected an object, got {type(data).__name__}")
        return _build(self.cls, data, self.ignore_unknown)  # type: ignore[no-any-return]


@functools.cache
def _type_hints(tp: type) -> dict[str, Any]:
    """A dataclass's resolved field types (resolving them is most of a record's decode)."""
    return typing.get_type_hints(tp)


def _build(tp: Any, data: Json, ignore_unknown: bool = False) -> Any:
    """Rebuild nested dataclasses and tuples from JSON (``asdict`` flattens them)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(data, dict):
            raise TypeError(f"{tp.__name__}: expected an object, got {type(data).__name__}")
        hints = _type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        unknown = sorted(set(data) - names)
        if unknown and not ignore_unknown:
            raise ValueError(f"{tp.__name__}: unknown field(s) {', '.join(unknown)}")
        return tp(
            **{
                k: _build(hints.get(k, Any), v, ignore_unknown)
                for k, v in data.items()
                if k in names
            }
        )
    if origin is tuple and isinstance(data, list):
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_build(args[0], x, ignore_unknown) for x in data)
        return tuple(_build(a, x, ignore_unknown) for a, x in zip(args, data, strict=False))
    return data


class PydanticCodec(Generic[D]):
    """A pydantic v2 model: ``model_dump(mode="json")`` / ``model_validate`` (validates)."""

    def __init__(
        self,
        model: type[D],
        *,
        kind: str | None = None,
        version: int = 1,
        migrations: Mapping[int, Migration] | None = None,
    ) -> None:
        self.model = model
        self.kind = kind or model.__name__
        self.version = version
        self.migrations: Mapping[int, Migration] = migrations or {}

    def encode(self, value: D) -> Json:
        return value.model_dump(mode="json")  # type: ignore[attr-defined]

    def decode(self, data: Json) -> D:
        return self.model.model_validate(data)  # type: ignore[attr-defined,no-any-return]
