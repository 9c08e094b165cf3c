"""DNS answers for services, from the service table alone (no I/O).

Names, in zone ``cloudless`` (``DnsIndex.zone``):

* ``<svc>.<ns>.cloudless``: A = the service's VIP; SRV = one record per port.
* ``_<port label>._<tcp|udp>.<svc>.<ns>.cloudless``: SRV for that port (label = the port's name,
  or its number when it has none).
* ``<replica>.<svc>.<ns>.cloudless`` for stateful services: A = that replica's address, while it
  is an endpoint (running and ready).
* ``<svc>`` (one label) asked by a client in namespace ``ns``: as ``<svc>.<ns>.cloudless``.
* ``<alias>.cloudless`` for a well-known cluster service (``services.ZONE_ALIASES``):
  ``s3.cloudless`` answers as ``s3.system.cloudless`` (the object store's S3 API, A = its VIP).

A name inside the zone that is none of these gets NXDOMAIN (authoritative); a known name asked
for another type gets an empty NOERROR answer. ``answer`` returns None for a name outside the
zone: the caller forwards it upstream. Answers carry a short TTL, since endpoints move.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from dnslib import QTYPE, RCODE, RR, SRV, A, DNSLabel, DNSRecord

from cloudless.network.services import ZONE_ALIASES, Service

ZONE = "cloudless"
TTL = 5
FORWARD = b""  # ``DnsIndex.fast``: the name is outside the zone
_QTYPE_A, _QTYPE_AAAA, _CLASS_IN = 1, 28, 1
_HEADER = struct.Struct("!HHHHHH")


@dataclass
class _Name:
    a: list[str] = field(default_factory=list)
    srv: list[tuple[int, str]] = field(default_factory=list)  # (port, target)


class DnsIndex:
    """Every name of the zone, built once per service-table change."""

    def __init__(
        self,
        services: Iterable[Service],
        zone: str = ZONE,
        ttl: int = TTL,
    ) -> None:
        self.zone = zone.strip(".").lower()
        self.ttl = ttl
        self._names: dict[str, _Name] = {}
        self._suffix = "." + self.zone
        for svc in services:
            base = f"{svc.key.name}.{svc.key.namespace}.{self.zone}"
            self._name(base).a.append(str(svc.vip))
            alias = ZONE_ALIASES.get(svc.key)
            if alias is not None:
                self._name(f"{alias}.{self.zone}").a.append(str(svc.vip))
            for p in svc.spec.ports:
                self._name(base).srv.append((p.port, base))
                self._name(f"_{p.label}._{p.protocol}.{base}").srv.append((p.port, base))
            if svc.spec.stateful:
                for ep in svc.endpoints:
                    self._name(f"{ep.replica}.{base}").a.append(str(ep.ip))

        # Ancestors of names (the zone apex, "<ns>.cloudless"...): they exist, without records.
        self._interior = {self.zone}
        for name in self._names:
            labels = name.split(".")
            for k in range(1, len(labels)):
                self._interior.add(".".join(labels[k:]))

    def _name(self, name: str) -> _Name:
        return self._names.setdefault(name, _Name())

    def __len__(self) -> int:
        return len(self._names)

    def same_answers(self, other: DnsIndex) -> bool:
        """Whether ``other`` answers every question as this index does."""
        return (self.zone, self.ttl, self._names) == (other.zone, other.ttl, other._names)

    def answer(self, request: DNSRecord, client_namespace: str | None = None) -> DNSRecord | None:
        """The reply to ``request``, or None when its name is outside the zone (forward it)."""
        reply = request.reply()
        if request.header.opcode != 0:
            reply.header.rcode = RCODE.NOTIMP
            return reply
        if len(request.questions) != 1:
            reply.header.rcode = RCODE.FORMERR
            return reply
        q = request.q
        qname = str(q.qname).rstrip(".").lower()
        if "." not in qname and client_namespace and qname:
            qname = f"{qname}.{client_namespace}.{self.zone}"
        if qname != self.zone and not qname.endswith(self._suffix):
            return None
        reply.header.aa = 1
        entry = self._names.get(qname)
        if entry is None:
            if qname not in self._interior:
                reply.header.rcode = RCODE.NXDOMAIN
            return reply
        rname = q.qname
        if q.qtype in (QTYPE.A, QTYPE.ANY):
            for ip in entry.a:
                reply.add_answer(RR(rname, QTYPE.A, rdata=A(ip), ttl=self.ttl))
        if q.qtype in (QTYPE.SRV, QTYPE.ANY):
            for port, target in entry.srv:
                srv = SRV(priority=0, weight=100, port=port, target=DNSLabel(target + "."))
                reply.add_answer(RR(rname, QTYPE.SRV, rdata=srv, ttl=self.ttl))
            if entry.srv and q.qtype == QTYPE.SRV:
                target = entry.srv[0][1]
                for ip in self._names[target].a:
                    reply.add_ar(RR(target + ".", QTYPE.A, rdata=A(ip), ttl=self.ttl))
        return reply

    def fast(self, data: bytes, client_namespace: str | None = None) -> bytes | None:
        """The wire reply to a plain A/AAAA query without building dnslib objects: ``FORWARD``
        for a name outside the zone, None when the query is anything else (the caller then
        uses ``answer``). Answers equal ``answer``'s (the contract suite checks both)."""
        if len(data) < 17:
            return None
        qid, flags, qd, an, ns, ar = _HEADER.unpack_from(data)
        if qd != 1 or an or ns or ar > 1 or flags & 0xF800:  # QR set or opcode != QUERY
            return None
        i, labels = 12, []
        while True:
            if i >= len(data):
                return None
            n = data[i]
            if n == 0:
                break
            if n & 0xC0 or i + 1 + n > len(data):  # compression in a question: rare, slow path
                return None
            labels.append(data[i + 1 : i + 1 + n])
            i += 1 + n
        end = i + 5
        if end > len(data):
            return None
        qtype, qclass = struct.unpack_from("!HH", data, i + 1)
        if qclass != _CLASS_IN or qtype not in (_QTYPE_A, _QTYPE_AAAA):
            return None
        try:
            qname = b".".join(labels).decode("ascii").lower()
        except UnicodeDecodeError:
            return None
        if "." not in qname and client_namespace and qname:
            qname = f"{qname}.{client_namespace}.{self.zone}"
        if qname != self.zone and not qname.endswith(self._suffix):
            return FORWARD
        entry = self._names.get(qname)
        rcode = 0
        answers = b""
        count = 0
        if entry is None:
            if qname not in self._interior:
                rcode = 3  # NXDOMAIN
        elif qtype == _QTYPE_A:
            for ip in entry.a:
                answers += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, self.ttl, 4)
                answers += socket.inet_aton(ip)
                count += 1
        # QR, AA, RA; RD copied from the query
        out_flags = 0x8000 | 0x0400 | 0x0080 | (flags & 0x0100) | rcode
        return _HEADER.pack(qid, out_flags, 1, count, 0, 0) + data[12:end] + answers
