"""Parsing ``secrets:`` of a workload spec; problems go to ``add(path, reason)``, all of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cloudless.lib.ids import is_valid_id
from cloudless.model.secrets import ENV_NAME, MAX_SECRET_REFS, SecretRef
from cloudless.model.volumes import Volume, mount_path_problem

Add = Callable[[str, str], None]


def _ref(v: Any, path: str, add: Add) -> SecretRef | None:
    if not isinstance(v, dict):
        add(path, f"expected a mapping with name and path or env, got {type(v).__name__}")
        return None
    for k in v:
        if k not in ("name", "path", "env"):
            add(f"{path}.{k}", "unknown field (known: env, name, path)")
    name, file, env = v.get("name"), v.get("path"), v.get("env")
    ok = True
    if not isinstance(name, str) or not is_valid_id(name):
        add(f"{path}.name", f'{name!r} must be lowercase letters, digits and "-", 1-63 long')
        ok = False
    if (file is None) == (env is None):
        add(path, "needs exactly one of path (a file) or env (a variable)")
        return None
    if file is not None:
        problem = "must be a string" if not isinstance(file, str) else mount_path_problem(file)
        if problem:
            add(f"{path}.path", problem)
            ok = False
    if env is not None and (not isinstance(env, str) or not ENV_NAME.match(env)):
        add(f"{path}.env", f"{env!r} is not an environment variable name (e.g. DB_PASSWORD)")
        ok = False
    if not ok:
        return None
    return SecretRef(str(name), path=str(file or ""), env=str(env or ""))


def parse_secrets(
    v: Any, path: str, add: Add, volumes: tuple[Volume, ...] = ()
) -> tuple[SecretRef, ...]:
    """``volumes``: a secret file may not sit in (or on) one: the mount point would be made
    inside the volume's directory on the node, and the value written to disk."""
    if v is None:
        return ()
    if not isinstance(v, list):
        add(path, f"expected a list, got {type(v).__name__}")
        return ()
    if len(v) > MAX_SECRET_REFS:
        add(path, f"{len(v)} secrets, at most {MAX_SECRET_REFS}")
        return ()
    out: list[SecretRef] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(v):
        ref = _ref(item, f"{path}[{i}]", add)
        if ref is None:
            continue
        where = f"path {ref.path!r}" if ref.path else f"env {ref.env!r}"
        if where in seen:
            add(f"{path}[{i}]", f"{where} is already used by {path}[{seen[where]}]")
            continue
        inside = next(
            (
                vol
                for vol in volumes
                if ref.path and (ref.path + "/").startswith(vol.mount_path.rstrip("/") + "/")
            ),
            None,
        )
        if inside is not None:
            add(
                f"{path}[{i}].path",
                f"{ref.path!r} is inside volume {inside.name!r} (mounted at "
                f"{inside.mount_path}); put secret files outside volumes, e.g. /run/secrets",
            )
            continue
        seen[where] = i
        out.append(ref)
    return tuple(out)


def secret_to_dict(s: SecretRef) -> dict[str, Any]:
    return {"name": s.name, "path": s.path} if s.path else {"name": s.name, "env": s.env}
