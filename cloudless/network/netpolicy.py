"""Network policy: which workloads may connect to which, by namespace and labels (pure).

A policy selects workloads (``namespace`` and ``selector``) and gives them ingress rules
(which connections they accept) and/or egress rules (which connections they may start); a
rule allows or denies, optionally only some ports::

    name: db-from-web
    namespace: db
    selector: {app: db}            # optional; default every workload in the namespace
    ingress:
      - action: allow              # or deny
        from: [{namespace: web, selector: {tier: front}}]   # namespace "*": any
        ports: [{port: 5432, protocol: tcp}]               # optional; default every port
    egress:
      - action: allow
        to: [{namespace: db}, {cidr: 203.0.113.0/24}]      # workloads, or IPv4 networks
        ports: [{port: 443}]

**Ingress** -- a connection from workload S to workload D on (protocol, port), in order:

1. a ``deny`` rule of a policy selecting D that matches S and the port: **denied**;
2. an ``allow`` rule of a policy selecting D that matches S and the port: **allowed**;
3. S and D in the same namespace: **allowed** (default allow within a namespace);
4. otherwise **denied** (default deny across namespaces).

**Egress** -- a connection S starts to an address A (a workload D's, or outside the cluster):

1. no policy with egress rules selects S: **allowed** (egress is open by default);
2. a ``deny`` egress rule of a policy selecting S that matches A (D, or a network holding A)
   and the port: **denied**;
3. an ``allow`` egress rule that matches: **allowed**;
4. otherwise **denied** (S is egress-limited: only what its rules allow).

A connection between workloads needs both: S's egress and D's ingress (``decide_both``).

``decide`` (ingress) and ``decide_egress`` return the verdict with the reason naming the policy
and rule (or the default). ``parse_policy`` validates a document and names every problem's
field; nothing is partial. ``netpolicy_nft.render`` compiles the same rules to nftables for
one device.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cloudless.lib.errors import ValidationError

ACTIONS = ("allow", "deny")
PROTOCOLS = ("tcp", "udp")
ANY_NAMESPACE = "*"
_PAST = {"allow": "allowed", "deny": "denied"}
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_LABEL_KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$")


@dataclass(frozen=True)
class Peer:
    """Workloads in ``namespace`` ("*": any) whose labels include every ``selector`` pair."""

    namespace: str
    selector: tuple[tuple[str, str], ...] = ()

    def matches(self, w: WorkloadRef) -> bool:
        if self.namespace not in (ANY_NAMESPACE, w.namespace):
            return False
        return all(w.labels.get(k) == v for k, v in self.selector)


@dataclass(frozen=True)
class PortRef:
    port: int
    protocol: str = "tcp"


@dataclass(frozen=True)
class Rule:
    """``sources``: the peers (``from`` of an ingress rule, ``to`` of an egress rule);
    ``blocks``: IPv4 networks (egress rules only)."""

    action: str
    sources: tuple[Peer, ...]
    ports: tuple[PortRef, ...] = ()  # empty: every port and protocol
    blocks: tuple[str, ...] = ()

    def covers(self, protocol: str, port: int) -> bool:
        return not self.ports or PortRef(port, protocol) in self.ports

    def reaches(self, ip: str, dst: WorkloadRef | None) -> bool:
        """Whether this (egress) rule names the destination ``ip`` (workload ``dst``)."""
        if dst is not None and any(p.matches(dst) for p in self.sources):
            return True
        addr = ipaddress.IPv4Address(ip)
        return any(addr in ipaddress.IPv4Network(b) for b in self.blocks)


@dataclass(frozen=True)
class NetworkPolicy:
    name: str
    namespace: str
    selector: tuple[tuple[str, str], ...]
    ingress: tuple[Rule, ...]
    egress: tuple[Rule, ...] = ()

    def selects(self, w: WorkloadRef) -> bool:
        return Peer(self.namespace, self.selector).matches(w)


@dataclass(frozen=True)
class WorkloadRef:
    name: str
    namespace: str
    labels: Mapping[str, str]

    def __hash__(self) -> int:  # a workload is its namespace and name
        return hash((self.namespace, self.name))


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str


def decide(
    src: WorkloadRef,
    dst: WorkloadRef,
    protocol: str,
    port: int,
    policies: Iterable[NetworkPolicy],
) -> Verdict:
    """The rules of the module docstring, in order."""
    applying = [p for p in sorted(policies, key=lambda p: p.name) if p.selects(dst)]
    for action in ("deny", "allow"):
        for p in applying:
            for i, rule in enumerate(p.ingress):
                if rule.action != action or not rule.covers(protocol, port):
                    continue
                if any(peer.matches(src) for peer in rule.sources):
                    return Verdict(
                        action == "allow",
                        f"{_PAST[action]} by policy {p.name} (ingress[{i}]): "
                        f"{src.namespace}/{src.name} -> {dst.namespace}/{dst.name} "
                        f"{protocol}/{port}",
                    )
    if src.namespace == dst.namespace:
        return Verdict(True, f"same namespace {dst.namespace}: allowed by default")
    return Verdict(
        False,
        f"{src.namespace}/{src.name} -> {dst.namespace}/{dst.name}: other namespaces are "
        f"denied by default; a policy in namespace {dst.namespace} must allow it",
    )


def decide_egress(
    src: WorkloadRef,
    ip: str,
    dst: WorkloadRef | None,
    protocol: str,
    port: int,
    policies: Iterable[NetworkPolicy],
) -> Verdict:
    """Egress rules of the module docstring, in order; ``dst``: the workload at ``ip``
    (``None``: an address outside the cluster's workloads)."""
    limiting = [p for p in sorted(policies, key=lambda p: p.name) if p.egress and p.selects(src)]
    target = f"{dst.namespace}/{dst.name} ({ip})" if dst is not None else ip
    if not limiting:
        return Verdict(True, f"no egress policy selects {src.namespace}/{src.name}: open")
    for action in ("deny", "allow"):
        for p in limiting:
            for i, rule in enumerate(p.egress):
                if rule.action != action or not rule.covers(protocol, port):
                    continue
                if rule.reaches(ip, dst):
                    return Verdict(
                        action == "allow",
                        f"{_PAST[action]} by policy {p.name} (egress[{i}]): "
                        f"{src.namespace}/{src.name} -> {target} {protocol}/{port}",
                    )
    names = ", ".join(p.name for p in limiting)
    return Verdict(
        False,
        f"{src.namespace}/{src.name} -> {target} {protocol}/{port}: egress is limited by "
        f"{names} and no egress rule allows it",
    )


def decide_both(
    src: WorkloadRef,
    dst: WorkloadRef,
    ip: str,
    protocol: str,
    port: int,
    policies: Iterable[NetworkPolicy],
) -> Verdict:
    """A connection between two workloads: the source's egress, then the destination's
    ingress (the first refusal is the answer)."""
    pols = list(policies)
    out = decide_egress(src, ip, dst, protocol, port, pols)
    return out if not out.allowed else decide(src, dst, protocol, port, pols)


def policy_to_dict(p: NetworkPolicy) -> dict[str, Any]:
    """The document ``parse_policy`` reads back as ``p`` (stored, and answered by the API)."""
    doc: dict[str, Any] = {"name": p.name, "namespace": p.namespace}
    if p.selector:
        doc["selector"] = dict(p.selector)
    for direction, key, rules in (("ingress", "from", p.ingress), ("egress", "to", p.egress)):
        if not rules:
            continue
        out = []
        for r in rules:
            rule: dict[str, Any] = {
                "action": r.action,
                key: [
                    {
                        "namespace": peer.namespace,
                        **({"selector": dict(peer.selector)} if peer.selector else {}),
                    }
                    for peer in r.sources
                ]
                + [{"cidr": b} for b in r.blocks],
            }
            if r.ports:
                rule["ports"] = [{"port": pr.port, "protocol": pr.protocol} for pr in r.ports]
            out.append(rule)
        doc[direction] = out
    return doc


# ---- parsing ----------------------------------------------------------------------------


def parse_policy(doc: Any) -> NetworkPolicy:
    """A validated policy, or ``ValidationError`` listing every problem by its field."""
    problems: list[str] = []
    if not isinstance(doc, dict):
        raise ValidationError(
            "policy: expected a mapping with name, namespace and ingress and/or egress"
        )
    _unknown(doc, ("name", "namespace", "selector", "ingress", "egress"), "", problems)
    name = doc.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append(f"name: {name!r} must be a DNS label (a-z, 0-9, '-')")
    ns = doc.get("namespace", "default")
    if not isinstance(ns, str) or not _NAME.match(ns):
        problems.append(f"namespace: {ns!r} must be a DNS label (a-z, 0-9, '-')")
    selector = _selector(doc.get("selector"), "selector", problems)
    parsed: dict[str, list[Rule]] = {"ingress": [], "egress": []}
    if "ingress" not in doc and "egress" not in doc:
        problems.append("ingress: a non-empty list of rules is required (or egress)")
    for direction in ("ingress", "egress"):
        if direction not in doc:
            continue
        raw_rules = doc[direction]
        if not isinstance(raw_rules, list) or not raw_rules:
            problems.append(f"{direction}: a non-empty list of rules is required")
            continue
        for i, r in enumerate(raw_rules):
            rule = _rule(r, f"{direction}[{i}]", problems, egress=direction == "egress")
            if rule is not None:
                parsed[direction].append(rule)
    if problems:
        raise ValidationError(problems)
    assert isinstance(name, str) and isinstance(ns, str)
    return NetworkPolicy(name, ns, selector, tuple(parsed["ingress"]), tuple(parsed["egress"]))


def _unknown(d: dict[str, Any], known: tuple[str, ...], at: str, problems: list[str]) -> None:
    for k in d:
        if k not in known:
            problems.append(f"{at}{k}: unknown field (known: {', '.join(known)})")


def _selector(raw: Any, at: str, problems: list[str]) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        problems.append(f"{at}: expected a mapping of label to value")
        return ()
    out = []
    for k, v in raw.items():
        if not isinstance(k, str) or not _LABEL_KEY.match(k):
            problems.append(f"{at}.{k}: {k!r} is not a label key")
        elif not isinstance(v, str) or not _LABEL_VALUE.match(v):
            problems.append(f"{at}.{k}: {v!r} is not a label value (a string)")
        else:
            out.append((k, v))
    return tuple(sorted(out))


def _rule(raw: Any, at: str, problems: list[str], *, egress: bool = False) -> Rule | None:
    key = "to" if egress else "from"
    if not isinstance(raw, dict):
        problems.append(f"{at}: expected a mapping with action, {key} and ports")
        return None
    _unknown(raw, ("action", key, "ports"), f"{at}.", problems)
    action = raw.get("action", "allow")
    if action not in ACTIONS:
        problems.append(f"{at}.action: {action!r} is not one of allow, deny")
    raw_peers = raw.get(key)
    peers: list[Peer] = []
    blocks: list[str] = []
    what = "{namespace, selector} or {cidr}" if egress else "{namespace, selector}"
    if not isinstance(raw_peers, list) or not raw_peers:
        problems.append(f"{at}.{key}: a non-empty list of {what} is required")
    else:
        for j, p in enumerate(raw_peers):
            where = f"{at}.{key}[{j}]"
            if not isinstance(p, dict) or not p:
                problems.append(f"{where}: expected a mapping with {what}")
                continue
            if "cidr" in p:
                block = _cidr(p, where, egress, problems)
                if block:
                    blocks.append(block)
                continue
            _unknown(
                p, ("namespace", "selector", *(("cidr",) if egress else ())), f"{where}.", problems
            )
            pns = p.get("namespace", ANY_NAMESPACE if "selector" in p else None)
            if pns != ANY_NAMESPACE and (not isinstance(pns, str) or not _NAME.match(pns)):
                problems.append(f"{where}.namespace: {pns!r} must be a DNS label or '*'")
                continue
            peers.append(Peer(pns, _selector(p.get("selector"), f"{where}.selector", problems)))
    ports: list[PortRef] = []
    raw_ports = raw.get("ports", [])
    if not isinstance(raw_ports, list):
        problems.append(f"{at}.ports: expected a list of {{port, protocol}}")
        raw_ports = []
    for j, p in enumerate(raw_ports):
        where = f"{at}.ports[{j}]"
        if not isinstance(p, dict):
            problems.append(f"{where}: expected a mapping with port and protocol")
            continue
        _unknown(p, ("port", "protocol"), f"{where}.", problems)
        port, proto = p.get("port"), p.get("protocol", "tcp")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            problems.append(f"{where}.port: {port!r} must be a whole number in 1..65535")
        elif proto not in PROTOCOLS:
            problems.append(f"{where}.protocol: {proto!r} is not one of tcp, udp")
        else:
            ports.append(PortRef(port, proto))
    if action not in ACTIONS:
        return None
    return Rule(action, tuple(peers), tuple(dict.fromkeys(ports)), tuple(dict.fromkeys(blocks)))


def _cidr(p: dict[str, Any], where: str, egress: bool, problems: list[str]) -> str | None:
    if not egress:
        problems.append(
            f"{where}.cidr: only egress rules take networks (ingress is policed by the "
            "sending workload's address)"
        )
        return None
    extra = sorted(set(p) - {"cidr"})
    if extra:
        problems.append(f"{where}: cidr stands alone (remove {', '.join(extra)})")
        return None
    raw = p["cidr"]
    try:
        net = ipaddress.IPv4Network(raw, strict=True) if isinstance(raw, str) else None
    except ValueError as e:
        problems.append(f"{where}.cidr: {raw!r} is not an IPv4 network ({e})")
        return None
    if net is None:
        problems.append(f"{where}.cidr: {raw!r} must be a string like 203.0.113.0/24")
        return None
    return str(net)
