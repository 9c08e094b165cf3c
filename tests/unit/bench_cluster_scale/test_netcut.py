"""The cut-off's pure parts: /proc/net/tcp rows, fd links, the rules built and swept."""

from __future__ import annotations

import pytest

from bench.cluster_scale.netcut import (
    TcpConn,
    cgroup_rule,
    connections_to,
    own_cgroup,
    parse_proc_net_tcp,
    rules_for,
    socket_inode,
    tagged_rules,
)

# Header plus three rows: 127.0.0.1:51000 -> 127.0.0.1:7443 established (inode 111),
# a listener on 0.0.0.0:7443 (state 0A, inode 222), and a row cut short (ignored).
# 0xC738 = 51000, 0x1D13 = 7443; 0100007F is 127.0.0.1 in little-endian order.
NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:C738 0100007F:1D13 01 00000000:00000000 00:00000000 00000000     0        0 111 1
   1: 00000000:1D13 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1
   2: 0100007F:C739
"""


def test_parse_proc_net_tcp_decodes_little_endian_addresses() -> None:
    rows = parse_proc_net_tcp(NET_TCP)
    assert rows == [
        TcpConn(("127.0.0.1", 51000), ("127.0.0.1", 7443), "01", 111),
        TcpConn(("0.0.0.0", 7443), ("0.0.0.0", 0), "0A", 222),
    ]


@pytest.mark.parametrize(
    ("link", "inode"),
    [("socket:[12345]", 12345), ("pipe:[77]", None), ("/dev/null", None), ("anon_inode:[x]", None)],
)
def test_socket_inode(link: str, inode: int | None) -> None:
    assert socket_inode(link) == inode


@pytest.mark.parametrize(
    ("inodes", "port", "expected"),
    [
        ({111, 222}, 7443, [111]),  # the listener is not established: only the connection
        ({222}, 7443, []),  # the process does not own the connection
        ({111}, 8443, []),  # another port
    ],
)
def test_connections_to(inodes: set[int], port: int, expected: list[int]) -> None:
    got = connections_to(parse_proc_net_tcp(NET_TCP), inodes, port)
    assert [c.inode for c in got] == expected


def test_rules_drop_both_directions_of_the_four_tuple_on_loopback_only() -> None:
    conn = TcpConn(("127.0.0.1", 51000), ("127.0.0.1", 7443), "01", 111)
    to_agent, from_agent = rules_for(conn, tag="clbench-1")
    assert to_agent[:5] == ["INPUT", "-i", "lo", "-p", "tcp"]
    assert to_agent[5:13] == ["-s", "127.0.0.1", "--sport", "7443", "-d", "127.0.0.1",
                              "--dport", "51000"]  # fmt: skip
    assert from_agent[5:13] == ["-s", "127.0.0.1", "--sport", "51000", "-d", "127.0.0.1",
                                "--dport", "7443"]  # fmt: skip
    for r in (to_agent, from_agent):
        assert r[-6:] == ["-m", "comment", "--comment", "clbench-1", "-j", "DROP"]
    out = cgroup_rule("clbench-1-42", 7443, tag="clbench-1")
    assert out[:3] == ["OUTPUT", "-o", "lo"] and "clbench-1-42" in out and out[-1] == "DROP"


# What `iptables -S INPUT` prints (it reorders the matches): ours, a foreign rule that looks
# alike but carries another harness's tag, and an unrelated rule. Only ours is swept.
LISTING = """\
-P INPUT ACCEPT
-A INPUT -s 127.0.0.1/32 -d 127.0.0.1/32 -i lo -p tcp -m tcp --sport 7443 --dport 51000 \
-m comment --comment clbench-1 -j DROP
-A INPUT -s 127.0.0.1/32 -d 127.0.0.1/32 -i lo -p tcp -m tcp --sport 7443 --dport 51001 \
-m comment --comment clbench-12 -j DROP
-A INPUT -p tcp --dport 22 -j ACCEPT
"""


def test_tagged_rules_selects_exactly_our_tag() -> None:
    got = tagged_rules(LISTING, tag="clbench-1")
    assert len(got) == 1
    assert got[0][0] == "INPUT" and "51000" in got[0]


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("4:memory:/x\n0::/\n", ""),
        ("0::/clbench-1-42\n", "clbench-1-42"),
        ("0::/a/b\n", "a/b"),
        ("1:cpu:/\n", ""),  # no cgroup v2 line: the root
    ],
)
def test_own_cgroup(text: str, path: str) -> None:
    assert own_cgroup(text) == path


def test_tcp6_rows_of_ipv4_mapped_peers_are_ipv4_and_others_are_skipped() -> None:
    # gRPC's dual-stack sockets: ::ffff:127.0.0.1:34910 -> ::ffff:127.0.0.1:39739
    # (0x885E = 34910, 0x9B3B = 39739); a real IPv6 row (::1) is skipped (not iptables').
    mapped = "0000000000000000FFFF00000100007F"
    loop6 = "00000000000000000000000001000000"
    text = (
        "  sl  local_address remote_address st tx rx tr tm retr uid timeout inode\n"
        f"   0: {mapped}:885E {mapped}:9B3B 01 0:0 00:0 0 0 0 333 1\n"
        f"   1: {loop6}:885F {loop6}:9B3B 01 0:0 00:0 0 0 0 444 1\n"
    )
    assert parse_proc_net_tcp(text) == [
        TcpConn(("127.0.0.1", 34910), ("127.0.0.1", 39739), "01", 333)
    ]
