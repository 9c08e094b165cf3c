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
from typing import Any, Protocol

from cloudless.network.errors import NetworkEdgeError
from cloudless.network.netpolicy_nft import TABLE as POLICY_TABLE
from cloudless.network.netpolicy_nft import delete_document as delete_policy_document
from cloudless.network.nft import TABLE, delete_document

Programmed = dict[str, list[str]]


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
        out, err = await asyncio.wait_for(
            proc.communicate(stdin.encode() if stdin is not None else None), timeout
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
        deleted = 0
        for argv in argvs:
            rc, _, err = await _run([*self.host_argv, *argv])
            # conntrack exits 1 with "0 flow entries have been deleted" when none matched
            m = re.search(r"(\d+) flow entr", err)
            if m:
                deleted += int(m.group(1))
            elif rc != 0:
                raise NetworkEdgeError(f"`{' '.join(argv)}` failed: {err.strip()}")
        return deleted


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


def _from_json(doc: dict[str, Any]) -> Programmed:
    svc_chains: dict[str, str] = {}  # chain -> key
    arms: dict[str, list[str]] = {}  # chain -> endpoint chains
    dnat: dict[str, str] = {}  # endpoint chain -> "ip:port"
    out: Programmed = {}
    for item in doc.get("nftables", []):
        if "map" in item and item["map"]["name"] == "services":
            for k, v in _elems(item["map"]):
                svc_chains[v["goto"]["target"]] = _key(k)
        elif "set" in item and item["set"]["name"] == "no_endpoints":
            for k in _elems(item["set"]):
                out[_key(k)] = []
        elif "rule" in item:
            chain = item["rule"]["chain"]
            for e in item["rule"]["expr"]:
                if "vmap" in e and isinstance(e["vmap"]["data"], dict):
                    arms[chain] = [a[1]["goto"]["target"] for a in e["vmap"]["data"]["set"]]
                if "dnat" in e:
                    dnat[chain] = f"{e['dnat']['addr']}:{e['dnat']['port']}"
    for chain, key in svc_chains.items():
        out[key] = sorted(dnat[c] for c in arms.get(chain, []) if c in dnat)
    return out


_ALLOWED = [
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
        r'^comment ".*"$',
        r"^ip daddr \. meta l4proto \. th dport vmap @services$",
        r"^(numgen random|jhash ip saddr) mod \d+ vmap \{ .* \}$",
        r"^meta l4proto (tcp|udp) dnat to \d+\.\d+\.\d+\.\d+:\d+$",
        r".* masquerade$",
        r".*@no_endpoints reject( with tcp reset)?$",
    )
]


class FakeNftTable:
    """In-memory RuleTable that understands the documents ``nft.render`` writes (and refuses
    any other line, as nft would refuse a syntax error)."""

    def __init__(self) -> None:
        self.document = ""
        self.applied = 0
        self.conntrack: list[list[str]] = []

    async def apply(self, document: str) -> None:
        lines = [ln.strip() for ln in document.splitlines()]
        for n, ln in enumerate(lines, 1):
            if not any(p.match(ln) for p in _ALLOWED):
                raise NetworkEdgeError(f"nft refused the table: line {n}: syntax error: {ln}")
        if document.count("{") != document.count("}"):
            raise NetworkEdgeError("nft refused the table: unbalanced braces")
        if lines[:2] != [f"table ip {TABLE}", f"delete table ip {TABLE}"]:
            raise NetworkEdgeError("nft refused the table: not a whole-table replacement")
        self.document = document
        self.applied += 1

    async def remove(self) -> None:
        self.document = ""

    async def programmed(self) -> Programmed:
        out: Programmed = {}
        chains: dict[str, list[str]] = {}
        block = ""
        svc_chains: dict[str, str] = {}
        for ln in (x.strip() for x in self.document.splitlines()):
            if m := re.match(r"^(map|set|chain) (\w+) \{$", ln):
                block = m.group(2)
                chains[block] = []
            elif m := re.match(r"^elements = \{ (.*) \}$", ln):
                for el in m.group(1).split(", "):
                    parts = el.split(" : goto ")
                    key = " ".join(parts[0].split(" . "))
                    if block == "services":
                        svc_chains[parts[1]] = key
                    elif block == "no_endpoints":
                        out[key] = []
            elif block:
                chains[block].append(ln)
        for chain, key in svc_chains.items():
            eps = []
            for arm in re.findall(r"goto (\w+)", " ".join(chains.get(chain, []))):
                for ln in chains.get(arm, []):
                    if m := re.search(r"dnat to (\S+)$", ln):
                        eps.append(m.group(1))
            out[key] = sorted(eps)
        return out

    async def flush_conntrack(self, argvs: Sequence[Sequence[str]]) -> int:
        self.conntrack.extend(list(a) for a in argvs)
        return 0
