"""Parsing ``volumes:`` and ``on_node_loss:`` of a workload spec, and back to plain data.

Problems go to ``add(path, reason)``, all of them, like the rest of the spec parser.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cloudless.lib.ids import is_valid_id
from cloudless.model.resources import parse_size
from cloudless.model.volumes import (
    MAX_VOLUME_BYTES,
    MAX_VOLUMES,
    NodeLoss,
    Volume,
    mount_path_problem,
)

Add = Callable[[str, str], None]
_FIELDS = {"name", "mount_path", "size", "read_only"}


def _volume(v: Any, path: str, add: Add) -> Volume | None:
    if not isinstance(v, dict):
        add(path, f"expected a mapping with name and mount_path, got {type(v).__name__}")
        return None
    for k in v:
        if k not in _FIELDS:
            add(f"{path}.{k}", f"unknown field (known: {', '.join(sorted(_FIELDS))})")
    ok = True
    name = v.get("name")
    if not isinstance(name, str) or not is_valid_id(name):
        add(f"{path}.name", f'{name!r} must be lowercase letters, digits and "-", 1-63 long')
        ok = False
    mount = v.get("mount_path")
    if not isinstance(mount, str):
        add(f"{path}.mount_path", "is required (an absolute path inside the container)")
        ok = False
    elif (problem := mount_path_problem(mount)) is not None:
        add(f"{path}.mount_path", problem)
        ok = False
    size = 0
    if v.get("size") is not None:
        try:
            size = parse_size(v["size"])
        except ValueError as e:
            add(f"{path}.size", str(e))
            ok = False
        else:
            if size > MAX_VOLUME_BYTES:
                add(f"{path}.size", f"{size} bytes is over the {MAX_VOLUME_BYTES >> 40}Ti limit")
                ok = False
    read_only = v.get("read_only", False)
    if not isinstance(read_only, bool):
        add(f"{path}.read_only", f"{read_only!r} is not true or false")
        ok = False
    if not ok:
        return None
    assert isinstance(name, str) and isinstance(mount, str)
    return Volume(name, mount, size, read_only)


def parse_volumes(v: Any, path: str, add: Add) -> tuple[Volume, ...]:
    if v is None:
        return ()
    if not isinstance(v, list):
        add(path, f"expected a list, got {type(v).__name__}")
        return ()
    if len(v) > MAX_VOLUMES:
        add(path, f"{len(v)} volumes, at most {MAX_VOLUMES}")
        return ()
    out: list[Volume] = []
    names: dict[str, int] = {}
    mounts: dict[str, int] = {}
    for i, item in enumerate(v):
        vol = _volume(item, f"{path}[{i}]", add)
        if vol is None:
            continue
        if vol.name in names:
            add(
                f"{path}[{i}].name",
                f"{vol.name!r} is already the name of {path}[{names[vol.name]}]",
            )
            continue
        if vol.mount_path in mounts:
            add(
                f"{path}[{i}].mount_path",
                f"{vol.mount_path!r} is already the mount path of {path}[{mounts[vol.mount_path]}]",
            )
            continue
        names[vol.name], mounts[vol.mount_path] = i, i
        out.append(vol)
    return tuple(out)


def parse_node_loss(v: Any, path: str, add: Add, has_volumes: bool) -> NodeLoss:
    if v is None:
        return NodeLoss.WAIT
    try:
        mode = NodeLoss(str(v).lower())
    except ValueError:
        add(path, f"{v!r} is not one of wait, recreate")
        return NodeLoss.WAIT
    if not has_volumes:
        add(path, "applies only to workloads with volumes")
    return mode


def volume_to_dict(v: Volume) -> dict[str, Any]:
    return {
        "name": v.name,
        "mount_path": v.mount_path,
        "size": v.size_bytes,
        "read_only": v.read_only,
    }
