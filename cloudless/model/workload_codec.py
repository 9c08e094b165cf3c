"""Parsing workload specs from user input, and back to plain data.

The parser walks the input once and collects every problem as ``path: reason``; it never
stops at the first one and never lets a Python exception escape as a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any, TypeVar

from cloudless.lib.bounded import load_any, path_key, show
from cloudless.lib.errors import ValidationError
from cloudless.lib.ids import is_valid_id
from cloudless.model.health_codec import health_to_dict, parse_health
from cloudless.model.labels import labels_problems, text_problem
from cloudless.model.resources import Resources, parse_cpu, parse_rate, parse_size
from cloudless.model.rollout import UpdatePolicy, parse_update, update_to_dict
from cloudless.model.secrets_codec import parse_secrets, secret_to_dict
from cloudless.model.volumes_codec import parse_node_loss, parse_volumes, volume_to_dict
from cloudless.model.workload import (
    _OP_ALIASES,
    AffinityTerm,
    LabelExpr,
    Operator,
    Placement,
    PublishedPort,
    RestartMode,
    RestartPolicy,
    SpreadConstraint,
    WorkloadAffinity,
    WorkloadSpec,
)

T = TypeVar("T")
MAX_REPLICAS = 10_000
MAX_ARG = 32 * 1024  # one command word, argument or environment value
MAX_ITEMS = 1024  # command words, arguments, environment variables, list entries


class _Problems:
    def __init__(self, stored: bool = False) -> None:
        self.items: list[str] = []
        self.stored = stored

    def add(self, path: str, reason: str) -> None:
        self.items.append(f"{path}: {reason}")

    def rule(self, path: str, reason: str) -> bool:
        """A shape rule (text, label, image, size) that records stored by an earlier version
        may break: a problem in input (True: drop the value), ignored in a stored spec, which
        keeps its value (False)."""
        if self.stored:
            return False
        self.add(path, reason)
        return True

    def rules(self, problems: list[str]) -> None:
        if not self.stored:
            self.items.extend(problems)


def _known(d: dict[str, Any], path: str, allowed: set[str], p: _Problems) -> None:
    for k in d:
        if k not in allowed:
            p.add(f"{path}.{path_key(k)}", f"unknown field (known: {', '.join(sorted(allowed))})")


def _str(v: Any, path: str, p: _Problems, *, required: bool = False) -> str:
    if v is None:
        if required:
            p.add(path, "is required")
        return ""
    if not isinstance(v, str) or (required and not v.strip()):
        p.add(
            path,
            f"{show(v)} is not a non-empty string" if required else f"{show(v)} is not a string",
        )
        return ""
    return v


def _line(v: Any, path: str, p: _Problems, *, required: bool = False) -> str:
    """A short one-line name (a label key or value, a workload, a topology key)."""
    s = _str(v, path, p, required=required)
    why = text_problem(s) if s else None
    if why and p.rule(path, why):
        return ""
    return s


def _arg(v: str, path: str, p: _Problems) -> bool:
    """A command word, argument or environment value: any text but NUL, up to ``MAX_ARG``."""
    if "\x00" in v:
        return not p.rule(path, f"{show(v)} holds a NUL character")
    if len(v) > MAX_ARG:
        return not p.rule(path, f"{show(v)} is longer than {MAX_ARG} characters")
    return True


def _int(v: Any, path: str, p: _Problems, lo: int, hi: int, default: int) -> int:
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        p.add(path, f"{show(v)} is not a whole number")
        return default
    if not lo <= v <= hi:
        p.add(path, f"{show(v)} is out of range [{lo}, {hi}]")
        return default
    return v


def _num(v: Any, path: str, p: _Problems, lo: float, hi: float, default: float) -> float:
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int | float):
        p.add(path, f"{show(v)} is not a number")
        return default
    if not lo <= v <= hi:  # false for NaN too
        p.add(path, f"{show(v)} is out of range [{lo}, {hi}]")
        return default
    return float(v)


def _bool(v: Any, path: str, p: _Problems, default: bool = False) -> bool:
    if v is None:
        return default
    if not isinstance(v, bool):
        p.add(path, f"{show(v)} is not true or false")
        return default
    return v


def _list(v: Any, path: str, p: _Problems) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        p.add(path, f"expected a list, got {type(v).__name__}")
        return []
    if len(v) > MAX_ITEMS and p.rule(path, f"{len(v)} entries is more than {MAX_ITEMS}"):
        return []
    return v


def _map(v: Any, path: str, p: _Problems) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        p.add(path, f"expected a mapping, got {type(v).__name__}")
        return {}
    if len(v) > MAX_ITEMS and p.rule(path, f"{len(v)} entries is more than {MAX_ITEMS}"):
        return {}
    return v


def _strings(
    v: Any, path: str, p: _Problems, check: Callable[[str, str, _Problems], bool] | None = None
) -> tuple[str, ...]:
    """A list of strings (a lone string is a list of one); each passes ``check`` (default:
    one short printable line)."""
    if isinstance(v, str):
        v = [v]
    out = []
    for i, item in enumerate(_list(v, path, p)):
        ip = f"{path}[{i}]"
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            p.add(ip, f"{show(item)} is not a string")
            continue
        text = str(item)
        if check is None:
            why = text_problem(text)
            if why and p.rule(ip, why):
                continue
        elif not check(text, ip, p):
            continue
        out.append(text)
    return tuple(out)


def _str_map(v: Any, path: str, p: _Problems) -> dict[str, str]:
    out = {}
    for k, val in _map(v, path, p).items():
        if isinstance(val, bool) or not isinstance(val, str | int | float):
            p.add(f"{path}.{path_key(k)}", f"{show(val)} is not a string")
        else:
            out[str(k)] = str(val)
    return out


def _labels(v: Any, path: str, p: _Problems) -> MappingProxyType[str, str]:
    out = _str_map(v, path, p)
    p.rules(labels_problems(out, path))
    return MappingProxyType(out)


def _env(v: Any, path: str, p: _Problems) -> MappingProxyType[str, str]:
    out = _str_map(v, path, p)
    for k, val in out.items():
        kp = f"{path}.{path_key(k)}"
        if not k or "=" in k or len(k) > 256 or not k.isprintable():
            p.rule(kp, f"variable name {show(k)} must be 1-256 printable characters without '='")
        else:
            _arg(val, kp, p)
    return MappingProxyType(out)


def _quantity(v: Any, path: str, p: _Problems, parse: Callable[[object], int]) -> int:
    if v is None:
        return 0
    try:
        return parse(v)
    except ValueError as e:
        p.add(path, str(e))
        return 0


def _expr(v: Any, path: str, p: _Problems) -> LabelExpr | None:
    d = _map(v, path, p)
    if not d:
        return None
    _known(d, path, {"key", "operator", "values", "value"}, p)
    key = _line(d.get("key"), f"{path}.key", p, required=True)
    raw_op = d.get("operator", "=" if "value" in d else "in")
    op = _OP_ALIASES.get(str(raw_op).lower()) if isinstance(raw_op, str) else None
    if op is None:
        ops = "=, !=, in, notin, exists, !exists"
        p.add(f"{path}.operator", f"{show(raw_op)} is not an operator (one of {ops})")
        return None
    values = _strings(d.get("values", d.get("value")), f"{path}.values", p)
    if op in (Operator.EQ, Operator.NE) and len(values) != 1:
        p.add(f"{path}.values", f"operator {op.value} needs exactly one value")
        return None
    if op in (Operator.IN, Operator.NOT_IN) and not values:
        p.add(f"{path}.values", f"operator {op.value} needs at least one value")
        return None
    if op in (Operator.EXISTS, Operator.NOT_EXISTS) and values:
        p.add(f"{path}.values", f"operator {op.value} takes no values")
        return None
    return LabelExpr(key, op, values) if key else None


def _exprs(v: Any, path: str, p: _Problems) -> tuple[LabelExpr, ...]:
    if isinstance(v, dict) and "key" not in v:
        # shorthand: {zone: eu-1a, arch: arm64}
        return tuple(LabelExpr(k, Operator.EQ, (val,)) for k, val in _labels(v, path, p).items())
    out = []
    for i, item in enumerate(_list(v, path, p)):
        e = _expr(item, f"{path}[{i}]", p)
        if e:
            out.append(e)
    return tuple(out)


def _terms(v: Any, path: str, p: _Problems, preferred: bool) -> tuple[AffinityTerm, ...]:
    out = []
    for i, item in enumerate(_list(v, path, p)):
        ip = f"{path}[{i}]"
        d = _map(item, ip, p)
        _known(d, ip, {"match", "weight"}, p)
        exprs = _exprs(d.get("match"), f"{ip}.match", p)
        if not exprs:
            p.add(f"{ip}.match", "needs at least one label expression")
            continue
        weight = _int(d.get("weight"), f"{ip}.weight", p, 1, 100, 100 if not preferred else 50)
        out.append(AffinityTerm(exprs, weight))
    return tuple(out)


def _wl_affinity(v: Any, path: str, p: _Problems, anti: bool) -> list[WorkloadAffinity]:
    out = []
    for i, item in enumerate(_list(v, path, p)):
        ip = f"{path}[{i}]"
        d = _map(item, ip, p)
        _known(d, ip, {"workload", "topology_key", "weight"}, p)
        wl = _line(d.get("workload"), f"{ip}.workload", p, required=True)
        key = _line(d.get("topology_key"), f"{ip}.topology_key", p) or "node"
        weight = _int(d.get("weight"), f"{ip}.weight", p, 1, 100, 50)
        if wl:
            out.append(WorkloadAffinity(wl, key, anti, weight))
    return out


def _placement(v: Any, path: str, p: _Problems) -> Placement:
    d = _map(v, path, p)
    fields = {
        "node_selector",
        "affinity",
        "spread",
        "max_per_node",
        "max_per_domain",
        "preferred_regions",
        "preferred_zones",
        "arch",
        "device_classes",
        "min_bandwidth",
        "needs_public",
        "strategy",
        "availability_target",
    }
    _known(d, path, fields, p)
    aff = _map(d.get("affinity"), f"{path}.affinity", p)
    aff_fields = {
        "required_nodes",
        "preferred_nodes",
        "required_workloads",
        "preferred_workloads",
        "required_anti_workloads",
        "preferred_anti_workloads",
    }
    _known(aff, f"{path}.affinity", aff_fields, p)
    ap = f"{path}.affinity"
    req_wl = _wl_affinity(aff.get("required_workloads"), f"{ap}.required_workloads", p, False)
    req_wl += _wl_affinity(
        aff.get("required_anti_workloads"), f"{ap}.required_anti_workloads", p, True
    )
    pref_wl = _wl_affinity(aff.get("preferred_workloads"), f"{ap}.preferred_workloads", p, False)
    pref_wl += _wl_affinity(
        aff.get("preferred_anti_workloads"), f"{ap}.preferred_anti_workloads", p, True
    )
    spread = []
    for i, item in enumerate(_list(d.get("spread"), f"{path}.spread", p)):
        ip = f"{path}.spread[{i}]"
        if isinstance(item, str):
            item = {"topology_key": item}
        sd = _map(item, ip, p)
        _known(sd, ip, {"topology_key", "max_skew"}, p)
        key = _line(sd.get("topology_key"), f"{ip}.topology_key", p, required=True)
        skew = _int(sd.get("max_skew"), f"{ip}.max_skew", p, 1, 1000, 1)
        if key:
            spread.append(SpreadConstraint(key, skew))
    per_domain = []
    domains = _map(d.get("max_per_domain"), f"{path}.max_per_domain", p)
    p.rules(labels_problems({k: "" for k in domains}, f"{path}.max_per_domain"))
    for k, val in domains.items():
        kp = f"{path}.max_per_domain.{path_key(k)}"
        per_domain.append((str(k), _int(val, kp, p, 1, MAX_REPLICAS, 1)))
    return Placement(
        node_selector=_exprs(d.get("node_selector"), f"{path}.node_selector", p),
        required_node_affinity=_terms(aff.get("required_nodes"), f"{ap}.required_nodes", p, False),
        preferred_node_affinity=_terms(
            aff.get("preferred_nodes"), f"{ap}.preferred_nodes", p, True
        ),
        required_workload_affinity=tuple(req_wl),
        preferred_workload_affinity=tuple(pref_wl),
        spread=tuple(spread),
        max_per_node=_int(d.get("max_per_node"), f"{path}.max_per_node", p, 0, MAX_REPLICAS, 0),
        max_per_domain=tuple(per_domain),
        preferred_regions=_strings(d.get("preferred_regions"), f"{path}.preferred_regions", p),
        preferred_zones=_strings(d.get("preferred_zones"), f"{path}.preferred_zones", p),
        arch=_strings(d.get("arch"), f"{path}.arch", p),
        device_classes=_strings(d.get("device_classes"), f"{path}.device_classes", p),
        min_bandwidth_bps=_quantity(d.get("min_bandwidth"), f"{path}.min_bandwidth", p, parse_rate),
        needs_public=_bool(d.get("needs_public"), f"{path}.needs_public", p),
        strategy=_strategy(d.get("strategy"), f"{path}.strategy", p),
        availability_target=_target(d.get("availability_target"), f"{path}.availability_target", p),
    )


#: The placement strategies a spec may name (cloudless.scheduler.config.STRATEGY_NAMES).
STRATEGIES = ("pack", "first_fit", "best_fit", "spread", "score")


def _strategy(v: Any, path: str, p: _Problems) -> str:
    text = _str(v, path, p).strip().lower().replace("-", "_")
    if text and text not in STRATEGIES:
        p.add(path, f"{v!r} is not a strategy (choose one of {', '.join(STRATEGIES)})")
        return ""
    return text


def _target(v: Any, path: str, p: _Problems) -> float:
    """``0.999`` or ``"99.9%"``: strictly between 0 and 1 (0 or absent = no target)."""
    if v is None:
        return 0.0
    raw = v
    if isinstance(v, str) and v.strip().endswith("%"):
        try:
            v = float(v.strip()[:-1]) / 100.0
        except ValueError:
            v = None
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v < 1.0:
        p.add(path, f"{raw!r} is not an availability (a fraction like 0.999 or '99.9%', below 1)")
        return 0.0
    return float(v)


def _restart(v: Any, path: str, p: _Problems) -> RestartPolicy:
    if isinstance(v, str):
        v = {"policy": v}
    d = _map(v, path, p)
    _known(d, path, {"policy", "max_restarts", "backoff", "backoff_max"}, p)
    raw = d.get("policy", "always")
    try:
        mode = RestartMode(str(raw).lower().replace("_", "-"))
    except ValueError:
        p.add(f"{path}.policy", f"{show(raw)} is not one of always, on-failure, never")
        mode = RestartMode.ALWAYS
    return RestartPolicy(
        mode=mode,
        max_restarts=_int(d.get("max_restarts"), f"{path}.max_restarts", p, 0, 1_000_000, 0),
        backoff_base_s=_num(d.get("backoff"), f"{path}.backoff", p, 0.0, 3600.0, 1.0),
        backoff_cap_s=_num(d.get("backoff_max"), f"{path}.backoff_max", p, 0.0, 86400.0, 60.0),
    )


def _resources(v: Any, path: str, p: _Problems) -> Resources:
    d = _map(v, path, p)
    _known(d, path, {"cpu", "memory", "disk", "bandwidth"}, p)
    return Resources(
        cpu_millis=_quantity(d.get("cpu"), f"{path}.cpu", p, parse_cpu),
        memory_bytes=_quantity(d.get("memory"), f"{path}.memory", p, parse_size),
        disk_bytes=_quantity(d.get("disk"), f"{path}.disk", p, parse_size),
        bandwidth_bps=_quantity(d.get("bandwidth"), f"{path}.bandwidth", p, parse_rate),
    )


_TOP = {
    "name",
    "image",
    "command",
    "args",
    "env",
    "resources",
    "replicas",
    "restart",
    "placement",
    "labels",
    "ports",
    "stop_timeout",
    "namespace",
    "health",
    "volumes",
    "on_node_loss",
    "secrets",
    "update",
    "image_pull_secret",
    "configs",
}


def load_document(data: Any) -> Any:
    """YAML or JSON text to plain data within ``cloudless.lib.bounded``'s limits (depth,
    size, alias expansion, finite numbers); a dict passes through. Raises ValidationError."""
    if isinstance(data, bytes | str):
        return load_any(data, "spec")
    return data


def parse_workload_data(data: Any, path: str = "spec", *, stored: bool = False) -> WorkloadSpec:
    """``stored``: a spec this cluster accepted before (a store record, an assignment): the
    shape rules newer than some such records (``_Problems.rule``) do not refuse it."""
    data = load_document(data)
    p = _Problems(stored)
    d = _map(data, path, p)
    if p.items:
        raise ValidationError(p.items)
    _known(d, path, _TOP, p)
    name = _str(d.get("name"), f"{path}.name", p, required=True)
    if name and not is_valid_id(name):
        p.add(f"{path}.name", f'{show(name)} must be lowercase letters, digits and "-", 1-63 long')
    image = _str(d.get("image"), f"{path}.image", p, required=True)
    if image:
        why = image_problem(image)
        if why:
            p.rule(f"{path}.image", why)
    namespace = _str(d.get("namespace", "default"), f"{path}.namespace", p)
    if "namespace" in d and not is_valid_id(namespace):
        p.add(f"{path}.namespace", f'"{namespace}" must be lowercase letters, digits and "-"')
    ports, published = _ports(d.get("ports"), f"{path}.ports", p)
    volumes = parse_volumes(d.get("volumes"), f"{path}.volumes", p.add)
    spec = WorkloadSpec(
        name=name,
        image=image,
        command=_strings(d.get("command"), f"{path}.command", p, _arg),
        args=_strings(d.get("args"), f"{path}.args", p, _arg),
        env=_env(d.get("env"), f"{path}.env", p),
        resources=_resources(d.get("resources"), f"{path}.resources", p),
        replicas=_int(d.get("replicas"), f"{path}.replicas", p, 0, MAX_REPLICAS, 1),
        restart=_restart(d.get("restart"), f"{path}.restart", p),
        placement=_placement(d.get("placement"), f"{path}.placement", p),
        labels=_labels(d.get("labels"), f"{path}.labels", p),
        ports=tuple(ports),
        stop_timeout_s=_num(d.get("stop_timeout"), f"{path}.stop_timeout", p, 0.0, 3600.0, 10.0),
        namespace=namespace or "default",
        health=parse_health(d.get("health"), f"{path}.health", p.add, tuple(ports)),
        volumes=volumes,
        on_node_loss=parse_node_loss(
            d.get("on_node_loss"), f"{path}.on_node_loss", p.add, bool(d.get("volumes"))
        ),
        secrets=parse_secrets(d.get("secrets"), f"{path}.secrets", p.add, volumes),
        update=parse_update(d.get("update"), f"{path}.update", p.add),
        image_pull_secret=_pull_secret(d.get("image_pull_secret"), f"{path}.image_pull_secret", p),
        configs=parse_secrets(d.get("configs"), f"{path}.configs", p.add, volumes),
        published=published,
    )
    _clashes(spec, path, p)
    if spec.update.max_surge and spec.volumes:
        p.add(
            f"{path}.update.max_surge",
            "a workload with volumes rolls in place (each replica keeps its identity and its "
            "volume); remove max_surge, or the volumes",
        )
    if p.items:
        raise ValidationError(p.items)
    return spec


_PORT_KEYS = {"port", "publish"}


def _ports(v: Any, path: str, p: _Problems) -> tuple[list[int], tuple[PublishedPort, ...]]:
    """``ports``: each a container port number, or ``{port: N, publish: M}`` to also publish
    it on the device's port M."""
    ports: list[int] = []
    published: list[PublishedPort] = []
    seen: dict[int, int] = {}
    for i, entry in enumerate(_list(v, path, p)):
        where = f"{path}[{i}]"
        if entry is None:
            p.add(where, "is empty: a port is a number in [1, 65535]")
            continue
        if isinstance(entry, dict):
            _known(entry, where, _PORT_KEYS, p)
            if entry.get("port") is None:
                p.add(f"{where}.port", "is required: the container's port, a number in [1, 65535]")
                continue
            port = _int(entry.get("port"), f"{where}.port", p, 1, 65535, 0)
            host = _int(entry.get("publish"), f"{where}.publish", p, 1, 65535, 0)
            if host:
                if host in seen:
                    p.add(
                        f"{where}.publish",
                        f"device port {host} is already published by {path}[{seen[host]}]",
                    )
                else:
                    seen[host] = i
                    if port:
                        published.append(PublishedPort(port, host))
        else:
            port = _int(entry, where, p, 1, 65535, 0)
        ports.append(port)
    return ports, tuple(published)


def _ports_to_list(s: WorkloadSpec) -> list[Any]:
    hosts: dict[int, list[int]] = {}
    for pp in s.published:
        hosts.setdefault(pp.port, []).append(pp.host_port)
    out: list[Any] = []
    for n in s.ports:
        out.append({"port": n, "publish": hosts[n].pop(0)} if hosts.get(n) else n)
    return out


def _clashes(spec: WorkloadSpec, path: str, p: _Problems) -> None:
    """A config may not take a file path or variable a secret already has."""
    used = {(r.path, r.env): i for i, r in enumerate(spec.secrets)}
    for i, r in enumerate(spec.configs):
        j = used.get((r.path, r.env))
        if j is not None:
            where = f"path {r.path!r}" if r.path else f"env {r.env!r}"
            p.add(f"{path}.configs[{i}]", f"{where} is already used by {path}.secrets[{j}]")


def _pull_secret(v: Any, path: str, p: _Problems) -> str:
    name = _str(v, path, p)
    if name and not is_valid_id(name):
        p.add(path, f'{show(name)} is not a secret name (lowercase letters, digits and "-")')
        return ""
    return name


def image_problem(ref: str) -> str | None:
    """Why ``ref`` is not an image reference under the OCI distribution grammar, or None."""
    from cloudless.runtime.oci.reference import parse_reference

    try:
        parse_reference(ref)
    except ValidationError as e:
        return e.message
    return None


def _expr_dict(e: LabelExpr) -> dict[str, Any]:
    return {"key": e.key, "operator": e.op.value, "values": list(e.values)}


def workload_to_dict(s: WorkloadSpec) -> dict[str, Any]:
    """The canonical plain-data form; ``parse_workload_data(workload_to_dict(s)) == s``."""
    pl = s.placement

    def wl(a: WorkloadAffinity) -> dict[str, Any]:
        return {"workload": a.workload, "topology_key": a.topology_key, "weight": a.weight}

    out: dict[str, Any] = {
        "name": s.name,
        "image": s.image,
        "command": list(s.command),
        "args": list(s.args),
        "env": dict(s.env),
        "resources": {
            "cpu": f"{s.resources.cpu_millis}m",
            "memory": s.resources.memory_bytes,
            "disk": s.resources.disk_bytes,
            "bandwidth": s.resources.bandwidth_bps,
        },
        "replicas": s.replicas,
        "restart": {
            "policy": s.restart.mode.value,
            "max_restarts": s.restart.max_restarts,
            "backoff": s.restart.backoff_base_s,
            "backoff_max": s.restart.backoff_cap_s,
        },
        "placement": {
            "node_selector": [_expr_dict(e) for e in pl.node_selector],
            "affinity": {
                "required_nodes": [
                    {"match": [_expr_dict(e) for e in t.exprs], "weight": t.weight}
                    for t in pl.required_node_affinity
                ],
                "preferred_nodes": [
                    {"match": [_expr_dict(e) for e in t.exprs], "weight": t.weight}
                    for t in pl.preferred_node_affinity
                ],
                "required_workloads": [wl(a) for a in pl.required_workload_affinity if not a.anti],
                "required_anti_workloads": [wl(a) for a in pl.required_workload_affinity if a.anti],
                "preferred_workloads": [
                    wl(a) for a in pl.preferred_workload_affinity if not a.anti
                ],
                "preferred_anti_workloads": [
                    wl(a) for a in pl.preferred_workload_affinity if a.anti
                ],
            },
            "spread": [{"topology_key": c.topology_key, "max_skew": c.max_skew} for c in pl.spread],
            "max_per_node": pl.max_per_node,
            "max_per_domain": dict(pl.max_per_domain),
            "preferred_regions": list(pl.preferred_regions),
            "preferred_zones": list(pl.preferred_zones),
            "arch": list(pl.arch),
            "device_classes": list(pl.device_classes),
            "min_bandwidth": pl.min_bandwidth_bps,
            "needs_public": pl.needs_public,
            "strategy": pl.strategy,
            "availability_target": pl.availability_target,
        },
        "labels": dict(s.labels),
        "ports": _ports_to_list(s),
        "stop_timeout": s.stop_timeout_s,
        "namespace": s.namespace,
    }
    if s.health:  # absent when unset, so agents without health checks still parse the spec
        out["health"] = health_to_dict(s.health)
    if s.volumes:  # likewise
        out["volumes"] = [volume_to_dict(v) for v in s.volumes]
        out["on_node_loss"] = s.on_node_loss.value
    if s.secrets:  # likewise (references only: values never travel in a spec)
        out["secrets"] = [secret_to_dict(r) for r in s.secrets]
    if s.update != UpdatePolicy():  # likewise
        out["update"] = update_to_dict(s.update)
    if s.image_pull_secret:  # likewise
        out["image_pull_secret"] = s.image_pull_secret
    if s.configs:  # likewise
        out["configs"] = [secret_to_dict(r) for r in s.configs]
    return out
