"""Loading a rendered table into the kernel (``nft -f``) and reading back what is programmed.

Contract of ``RuleTable`` (passed by ``NftApplier`` and ``FakeNftTable``):

* ``apply(document)`` replaces the table in one transaction. A document the kernel (or nft)
  refuses raises NetworkEdgeError quoting nft's message, and the table programmed before stays
  exactly as it was: nothing half-applied.
* ``programmed()`` is what packets see now: ``"<vip> <proto> <port>"`` -> sorted
  ``"ip:port"`` endpoints (an empty list for a VIP port that refuses connections); empty when
  the table is absent.
* ``remove()`` deletes the table and only it; idempotent.
* ``flush_conntrack(argvs)`` runs ``conntrack -D`` deletions; "no entry" is not an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cloudless.lib.waits import within
from cloudless.network.errors import NetworkEdgeError
from cloudless.network.netpolicy_nft import TABLE as POLICY_TABLE
from cloudless.network.netpolicy_nft import delete_document as delete_policy_document
from cloudless.network.nft import TABLE, delete_document

Programmed = dict[str, list[str]]
CONNTRACK_PARALLEL = 4


class RuleTable(Protocol):
    async def apply(self, document: str) -> None: ...

    async def programmed(self) -> Programmed: ...

    async def remove(self) -> None: ...

    async def flush_conntrack(self, argvs: Sequence[Sequence[str]]) -> int: ...


async def _run(
    argv: Sequence[str], stdin: str | None = None, timeout: float = 30.0
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await within(
            timeout, proc.communicate(stdin.encode() if stdin is not None else None)
        )
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise NetworkEdgeError(f"`{' '.join(argv)}` took over {timeout}s") from None
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


class NftApplier:
    """The real edge; ``host_argv`` prefixes each command (a namespace, in tests)."""

    def __init__(self, table: str = TABLE, host_argv: Sequence[str] = ()) -> None:
        self.table = table
        self.host_argv = list(host_argv)

    async def apply(self, document: str) -> None:
        rc, _, err = await _run([*self.host_argv, "nft", "-f", "-"], document)
        if rc != 0:
            raise NetworkEdgeError(f"nft refused the {self.table} table: {err.strip()[:2000]}")

    async def remove(self) -> None:
        rc, _, err = await _run([*self.host_argv, "nft", "-f", "-"], delete_document(self.table))
        if rc != 0:
            raise NetworkEdgeError(f"nft could not delete table {self.table}: {err.strip()}")

    async def programmed(self) -> Programmed:
        rc, out, err = await _run([*self.host_argv, "nft", "-j", "list", "table", "ip", self.table])
        if rc != 0:
            if "No such file" in err:
                return {}
            raise NetworkEdgeError(f"nft could not list table {self.table}: {err.strip()}")
        return _from_json(json.loads(out))

    async def flush_conntrack(self, argvs: Sequence[Sequence[str]]) -> int:
        """Runs the deletions a few at a time (each ``conntrack -D`` walks the whole table)."""
        limit = asyncio.Semaphore(CONNTRACK_PARALLEL)

        async def one(argv: Sequence[str]) -> int:
            async with limit:
                rc, _, err = await _run([*self.host_argv, *argv])
            # conntrack exits 1 with "0 flow entries have been deleted" when none matched
            m = re.search(r"(\d+) flow entr", err)
            if m:
                return int(m.group(1))
            if rc != 0:
                raise NetworkEdgeError(f"`{' '.join(argv)}` failed: {err.strip()}")
            return 0

        return sum(await asyncio.gather(*(one(a) for a in argvs)))


class PolicyTable(Protocol):
    """The device's ``inet`` policy table (``netpolicy_nft``): ``apply`` replaces it in one
    transaction (a refused document raises NetworkEdgeError and leaves the old table as it
    was), ``remove`` deletes it and only it (idempotent), ``destinations()`` lists the
    addresses it polices now (sorted; empty when absent). ``document`` is what was last
    applied ("" after ``remove``)."""

    document: str

    async def apply(self, document: str) -> None: ...

    async def remove(self) -> None: ...

    async def destinations(self) -> list[str]: ...


class NftPolicyTable:
    """The real ``PolicyTable``; ``host_argv`` prefixes each command (a namespace, in tests).

    With ``bridge``, ``apply`` also makes that bridge hand its IPv4 frames to netfilter
    (``nf_call_iptables``, for this bridge only; the kernel's ``br_netfilter`` is loaded
    first if it is a module), so traffic between two containers on it passes the table's
    forward hook (and conntrack) like routed traffic."""

    def __init__(
        self,
        table: str = POLICY_TABLE,
        host_argv: Sequence[str] = (),
        bridge: str | None = None,
    ) -> None:
        self.table = table
        self.host_argv = list(host_argv)
        self.bridge = bridge
        self.document = ""

    async def apply(self, document: str) -> None:
        rc, _, err = await _run([*self.host_argv, "nft", "-f", "-"], document)
        if rc != 0:
            raise NetworkEdgeError(f"nft refused the {self.table} table: {err.strip()[:2000]}")
        self.document = document
        if self.bridge is not None:
            # the switch only works with the kernel's br_netfilter: load it if it is a module
            with contextlib.suppress(OSError):  # no modprobe: built in, or not available
                await _run([*self.host_argv, "modprobe", "-q", "br_netfilter"])
            argv = ["ip", "link", "set", self.bridge, "type", "bridge", "nf_call_iptables", "1"]
            rc, _, err = await _run([*self.host_argv, *argv])
            if rc != 0:
                raise NetworkEdgeError(
                    f"bridge {self.bridge}: could not hand its frames to netfilter "
                    f"(nf_call_iptables): {err.strip()}; containers on it are not policed "
                    "between each other"
                )

    async def remove(self) -> None:
        rc, _, err = await _run(
            [*self.host_argv, "nft", "-f", "-"], delete_policy_document(self.table)
        )
        if rc != 0:
            raise NetworkEdgeError(f"nft could not delete table {self.table}: {err.strip()}")
        self.document = ""

    async def destinations(self) -> list[str]:
        argv = [*self.host_argv, "nft", "-j", "list", "map", "inet", self.table, "by_destination"]
        rc, out, err = await _run(argv)
        if rc != 0:
            if "No such file" in err:
                return []
            raise NetworkEdgeError(f"nft could not list table {self.table}: {err.strip()}")
        found: list[str] = []
        for item in json.loads(out).get("nftables", []):
            if "map" in item:
                found += [e[0] for e in _elems(item["map"]) if isinstance(e, list)]
        return sorted(found, key=_ip_key)


_POLICY_ELEM = re.compile(r"^(\d+\.\d+\.\d+\.\d+) : (goto to_|jump from_)\d+$")


def _ip_key(ip: str) -> tuple[int, ...]:
    return tuple(int(x) for x in ip.split("."))


class FakePolicyTable:
    """In-memory ``PolicyTable`` for the documents ``netpolicy_nft`` writes: it refuses a
    document that is not a whole-table replacement of ``table``, has unbalanced braces or a
    map element that is not ``<IPv4> : goto to_<n>`` (ingress) or ``jump from_<n>`` (egress);
    ``destinations`` are the ingress ones."""

    def __init__(self, table: str = POLICY_TABLE) -> None:
        self.table = table
        self.document = ""
        self.applied = 0
        self._destinations: list[str] = []

    async def apply(self, document: str) -> None:
        lines = [ln.strip() for ln in document.splitlines()]
        if lines[:2] != [f"table inet {self.table}", f"delete table inet {self.table}"]:
            raise NetworkEdgeError("nft refused the table: not a whole-table replacement")
        if document.count("{") != document.count("}"):
            raise NetworkEdgeError("nft refused the table: unbalanced braces")
        found: list[str] = []
        for ln in lines:
            if ln.startswith("elements = {"):
                for e in ln.removeprefix("elements = {").removesuffix("}").split(","):
                    m = _POLICY_ELEM.match(e.strip())
                    if m is None or any(int(x) > 255 for x in m.group(1).split(".")):
                        raise NetworkEdgeError(f"nft refused the table: {e.strip()!r}")
                    if m.group(2) == "goto to_":
                        found.append(m.group(1))
        self.document = document
        self._destinations = sorted(found, key=_ip_key)
        self.applied += 1

    async def remove(self) -> None:
        self.document = ""
        self._destinations = []

    async def destinations(self) -> list[str]:
        return list(self._destinations)


def _elems(node: dict[str, Any]) -> list[Any]:
    e = node.get("elem", [])
    return e if isinstance(e, list) else [e]


def _key(concat: Any) -> str:
    vip, proto, port = concat["concat"]
    return f"{vip} {proto} {port}"


def _dnat_targets(addr: Any) -> list[str]:
    """The endpoint addresses of a ``dnat to`` expression: one address, or the values of the
    anonymous map its picker indexes."""
    if isinstance(addr, str):
        return [addr]
    data = addr.get("map", {}).get("data", {})
    arms = data.get("set", []) if isinstance(data, dict) else []
    out = []
    for arm in arms:
        if isinstance(arm, list) and len(arm) == 2 and isinstance(arm[1], str):
            out.append(arm[1])
    return out


def _from_json(doc: dict[str, Any]) -> Programmed:
    svc_chains: dict[str, list[str]] = {}  # chain -> keys
    dnat: dict[str, list[str]] = {}  # chain -> endpoint addresses
    out: Programmed = {}
    for item in doc.get("nftables", []):
        if "map" in item and item["map"]["name"] == "services":
            for k, v in _elems(item["map"]):
                svc_chains.setdefault(v["goto"]["target"], []).append(_key(k))
        elif "set" in item and item["set"]["name"] == "no_endpoints":
            for k in _elems(item["set"]):
                out[_key(k)] = []
        elif "rule" in item:
            for e in item["rule"]["expr"]:
                if "dnat" in e:
                    dnat[item["rule"]["chain"]] = _dnat_targets(e["dnat"]["addr"])
    for chain, keys in svc_chains.items():
        for key in keys:
            port = key.rsplit(" ", 1)[1]
            out[key] = sorted(f"{ip}:{port}" for ip in dnat.get(chain, []))
    return out


_IP = r"\d+\.\d+\.\d+\.\d+"
_KEY = rf"{_IP} \. (tcp|udp) \. \d+"
_RULE = rf'dnat to ({_IP}|(numgen random|jhash ip saddr) mod \d+ map \{{ .* \}}) comment ".*"'
_FIXED = [
    re.compile(p)
    for p in (
        r"^$",
        r"^\}$",
        r"^table (ip|bridge) \w+( \{)?$",
        r"^delete table (ip|bridge) \w+$",
        r"^ip saddr \S+ ip daddr \S+ drop$",
        r"^meta mark & 0x[0-9a-f]+ == 0x[0-9a-f]+ accept$",
        r"^ct status dnat meta mark set meta mark \| 0x[0-9a-f]+$",
        r"^(map|set|chain) \w+ \{$",
        r"^type .*$",
        r"^elements = \{ .* \}$",
        r"^ip daddr \. meta l4proto \. th dport vmap @services$",
        r".* masquerade$",
        r".*@no_endpoints reject( with tcp reset)?$",
        rf"^{_RULE}$",
    )
]
_COMMAND = re.compile(
    r"^(?P<verb>add|delete|flush) (?P<what>element|chain|rule) ip (?P<table>\w+) (?P<name>\w+)"
    r"(?: (?P<rest>.*))?$"
)


def _valid_ip(ip: str) -> bool:
    return all(int(x) <= 255 for x in ip.split("."))


@dataclass
class _Model:
    """What the fake holds: ``services`` key -> chain, ``no_endpoints`` keys, service chains."""

    present: bool = False
    mapped: dict[str, str] = field(default_factory=dict)
    empty: set[str] = field(default_factory=set)
    chains: dict[str, list[str]] = field(default_factory=dict)

    def copy(self) -> _Model:
        return _Model(
            self.present,
            dict(self.mapped),
            set(self.empty),
            {k: list(v) for k, v in self.chains.items()},
        )


def _refuse(n: int, ln: str, why: str) -> NetworkEdgeError:
    return NetworkEdgeError(f"nft refused the table: line {n}: {why}: {ln}")


class FakeNftTable:
    """In-memory RuleTable that understands the documents ``nft.render`` and
    ``nft.render_delta`` write, refusing what nft would: a line of another shape (a syntax
    error), an address that is not one, an element deleted that is absent or added twice with
    other data, a rule for or a goto to a chain that does not exist, a chain deleted while an
    element still jumps to it. A refused document changes nothing."""

    def __init__(self) -> None:
        self.document = ""  # the last document applied
        self.applied = 0
        self.conntrack: list[list[str]] = []
        self._m = _Model()

    async def apply(self, document: str) -> None:
        m = self._m.copy()
        block: list[str] = []  # open blocks: "table ip", "table bridge", "map services", ...
        for n, raw in enumerate(document.splitlines(), 1):
            ln = raw.strip()
            for ip in re.findall(_IP, ln):
                if not _valid_ip(ip):
                    raise _refuse(n, ln, f"{ip} is not an address")
            if cmd := _COMMAND.match(ln):
                self._command(m, n, ln, cmd)
                continue
            if not any(p.match(ln) for p in _FIXED):
                raise _refuse(n, ln, "syntax error")
            if ln == f"table ip {TABLE}":
                m.present = True
            elif ln == f"delete table ip {TABLE}":
                if not m.present:
                    raise _refuse(n, ln, "No such file or directory")
                m = _Model()
            elif ln.endswith("{") and not ln.startswith("elements"):
                block.append(ln.removesuffix(" {"))
                if ln == f"table ip {TABLE} {{":
                    m.present = True
                elif block[0] == f"table ip {TABLE}" and ln.startswith("chain vip_"):
                    m.chains[ln.split()[1]] = []
            elif ln == "}":
                if not block:
                    raise _refuse(n, ln, "unbalanced braces")
                block.pop()
            elif block[:1] == [f"table ip {TABLE}"] and len(block) == 2:
                inner = block[1]
                if ln.startswith("elements = {"):
                    elems = ln.removeprefix("elements = {").removesuffix("}").split(",")
                    self._add_elements(m, n, ln, inner.split()[1], [e.strip() for e in elems])
                elif inner.startswith("chain vip_"):
                    m.chains[inner.split()[1]].append(ln)
        if block:
            raise NetworkEdgeError("nft refused the table: unbalanced braces")
        for key, chain in m.mapped.items():
            if chain not in m.chains:
                raise NetworkEdgeError(f"nft refused the table: {key}: no chain {chain}")
        self._m = m
        self.document = document
        self.applied += 1

    def _add_elements(
        self, m: _Model, n: int, ln: str, into: str, elems: list[str], *, command: bool = False
    ) -> None:
        """Elements of a table block may name chains defined later in it (checked at the end
        of the document); an ``add element`` command needs the chain to exist already."""
        for e in elems:
            if into == "services":
                key, _, chain = e.partition(" : goto ")
                if not re.fullmatch(_KEY, key) or not chain:
                    raise _refuse(n, ln, f"bad element {e!r}")
                if m.mapped.get(key, chain) != chain:
                    raise _refuse(n, ln, "Device or resource busy")
                if command and chain not in m.chains:
                    raise _refuse(n, ln, f"no chain {chain}")
                m.mapped[key] = chain
            elif into == "no_endpoints":
                if not re.fullmatch(_KEY, e):
                    raise _refuse(n, ln, f"bad element {e!r}")
                m.empty.add(e)
            else:
                raise _refuse(n, ln, f"no set {into}")

    def _command(self, m: _Model, n: int, ln: str, cmd: re.Match[str]) -> None:
        verb, what, name, rest = cmd["verb"], cmd["what"], cmd["name"], cmd["rest"] or ""
        if cmd["table"] != TABLE or not m.present:
            raise _refuse(n, ln, "No such file or directory")
        if what == "element":
            if not (rest.startswith("{ ") and rest.endswith(" }")) or verb == "flush":
                raise _refuse(n, ln, "syntax error")
            elems = [e.strip() for e in rest[2:-2].split(",")]
            if verb == "add":
                self._add_elements(m, n, ln, name, elems, command=True)
                return
            held: dict[str, str] | set[str] = m.mapped if name == "services" else m.empty
            for e in elems:
                if e not in held:
                    raise _refuse(n, ln, f"{e}: No such file or directory")
                if isinstance(held, dict):
                    del held[e]
                else:
                    held.discard(e)
        elif what == "chain":
            if rest or not name.startswith("vip_"):
                raise _refuse(n, ln, "syntax error")
            if verb == "add":
                m.chains.setdefault(name, [])
            elif name not in m.chains:
                raise _refuse(n, ln, "No such file or directory")
            elif verb == "flush":
                m.chains[name] = []
            elif name in m.mapped.values():
                raise _refuse(n, ln, "Device or resource busy")
            else:
                del m.chains[name]
        else:  # rule
            if verb != "add" or not re.fullmatch(_RULE, rest):
                raise _refuse(n, ln, "syntax error")
            if name not in m.chains:
                raise _refuse(n, ln, "No such file or directory")
            m.chains[name].append(rest)

    async def remove(self) -> None:
        self.document = ""
        self._m = _Model()

    async def programmed(self) -> Programmed:
        out: Programmed = {" ".join(key.split(" . ")): [] for key in self._m.empty}
        for key, chain in self._m.mapped.items():
            port = key.rsplit(" . ", 1)[1]
            ips: list[str] = []
            for rule in self._m.chains[chain]:
                target = rule.removeprefix("dnat to ").split(" comment ")[0]
                ips += [target] if re.fullmatch(_IP, target) else re.findall(rf": ({_IP})", target)
            out[" ".join(key.split(" . "))] = sorted(f"{ip}:{port}" for ip in ips)
        return out

    async def flush_conntrack(self, argvs: Sequence[Sequence[str]]) -> int:
        self.conntrack.extend(list(a) for a in argvs)
        return 0
