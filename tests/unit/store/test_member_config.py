"""MemberConfig.argv is pure: check the flags that carry our guarantees."""

from __future__ import annotations

from pathlib import Path

from cloudless.store.etcd import KEEPALIVE_TIME_MS, channel_options
from cloudless.store.etcd_admin import Member
from cloudless.store.etcd_process import GRPC_KEEPALIVE_MIN_TIME_MS, MemberConfig
from cloudless.store.membership import joining_config
from cloudless.store.tls import MemberTls

TLS = MemberTls(Path("/pki/ca.pem"), Path("/pki/m.pem"), Path("/pki/m.key"))


def cfg(**kw: object) -> MemberConfig:
    return MemberConfig(
        name="c1",
        data_dir=Path("/d/c1.etcd"),
        host="10.0.0.5",
        client_port=2379,
        peer_port=2380,
        tls=TLS,
        **kw,  # type: ignore[arg-type]
    )


def test_new_single_member_cluster_flags() -> None:
    argv = cfg().argv()
    assert argv[0] == "/usr/bin/etcd"
    for flag in [
        "--listen-client-urls=https://10.0.0.5:2379",
        "--initial-advertise-peer-urls=https://10.0.0.5:2380",
        "--initial-cluster=c1=https://10.0.0.5:2380",
        "--initial-cluster-state=new",
        "--client-cert-auth",
        "--peer-client-cert-auth",
        "--trusted-ca-file=/pki/ca.pem",
        "--peer-trusted-ca-file=/pki/ca.pem",
        "--snapshot-count=1024",
        "--pre-vote",
        "--heartbeat-interval=100",
        "--election-timeout=1000",
        "--quota-backend-bytes=2147483648",
        "--auto-compaction-mode=revision",
    ]:
        assert flag in argv, flag


def test_joining_config_lists_every_member_and_existing_state() -> None:
    members = [
        Member(1, "c0", ("https://10.0.0.4:2380",), ("https://10.0.0.4:2379",), False),
        Member(2, "", ("https://10.0.0.5:2380",), (), True),  # us: added, not started yet
    ]
    argv = joining_config(cfg(), members).argv()
    assert "--initial-cluster=c0=https://10.0.0.4:2380,c1=https://10.0.0.5:2380" in argv
    assert "--initial-cluster-state=existing" in argv


def test_members_accept_the_pings_that_find_a_member_behind_a_dropped_link() -> None:
    """A watch sends nothing after its create request. Our clients ping every 2 s with no
    cap on pings without data (gRPC's default cap is 2, after which a watch on a member
    behind a dropped link waited in silence for the whole partition), and the member must
    accept that rate: etcd's default minimum is 5 s, above which it closes the connection
    with ``too_many_pings`` and gRPC stretches the interval.

    Worst case to notice a dead member: 2 s to the next ping + 2 s unanswered = 4 s."""
    opts = dict(
        channel_options([("grpc.keepalive_time_ms", 10_000), ("grpc.lb_policy_name", "rr")])
    )
    assert opts["grpc.http2.max_pings_without_data"] == 0
    assert opts["grpc.keepalive_time_ms"] == KEEPALIVE_TIME_MS == 2_000
    assert opts["grpc.keepalive_timeout_ms"] == 2_000
    assert opts["grpc.lb_policy_name"] == "rr"  # etcd3aio's other options kept
    flag = next(a for a in cfg().argv() if a.startswith("--grpc-keepalive-min-time="))
    assert flag == f"--grpc-keepalive-min-time={GRPC_KEEPALIVE_MIN_TIME_MS}ms"
    assert GRPC_KEEPALIVE_MIN_TIME_MS <= KEEPALIVE_TIME_MS
