"""Resolver contract: the fake, and the real responder over UDP and over TCP on loopback.

The responder's upstream is a second responder whose zone is ``example`` (standing in for the
device's resolver), so forwarding is tested without leaving loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from cloudless.network.dns import DnsIndex
from cloudless.network.dns_server import (
    DnsServer,
    FakeResolver,
    Resolver,
    TcpResolver,
    UdpResolver,
)
from tests.unit.network.builders import svc

SERVICES = [
    svc("web", "10.43.0.1", "10.42.1.5"),
    svc("db", "10.43.0.2", "10.42.1.7", ports=(5432,), stateful=True),
]
UPSTREAM = [svc("www", "192.0.2.80", ns="upstream")]  # "www.upstream.example" upstream


@pytest.fixture(params=["fake", "udp", "tcp"])
async def resolver(request: pytest.FixtureRequest) -> AsyncIterator[Resolver]:
    if request.param == "fake":
        fake = FakeResolver(DnsIndex(SERVICES), namespace="default")
        fake.upstream[("www.upstream.example", "A")] = "192.0.2.80"
        yield fake
        return
    up = DnsServer(index=DnsIndex(UPSTREAM, zone="example"))
    server: DnsServer | None = None
    async with asyncio.TaskGroup() as tg:
        t_up = tg.create_task(up.run())
        await up.ready.wait()
        server = DnsServer(
            upstream=("127.0.0.1", up.port),
            namespace_of=lambda ip: "default",
            forward_timeout=0.5,
        )
        server.set_services(SERVICES)
        t = tg.create_task(server.run())
        await server.ready.wait()
        cls = UdpResolver if request.param == "udp" else TcpResolver
        yield cls("127.0.0.1", server.port)
        t.cancel()
        t_up.cancel()


def a_records(r: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in r.rr if rr.rtype == QTYPE.A]


CASES = [
    # (name, type, rcode, A answers)
    ("web.default.cloudless", "A", RCODE.NOERROR, ["10.43.0.1"]),
    ("web", "A", RCODE.NOERROR, ["10.43.0.1"]),  # the asker is in "default"
    ("db-0.db.default.cloudless", "A", RCODE.NOERROR, ["10.42.1.7"]),
    ("gone.default.cloudless", "A", RCODE.NXDOMAIN, []),
    ("www.upstream.example", "A", RCODE.NOERROR, ["192.0.2.80"]),  # forwarded
]


@pytest.mark.parametrize(("name", "qtype", "rcode", "ips"), CASES)
async def test_answers(
    resolver: Resolver, name: str, qtype: str, rcode: int, ips: list[str]
) -> None:
    r = await resolver.query(name, qtype)
    assert r.header.rcode == rcode
    assert a_records(r) == ips


async def test_srv_gives_the_port(resolver: Resolver) -> None:
    r = await resolver.query("_5432._tcp.db.default.cloudless", "SRV")
    assert [rr.rdata.port for rr in r.rr] == [5432]


async def test_unknown_upstream_name_is_servfail(resolver: Resolver) -> None:
    r = await resolver.query("nothing.upstream.example", "A")
    # upstream answers NXDOMAIN (its zone); the fake knows nothing: SERVFAIL
    assert r.header.rcode in (RCODE.NXDOMAIN, RCODE.SERVFAIL)


async def test_garbage_gets_formerr_or_nothing() -> None:
    server = DnsServer(index=DnsIndex(SERVICES))
    async with asyncio.TaskGroup() as tg:
        t = tg.create_task(server.run())
        await server.ready.wait()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(1.0)
            s.sendto(b"\x12\x34" + b"\xff" * 20, ("127.0.0.1", server.port))
            data = await asyncio.to_thread(s.recv, 512)
            r = DNSRecord.parse(data)
            assert (r.header.id, r.header.rcode) == (0x1234, RCODE.FORMERR)
            s.sendto(b"\x01", ("127.0.0.1", server.port))  # too short for a header: dropped
            with pytest.raises(TimeoutError):
                s.settimeout(0.2)
                await asyncio.to_thread(s.recv, 512)
        # the server still answers after garbage
        r = await UdpResolver("127.0.0.1", server.port).query("web.default.cloudless")
        assert a_records(r) == ["10.43.0.1"]
        t.cancel()


async def test_no_upstream_is_servfail() -> None:
    server = DnsServer(index=DnsIndex(SERVICES))
    async with asyncio.TaskGroup() as tg:
        t = tg.create_task(server.run())
        await server.ready.wait()
        r = await UdpResolver("127.0.0.1", server.port).query("example.org")
        assert r.header.rcode == RCODE.SERVFAIL
        t.cancel()


async def test_table_swap_takes_effect_at_once() -> None:
    server = DnsServer(index=DnsIndex(SERVICES))
    async with asyncio.TaskGroup() as tg:
        t = tg.create_task(server.run())
        await server.ready.wait()
        res = UdpResolver("127.0.0.1", server.port)
        server.set_services([svc("web", "10.43.0.9", "10.42.1.5")])
        assert a_records(await res.query("web.default.cloudless")) == ["10.43.0.9"]
        t.cancel()


async def test_an_endpoint_move_keeps_cached_answers_and_a_replica_move_replaces_them() -> None:
    server = DnsServer(index=DnsIndex(SERVICES))
    async with asyncio.TaskGroup() as tg:
        t = tg.create_task(server.run())
        await server.ready.wait()
        res = UdpResolver("127.0.0.1", server.port)
        assert a_records(await res.query("web.default.cloudless")) == ["10.43.0.1"]
        index = server.index
        # web's endpoint moved: no name answers differently, the index and its cache stay
        server.set_services([svc("web", "10.43.0.1", "10.42.2.5"), SERVICES[1]])
        assert server.index is index and server._cache
        # db is stateful: its replica's own name now answers with the new address
        moved_db = svc("db", "10.43.0.2", "10.42.3.7", ports=(5432,), stateful=True)
        server.set_services([SERVICES[0], moved_db])
        assert server.index is not index and not server._cache
        assert a_records(await res.query("db-0.db.default.cloudless")) == ["10.42.3.7"]
        t.cancel()


async def test_a_burst_of_queries_in_flight_is_answered_each() -> None:
    server = DnsServer(index=DnsIndex(SERVICES))
    async with asyncio.TaskGroup() as tg:
        t = tg.create_task(server.run())
        await server.ready.wait()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            for i in range(200):  # more than one wake-up's batch, all sent before reading
                q = DNSRecord.question("web.default.cloudless" if i % 2 else "nope.cloudless")
                q.header.id = i
                s.sendto(q.pack(), ("127.0.0.1", server.port))
            got = {}
            for _ in range(200):
                r = DNSRecord.parse(await asyncio.to_thread(s.recv, 512))
                got[r.header.id] = r
        assert sorted(got) == list(range(200))
        assert a_records(got[1]) == ["10.43.0.1"]
        assert got[2].header.rcode == RCODE.NXDOMAIN
        t.cancel()
