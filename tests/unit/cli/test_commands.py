"""Argument parsing and error rendering, through typer's CliRunner (no cluster needed)."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cloudless.cli import daemons
from cloudless.cli.client import ApiError
from cloudless.cli.main import app
from cloudless.cli.output import error_lines
from cloudless.lib.errors import CloudlessError, ValidationError

runner = CliRunner()


def run(*args: str, input: str | None = None) -> Any:
    return runner.invoke(
        app, list(args), input=input, env={"CLOUDLESS_CONFIG": "/nonexistent.json"}
    )


@pytest.mark.parametrize(
    ("e", "lines"),
    [
        (ApiError(404, "not_found", "workload 'x' not found"), ["error: workload 'x' not found"]),
        # a validation refusal lists each problem (its message is the problems joined)
        (
            ApiError(400, "invalid", "a: bad; b: worse", ["a: bad", "b: worse"]),
            ["error: the request was refused:", "  a: bad", "  b: worse"],
        ),
        (
            ApiError(400, "invalid", "spec refused", ["a: bad"]),
            ["error: spec refused", "  a: bad"],
        ),
        (ValidationError(["x: 1", "y: 2"]), ["error: invalid input:", "  x: 1", "  y: 2"]),
        (CloudlessError("no coordinator answered"), ["error: no coordinator answered"]),
        (ConnectionRefusedError(111, "Connection refused"), [
            "error: the connection failed: [Errno 111] Connection refused"
        ]),
        (FileNotFoundError(2, "No such file", "/x/ca.pem"), ["error: /x/ca.pem: no such file"]),
        (OSError(98, "error while attempting to bind on address ('127.0.0.1', 8443)"), [
            "error: [Errno 98] error while attempting to bind on address ('127.0.0.1', 8443): "
            "another process (a coordinator already running?) uses that port"
        ]),
        (PermissionError(13, "Permission denied", "/var/lib/x"), [
            "error: [Errno 13] Permission denied: '/var/lib/x'"
        ]),
        (ssl.SSLError(1, "bad cert"), [
            "error: TLS failed: bad cert (is --config the right cluster's client config?)"
        ]),
    ],
)  # fmt: skip
def test_error_lines(e: BaseException, lines: list[str]) -> None:
    assert error_lines(e) == lines


def test_grpc_style_error_shows_status_and_details() -> None:
    class FakeRpcError(Exception):
        def code(self) -> Any:
            class S:
                name = "UNAUTHENTICATED"

            return S()

        def details(self) -> str:
            return "certificate revoked"

    assert error_lines(FakeRpcError()) == ["error: UNAUTHENTICATED: certificate revoked"]


def test_missing_config_is_one_line_exit_1() -> None:
    r = run("get", "nodes")
    assert r.exit_code == 1
    assert r.stderr.startswith("error: no client config at /nonexistent.json")
    assert "Traceback" not in r.output


def test_config_naming_missing_cert(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"servers": ["https://127.0.0.1:1"], "ca": "ca.pem",
                               "cert": "c.crt", "key": "c.key"}))  # fmt: skip
    r = runner.invoke(app, ["get", "nodes", "--config", str(cfg)])
    assert r.exit_code == 1
    assert f"error: client config names {tmp_path / 'ca.pem'}, which does not exist" in r.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["token", "create", "--ttl", "soon"], "'soon' is not a duration"),
        (
            ["token", "create", "--use", "admin"],
            "expected one of node-enrollment, coordinator-join",
        ),
        (["token", "create", "--label", "nokey"], "expected KEY=VALUE"),
        (["get", "nodes", "-o", "xml"], "xml"),
        (["scale", "web", "-1"], "-1"),
        (["agent", "--label", "x", "--runtime", "fake"], "expected KEY=VALUE"),
        (["agent", "--cpu", "lots"], "--cpu"),
        (["agent", "--memory", "12XB"], "is not a size"),
        (["agent", "--join", "http://x:8443"], "expected the coordinator's API URL"),
        (["agent", "--runtime", "docker"], "expected containerd or fake"),
        (["coordinator", "--store", "sqlite"], "expected etcd or memory"),
        (["coordinator", "--bootstrap", "--join", "https://a:1", "--token", "t"], "only one"),
        (["coordinator", "--join", "https://a:1"], "--join needs --token"),
        (["coordinator", "--api-port", "7443"], "--agent-port: 7443 is also --api-port"),
        (["coordinator", "--api-port", "70000"], "not a TCP port"),
        (["coordinator", "--log-level", "loud"], "'loud' is not one of"),
        (["wait", "workload", "w", "--timeout", "forever"], "'forever' is not a duration"),
    ],
)
def test_bad_flags_are_usage_errors(args: list[str], needle: str) -> None:
    r = run(*args)
    assert r.exit_code == 2, r.output
    words = re.sub("[\u2500-\u257f]", " ", r.stderr).split()  # rich boxes wrap: unbox
    assert needle in " ".join(words), r.stderr


def test_explain_needs_name_or_file() -> None:
    r = run("explain")
    assert r.exit_code == 1
    assert "give a workload NAME or -f FILE" in r.stderr


def test_apply_missing_file() -> None:
    r = run("apply", "-f", "/no/such.yaml")
    assert r.exit_code == 1
    assert r.stderr.strip() == "error: /no/such.yaml: no such file"


def test_help_lists_the_commands() -> None:
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("coordinator", "agent", "apply", "get", "describe", "delete", "scale", "logs",
                "cordon", "uncordon", "drain", "remove", "token", "explain", "events", "wait",
                "store", "version"):  # fmt: skip
        assert cmd in r.stdout


def test_coordinator_flags_build_the_config(tmp_path: Path) -> None:
    c = daemons.coordinator_config(
        data_dir=tmp_path, name="c1", host="10.0.0.1", api_port=1, agent_port=2, enroll_port=3,
        etcd_client_port=4, etcd_peer_port=5, bootstrap=True, join="", token="",
        store="memory", root_key_size=2048, bcrypt_cost=4,
    )  # fmt: skip
    assert (c.data_dir, c.name, c.api_url, c.agent_endpoint) == (
        tmp_path, "c1", "https://10.0.0.1:1", "10.0.0.1:2"
    )  # fmt: skip
    assert (c.store, c.bootstrap, c.root_key_size, c.bcrypt_cost) == ("memory", True, 2048, 4)
    assert c.etcd_follows_rotation  # the default; --no-etcd-follows-rotation turns it off
    off = daemons.coordinator_config(
        data_dir=tmp_path, name="c1", host="10.0.0.1", api_port=1, agent_port=2, enroll_port=3,
        etcd_client_port=4, etcd_peer_port=5, bootstrap=True, join="", token="",
        store="etcd", root_key_size=2048, bcrypt_cost=4, etcd_follows_rotation=False,
    )  # fmt: skip
    assert not off.etcd_follows_rotation


def test_agent_flags_build_the_config(tmp_path: Path) -> None:
    a = daemons.agent_config(
        join="https://c:8443", token="T", data_dir=tmp_path, name="pi", zone="z", region="r",
        labels=["gpu=no"], address="10.0.0.9", cpu="1500m", memory="2Gi", disk=None,
    )  # fmt: skip
    assert (a.join, a.token, a.name, a.zone, a.region, a.address) == (
        "https://c:8443", "T", "pi", "z", "r", "10.0.0.9"
    )  # fmt: skip
    assert a.labels == {"gpu": "no"}
    # declared dimensions replace measured ones; 0 keeps the measurement (disk, bandwidth)
    assert a.capacity_override is not None
    assert a.capacity_override.to_dict() == {
        "cpu_millis": 1500, "memory_bytes": 2 << 30, "disk_bytes": 0, "bandwidth_bps": 0
    }  # fmt: skip
    none = daemons.agent_config(
        join="", token="", data_dir=None, name=None, zone="", region="", labels=None,
        address="", cpu=None, memory=None, disk=None,
    )  # fmt: skip
    assert none.capacity_override is None
    assert none.data_dir.name == "agent"


STORAGE_BAD = [
    # (size, listen, s3, replication, grace, zone, the flag the error names, words)
    ("lots", "0.0.0.0:3901", "0.0.0.0:3900", 3, None, "z", "--storage", "lots"),
    ("1Gi", "3901", "0.0.0.0:3900", 3, None, "z", "--storage-listen", "HOST:PORT"),
    ("1Gi", "0.0.0.0:3901", "h:99999", 3, None, "z", "--s3-listen", "HOST:PORT"),
    ("1Gi", "0.0.0.0:3901", "0.0.0.0:3900", 9, None, "z", "--storage-replication", "1..7"),
    ("1Gi", "0.0.0.0:3901", "0.0.0.0:3900", 3, -1.0, "z", "--storage-grace", ">= 0"),
    ("1Gi", "0.0.0.0:3901", "0.0.0.0:3900", 3, None, "", "--zone", "needs a zone"),
]  # fmt: skip


@pytest.mark.parametrize("size,listen,s3,rep,grace,zone,flag,words", STORAGE_BAD)
def test_storage_flags_name_the_bad_one(
    tmp_path: Path,
    size: str,
    listen: str,
    s3: str,
    rep: int,
    grace: float | None,
    zone: str,
    flag: str,
    words: str,
) -> None:
    import typer

    a = daemons.agent_config(
        join="", token="", data_dir=tmp_path, name="pi", zone=zone, region="", labels=None,
        address="", cpu=None, memory=None, disk=None,
    )  # fmt: skip
    with pytest.raises(typer.BadParameter) as e:
        daemons.storage_config(a, size, listen, s3, rep, grace)
    assert e.value.param_hint == flag and words in str(e.value)


def test_storage_flags_build_the_node_config(tmp_path: Path) -> None:
    a = daemons.agent_config(
        join="", token="", data_dir=tmp_path, name="pi", zone="home", region="", labels=None,
        address="10.0.0.9", cpu=None, memory=None, disk=None,
    )  # fmt: skip
    s = daemons.storage_config(a, "2Gi", "0.0.0.0:3901", "0.0.0.0:3900", 2, None)
    assert (s.capacity, s.zone, s.rpc_port, s.s3_port, s.replication, s.advertise) == (
        2 << 30, "home", 3901, 3900, 2, "10.0.0.9"
    )  # fmt: skip
    assert s.data_dir == tmp_path / "objectstore"
    gateway = daemons.storage_config(a, "0", "0.0.0.0:3901", "0.0.0.0:3900", 3, None)
    assert gateway.capacity == 0
    named = daemons.storage_config(
        a, "0", "0.0.0.0:3901", "0.0.0.0:3900", 3, None, s3_domains="S3.Home.Example., s3.lan"
    )
    assert named.s3_domains == ("s3.home.example", "s3.lan")


@pytest.mark.parametrize("bad", ["http://s3.lan", "s3.lan:3900", "10.0.0.9", "-x.lan", "a b"])
def test_a_bad_s3_domain_is_named(tmp_path: Path, bad: str) -> None:
    import typer

    a = daemons.agent_config(
        join="", token="", data_dir=tmp_path, name="pi", zone="home", region="", labels=None,
        address="", cpu=None, memory=None, disk=None,
    )  # fmt: skip
    with pytest.raises(typer.BadParameter) as e:
        daemons.storage_config(a, "0", "0.0.0.0:3901", "0.0.0.0:3900", 3, None, s3_domains=bad)
    assert e.value.param_hint == "--s3-domain" and repr(bad) in str(e.value)


@pytest.mark.parametrize(
    ("cache", "held", "problem"),
    [
        ("24Mi", 24 << 20, ""),  # the default
        ("0", 0, ""),  # nothing held: a device short of memory
        ("1.5Gi", 3 << 29, ""),
        ("lots", 0, "lots"),
        ("-1Mi", 0, "-1Mi"),
    ],
)
def test_storage_cache_flag(tmp_path: Path, cache: str, held: int, problem: str) -> None:
    import typer

    a = daemons.agent_config(
        join="", token="", data_dir=tmp_path, name="pi", zone="home", region="", labels=None,
        address="", cpu=None, memory=None, disk=None,
    )  # fmt: skip
    if problem:
        with pytest.raises(typer.BadParameter) as e:
            daemons.storage_config(a, "1Gi", "0.0.0.0:3901", "0.0.0.0:3900", 3, None, cache=cache)
        assert e.value.param_hint == "--storage-cache" and problem in str(e.value)
        return
    s = daemons.storage_config(a, "1Gi", "0.0.0.0:3901", "0.0.0.0:3900", 3, None, cache=cache)
    assert s.cache_bytes == held


class _FailingCoordinator:
    def __init__(self, config: Any) -> None:
        self.config = config
        self.ready = asyncio.Event()

    async def run(self) -> None:
        from cloudless.coordinator.wiring.process import StartupError

        async with asyncio.TaskGroup() as tg:  # errors arrive wrapped in groups
            tg.create_task(asyncio.sleep(10))
            raise StartupError("no CA in /x/ca: start the first coordinator with --bootstrap")


def test_coordinator_startup_error_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cloudless.coordinator.wiring.process as server

    monkeypatch.setattr(server, "Coordinator", _FailingCoordinator)
    r = run("coordinator", "--data-dir", str(tmp_path), "--store", "memory")
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1] == (
        "error: no CA in /x/ca: start the first coordinator with --bootstrap"
    )
    assert "Traceback" not in r.output


def test_agent_without_identity_or_token_says_how_to_join(tmp_path: Path) -> None:
    r = run("agent", "--data-dir", str(tmp_path / "a"), "--runtime", "fake")
    assert r.exit_code == 1
    assert "not enrolled yet" in r.stderr
    assert "--join https://COORDINATOR:8443 --token TOKEN" in r.stderr
    assert "Traceback" not in r.output


def test_agent_containerd_socket_missing(tmp_path: Path) -> None:
    r = run("agent", "--data-dir", str(tmp_path), "--containerd-socket", str(tmp_path / "no.sock"))
    assert r.exit_code == 1
    assert f"no containerd socket at {tmp_path / 'no.sock'}" in r.stderr


async def test_run_until_signal_cancels_on_sigterm() -> None:
    import os
    import signal

    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    async def send() -> None:
        await started.wait()
        os.kill(os.getpid(), signal.SIGTERM)

    sender = asyncio.create_task(send())
    assert await daemons.run_until_signal(forever()) is True
    await sender


async def test_sigterm_taken_over_by_a_leave_then_a_second_one_stops() -> None:
    """``on_term`` True (an agent that leaves): the first SIGTERM does not cancel ``main``
    (it finishes its leave and returns); a second SIGTERM cancels it."""
    import os
    import signal

    asked: list[int] = []
    started, leaving = asyncio.Event(), asyncio.Event()

    def on_term() -> bool:
        asked.append(1)
        leaving.set()
        return True

    async def leaves() -> None:
        started.set()
        await leaving.wait()  # the leave runs; main returns by itself

    async def send() -> None:
        await started.wait()
        os.kill(os.getpid(), signal.SIGTERM)

    sender = asyncio.create_task(send())
    assert await daemons.run_until_signal(leaves(), on_term) is False  # it returned itself
    await sender
    assert asked == [1]

    started.clear()

    async def stuck() -> None:
        started.set()
        await asyncio.Event().wait()  # a leave that does not end: the second signal stops it

    async def send_twice() -> None:
        await started.wait()
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    sender = asyncio.create_task(send_twice())
    assert await daemons.run_until_signal(stuck(), lambda: True) is True
    await sender


def test_agent_flags_for_leaving_refuse_bad_values(tmp_path: Path) -> None:
    r = run("agent", "--data-dir", str(tmp_path), "--reserved-hours", "Funday 1-2")
    assert (
        r.exit_code == 2 and "--reserved-hours" in r.output and "'Funday' is not a day" in r.output
    )
    r = run("agent", "--data-dir", str(tmp_path), "--leave-deadline", "2h")
    assert r.exit_code == 2 and "--leave-deadline" in r.output
    for pct in ("100", "-1", "nan"):
        r = run("agent", "--data-dir", str(tmp_path), "--leave-below-battery", pct)
        assert r.exit_code == 2 and "--leave-below-battery" in r.output, (pct, r.output)
    r = run("agent", "leave", "--data-dir", str(tmp_path))
    assert r.exit_code == 1 and "no running agent found" in r.output


async def test_run_until_signal_returns_when_main_ends() -> None:
    async def quick() -> None:
        return None

    assert await daemons.run_until_signal(quick()) is False


def test_the_user_facing_error_is_picked_from_exception_groups() -> None:
    from cloudless.cli.main import _leaf_error

    inner = CloudlessError("the store has no quorum")
    group = BaseExceptionGroup("x", [RuntimeError("side effect"), ExceptionGroup("y", [inner])])
    assert _leaf_error(group) is inner
    plain = ValueError("v")
    assert _leaf_error(ExceptionGroup("z", [plain])) is plain
    assert _leaf_error(plain) is plain


def test_read_specs_from_files_documents_and_directories(tmp_path: Path) -> None:
    from cloudless.cli.actions import read_specs

    (tmp_path / "b.yaml").write_text("name: b\nimage: x\n---\nname: c\nimage: y\n")
    (tmp_path / "a.json").write_text('{"name": "a", "image": "x"}')
    (tmp_path / "notes.txt").write_text("ignored")
    single = read_specs(str(tmp_path / "a.json"))
    assert single == [(str(tmp_path / "a.json"), b'{"name": "a", "image": "x"}')]  # as is
    specs = read_specs(str(tmp_path))
    # by file name; a file's documents become one JSON body each, named file#n
    assert [s for s, _ in specs] == [
        str(tmp_path / "a.json"), f"{tmp_path / 'b.yaml'}#1", f"{tmp_path / 'b.yaml'}#2"
    ]  # fmt: skip
    assert json.loads(specs[2][1]) == {"name": "c", "image": "y"}
    # text that does not parse goes as is, so the server names the problem
    (tmp_path / "bad.yml").write_text("name: [unclosed\n")
    assert read_specs(str(tmp_path / "bad.yml"))[0][1] == b"name: [unclosed\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CloudlessError, match=r"no \.yaml, \.yml or \.json files"):
        read_specs(str(empty))


def test_a_closed_pipe_ends_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    import cloudless.cli.resources as resources

    def closed(config: Any) -> Any:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(resources, "connect", closed)
    r = run("get", "nodes")
    assert r.exit_code == 1
    assert "error" not in r.stderr and "Traceback" not in r.output


def test_netpolicy_apply_of_a_missing_file_names_it() -> None:
    r = run("netpolicy", "apply", "-f", "/nonexistent/policy.yaml")
    assert r.exit_code == 1
    assert "cannot read /nonexistent/policy.yaml" in r.output


def test_netpolicy_rules_read_as_one_line() -> None:
    from cloudless.cli.netpolicy_cmd import _rules

    doc = {
        "ingress": [
            {"action": "deny", "from": [{"namespace": "jobs"}]},
            {
                "action": "allow",
                "from": [{"namespace": "web", "selector": {"tier": "front"}}],
                "ports": [{"port": 5432, "protocol": "tcp"}],
            },
        ]
    }
    assert _rules(doc, "ingress") == (
        "deny from jobs to any; allow from web[tier=front] to tcp/5432"
    )
    assert _rules(doc, "egress") == "-"
    egress = {
        "egress": [
            {"action": "allow", "to": [{"namespace": "db"}, {"cidr": "203.0.113.0/24"}]},
            {"action": "deny", "to": [{"cidr": "169.254.169.254/32"}]},
        ]
    }
    assert _rules(egress, "egress") == (
        "allow to db 203.0.113.0/24 any; deny to 169.254.169.254/32 any"
    )


@pytest.mark.parametrize(
    "advertise,ok",
    [("203.0.113.7", True), ("nas.example.org", True), ("fd00::7", True),
     ("http://203.0.113.7", False), ("203.0.113.7:3900", False), ("bad host", False)],
)  # fmt: skip
def test_storage_advertise_is_a_bare_host(tmp_path: Path, advertise: str, ok: bool) -> None:
    import typer

    a = daemons.agent_config(
        join="", token="", data_dir=tmp_path, name="pi", zone="home", region="", labels=None,
        address="192.168.1.9", cpu=None, memory=None, disk=None,
    )  # fmt: skip
    listen = ("0.0.0.0:3901", "0.0.0.0:3900")
    if ok:
        s = daemons.storage_config(a, "1Gi", *listen, 3, None, advertise=advertise)
        assert s.advertise == advertise
    else:
        with pytest.raises(typer.BadParameter) as e:
            daemons.storage_config(a, "1Gi", *listen, 3, None, advertise=advertise)
        assert e.value.param_hint == "--storage-advertise"
