"""Formatting helpers: worked examples, one per row."""

from __future__ import annotations

import pytest

from cloudless.cli import fmt

NOW = 1_000_000.0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (45.9, "45s"),  # whole seconds, truncated
        (60, "1m"),
        (192, "3m12s"),  # 3*60 + 12
        (3600, "1h"),
        (5 * 3600 + 3 * 60 + 59, "5h3m"),  # seconds dropped past an hour
        (86400, "1d"),
        (2 * 86400 + 4 * 3600 + 120, "2d4h"),
        (-5, "0s"),  # clock skew never shows a negative age
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert fmt.human_duration(seconds) == text


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("90s", 90),
        ("15m", 900),
        ("24h", 86400),
        ("7d", 604800),
        ("1h30m", 5400),  # 3600 + 1800
        ("1w", 604800),
        ("500ms", 0.5),
        ("1.5h", 5400),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert fmt.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "10x", "1h 5m", "-1", "0s", "0", "abc", "5m3"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|positive"):
        fmt.parse_duration(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0), ("0s", 0), ("0m", 0), ("90s", 90)],  # `ca rotate --overlap 0`: no overlap
)
def test_parse_duration_allow_zero(text: str, seconds: float) -> None:
    assert fmt.parse_duration(text, allow_zero=True) == seconds


@pytest.mark.parametrize("text", ["-1", "-0.5", "", "x"])
def test_parse_duration_allow_zero_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|0 or more"):
        fmt.parse_duration(text, allow_zero=True)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0B"),
        (512, "512B"),
        (1536, "1.5Ki"),  # 1536 / 1024
        (16 << 20, "16Mi"),
        (int(3.75 * (1 << 30)), "3.8Gi"),  # one decimal, rounded
        (2 << 40, "2Ti"),
    ],
)
def test_human_size(n: int, text: str) -> None:
    assert fmt.human_size(n) == text


@pytest.mark.parametrize(
    ("millis", "text"), [(2000, "2"), (1500, "1500m"), (0, "0"), (100, "100m")]
)
def test_human_cpu(millis: int, text: str) -> None:
    assert fmt.human_cpu(millis) == text


def test_parse_labels() -> None:
    assert fmt.parse_labels(["zone=a", " gpu = yes ", "empty="]) == {
        "zone": "a",
        "gpu": "yes",
        "empty": "",
    }
    assert fmt.parse_labels(None) == {}
    with pytest.raises(ValueError, match="'novalue': expected KEY=VALUE"):
        fmt.parse_labels(["novalue"])
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        fmt.parse_labels(["=x"])


def node(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": "n1-abc",
        "name": "n1",
        "state": "ready",
        "zone": "z1",
        "region": "eu",
        "arch": "arm64",
        "allocatable": {"cpu_millis": 4000, "memory_bytes": 8 << 30},
        "usage": {"cpu_millis": 1000, "memory_bytes": 2 << 30},
        "last_heartbeat": NOW - 3,
    }
    return base | kw


@pytest.mark.parametrize(
    ("n", "row"),
    [
        # cpu 1000/4000 = 25%; memory 2Gi/8Gi = 25%; heartbeat 3s ago
        (
            node(),
            ["n1-abc", "n1", "ready", "z1", "eu", "arm64", "1/4 (25%)", "2Gi/8Gi (25%)", "3s"],
        ),
        # no zone/region, never heard from, nothing allocatable: dashes, no division by zero
        (
            node(zone="", region="", last_heartbeat=0, allocatable={}, usage={}),
            ["n1-abc", "n1", "ready", "-", "-", "arm64", "0/0 (-)", "0B/0B (-)", "-"],
        ),
        # 1500m of 2 cores = 75%; 512Mi of 1Gi = 50%; 125s = 2m5s
        (
            node(
                allocatable={"cpu_millis": 2000, "memory_bytes": 1 << 30},
                usage={"cpu_millis": 1500, "memory_bytes": 512 << 20},
                last_heartbeat=NOW - 125,
                state="offline",
            ),
            [
                "n1-abc",
                "n1",
                "offline",
                "z1",
                "eu",
                "arm64",
                "1500m/2 (75%)",
                "512Mi/1Gi (50%)",
                "2m5s",
            ],
        ),
    ],
)
def test_node_row(n: dict[str, object], row: list[str]) -> None:
    assert fmt.node_row(n, NOW) == row
    assert len(row) == len(fmt.NODE_HEADERS)


@pytest.mark.parametrize(
    ("w", "row"),
    [
        (
            {"name": "web", "replicas_wanted": 3, "replicas_running": 2, "version": 4,
             "created_at": NOW - 3600, "unplaced": 1,
             "unplaced_reason": "0/5 nodes fit: 5 insufficient memory"},
            ["web", "2/3", "4", "1h", "1: 0/5 nodes fit: 5 insufficient memory"],
        ),
        (
            {"name": "db", "replicas_wanted": 1, "replicas_running": 1, "version": 1,
             "created_at": NOW - 59, "unplaced": 0, "unplaced_reason": ""},
            ["db", "1/1", "1", "59s", "-"],
        ),
        (
            {"name": "old", "deleted": True, "replicas_wanted": 2, "version": 2,
             "created_at": NOW - 60},
            ["old (deleting)", "0/2", "2", "1m", "-"],
        ),
    ],
)  # fmt: skip
def test_workload_row(w: dict[str, object], row: list[str]) -> None:
    assert fmt.workload_row(w, NOW) == row


@pytest.mark.parametrize(
    ("r", "row"),
    [
        # placed on n1-abc, shown by name; running for 10s
        (
            {"id": "web-1", "workload": "web", "node_id": "n1-abc", "desired": "running",
             "observed": "running", "restarts": 2, "started_at": NOW - 10,
             "created_at": NOW - 100, "reason": "", "ready": True},
            ["web-1", "web", "n1", "running", "running", "yes", "2", "10s", "-"],
        ),
        # running but failing its readiness check: READY no, the check's words as the reason
        (
            {"id": "web-4", "workload": "web", "node_id": "n1-abc", "desired": "running",
             "observed": "running", "restarts": 0, "started_at": NOW - 10, "ready": False,
             "health": "readiness http GET :8080/: HTTP 503"},
            ["web-4", "web", "n1", "running", "running", "no", "0", "10s",
             "readiness http GET :8080/: HTTP 503"],
        ),
        # unplaced: no node; age from creation
        (
            {"id": "web-2", "workload": "web", "node_id": "", "desired": "running",
             "observed": "pending", "restarts": 0, "started_at": 0,
             "created_at": NOW - 100, "reason": "0/3 nodes fit"},
            ["web-2", "web", "-", "running", "pending", "-", "0", "1m40s", "0/3 nodes fit"],
        ),
        # failed with an exit code: the code leads the reason; unknown node shown by id
        (
            {"id": "web-3", "workload": "web", "node_id": "n9", "desired": "running",
             "observed": "failed", "restarts": 5, "exit_code": 137,
             "created_at": NOW - 5, "reason": "OOM killed"},
            ["web-3", "web", "n9", "running", "failed", "-", "5", "5s", "exit 137: OOM killed"],
        ),
    ],
)  # fmt: skip
def test_replica_row(r: dict[str, object], row: list[str]) -> None:
    assert fmt.replica_row(r, NOW, {"n1-abc": "n1"}) == row


@pytest.mark.parametrize(
    ("t", "row"),
    [
        (
            {"token_id": "tok-1", "use": "node-enrollment", "state": "active",
             "expires_at": NOW + 86400, "labels": {"b": "2", "a": "1"}},
            ["tok-1", "node-enrollment", "active", "in 1d", "a=1,b=2", "-"],
        ),
        (
            {"token_id": "tok-2", "use": "coordinator-join", "state": "expired",
             "expires_at": NOW - 300, "labels": {}, "used_by": None},
            ["tok-2", "coordinator-join", "expired", "5m ago", "-", "-"],
        ),
        (
            {"token_id": "tok-3", "use": "node-enrollment", "state": "used",
             "expires_at": NOW + 60, "used_by": "n1-abc"},
            ["tok-3", "node-enrollment", "used", "in 1m", "-", "n1-abc"],
        ),
    ],
)  # fmt: skip
def test_token_row(t: dict[str, object], row: list[str]) -> None:
    assert fmt.token_row(t, NOW) == row


def test_explain_table() -> None:
    best = [
        {"node": "n1-abc", "locality": 0.5, "cost": 0.97, "affinity": 0.0, "total": 0.6741},
        {"node": "n2-def", "locality": 1.0, "network": 0.3, "affinity": -0.25, "total": 0.5},
    ]
    # factors in first-seen order; a factor a node lacks shows "-"
    assert fmt.explain_headers(best) == [
        "#", "NODE", "TOTAL", "LOCALITY", "COST", "NETWORK", "AFFINITY"
    ]  # fmt: skip
    assert fmt.explain_rows(best, {"n1-abc": "n1"}) == [
        ["1", "n1 (n1-abc)", "0.674", "0.50", "0.97", "-", "+0.00"],
        ["2", "n2-def", "0.500", "1.00", "-", "0.30", "-0.25"],
    ]


def test_event_line() -> None:
    e = {"kind": "replica", "message": "replica web-1 on n1-abc: pending -> running", "at": NOW}
    line = fmt.event_line(e)
    assert line.endswith("  replica   replica web-1 on n1-abc: pending -> running")
    assert line[:19] == fmt.clock_time(NOW)


def test_compact_spec() -> None:
    spec = {
        "name": "web",
        "replicas": 0,
        "args": [],
        "env": {},
        "resources": {"cpu": "100m", "disk": 0},
        "placement": {"affinity": {"required_nodes": []}, "spread": [{"key": "zone", "skew": 1}]},
        "needs_public": False,
    }
    # replicas: 0 is kept; empty and zero defaults vanish, including maps left empty
    assert fmt.compact(spec) == {
        "name": "web",
        "replicas": 0,
        "resources": {"cpu": "100m"},
        "placement": {"spread": [{"key": "zone", "skew": 1}]},
    }
