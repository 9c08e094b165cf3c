"""The harness's pure parts: /proc parsing, event matching, summaries, worker splits."""

from __future__ import annotations

import pytest

from bench.cluster_scale.measure import (
    Event,
    cpu_seconds,
    first_after,
    parse_event,
    rss_bytes,
    split_counts,
    summary,
)

# /proc/<pid>/stat with a command name holding a space and a ')': utime=250, stime=150 ticks.
STAT = "1234 (py thon) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 3 0 99 1 2"


def test_cpu_seconds_counts_fields_after_the_last_paren() -> None:
    # (250 + 150) ticks / 100 ticks per second = 4.0 s
    assert cpu_seconds(STAT, 100) == 4.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Name:\tpython\nVmRSS:\t  2048 kB\nThreads: 3\n", 2048 * 1024),
        ("Name:\tzombie\n", 0),  # a zombie has no VmRSS line
    ],
)
def test_rss_bytes(text: str, expected: int) -> None:
    assert rss_bytes(text) == expected


def ev(at: float, kind: str = "node", **f: str) -> Event:
    return parse_event({"at": at, "kind": kind, "message": "m", **f})


def test_first_after_picks_the_earliest_matching_event_not_before_t0() -> None:
    evs = [
        ev(9.0, node="a", state="offline"),  # before t0: ignored
        ev(12.0, node="a", state="offline"),
        ev(11.0, node="b", state="offline"),  # other node
        ev(10.5, node="a", state="ready"),  # other state
        ev(11.5, node="a", state="offline"),  # earliest match (list order does not matter)
    ]
    got = first_after(evs, 10.0, kind="node", node="a", state="offline")
    assert got is not None and got.at == 11.5
    assert first_after(evs, 10.0, kind="replica", node="a") is None


@pytest.mark.parametrize(
    ("values", "p50", "p95", "ok"),
    [
        # sorted 1..5: p50 = 3; p95 at rank 0.95*4 = 3.8 -> 4 + 0.8*(5-4) = 4.8
        ([5.0, 1.0, 3.0, 2.0, 4.0], 3.0, 4.8, False),  # 4.8 > goal 4
        ([1.0, 2.0, 3.0], 2.0, 2.9, True),  # rank 1.9 -> 2 + 0.9 = 2.9
    ],
)
def test_summary_against_goals(values: list[float], p50: float, p95: float, ok: bool) -> None:
    s = summary(values, 3.0, 4.0)
    assert (s["n"], s["p50"], s["p95"], s["pass"]) == (len(values), p50, p95, ok)


def test_summary_of_nothing_has_no_verdict() -> None:
    assert summary([], 1.0, 2.0) == {"n": 0, "p50": None, "p95": None, "max": None}


@pytest.mark.parametrize(
    ("total", "parts", "expected"),
    [(10, 3, [4, 3, 3]), (2, 5, [1, 1]), (0, 3, []), (700, 1, [700])],
)
def test_split_counts(total: int, parts: int, expected: list[int]) -> None:
    assert split_counts(total, parts) == expected


def test_report_rows_name_misses_and_breaks() -> None:
    from bench.cluster_scale.report import markdown, rows

    results = {
        "scale": {
            "steps": [
                {
                    "nodes": 1000,
                    "scheduling": {"per_replica_s": summary([0.010, 0.030], 0.020, 0.050)},
                    "cutoff": {"offline_s": summary([2.2], 2.0, 4.0)},  # an older SIGSTOP run
                },
                {
                    "nodes": 2000,
                    "grow": {
                        "enrolled": 2000,
                        "seconds": 180.0,
                        "enroll_rate_per_s": 11.1,
                        "enroll_errors": 0,
                    },
                    "cutoff": {
                        "method": "iptables",
                        # sorted 1.0, 1.5, 3.0: p50 1.5; p95 rank 1.9 -> 1.5 + 0.9 * 1.5 = 2.85
                        "offline_s": summary([3.0, 1.0, 1.5], 2.0, 4.0),
                        "replacement_running_s": summary([6.0], 2.5, 5.0),
                    },
                },
                {"nodes": 5000, "broke": "only 10/5000 nodes ready after 600s"},
            ]
        },
        "failover": {"write_failure_window_s": summary([5.1], 3.0), "acknowledged_writes_lost": 0},
    }
    table = {(r[0], r[2]): r for r in rows(results)}
    # per replica: p50 of 10 and 30 ms = 20 ms <= 20 ms; p95 = 29 ms <= 50 ms -> pass
    sched = table[("scheduling: apply -> each replica placed", "1000")]
    assert sched[4:] == ["20 ms", "29 ms", "pass"]
    assert table[("membership: cut-off (SIGSTOP, stream open)", "1000")][-1] == "**miss**"
    assert table[("membership: kill -9 of the agent process", "1000")][-1] == "not measured"
    assert table[("scale-up", "5000")][-1].startswith("**broke**")
    cut = table[("membership: cut-off (iptables DROP, no FIN)", "2000")]
    assert cut[3:] == ["3", "1.50 s", "2.85 s", "pass"]
    assert table[("rescheduling: cut-off -> replacement running", "2000")][-1] == "**miss**"
    assert table[("scale-up: enroll until all ready", "2000")][4:6] == ["180.0 s", "11.1 nodes/s"]
    assert ("rescheduling: cut-off -> replacement running", "1000") not in table
    fo = table[("failover: API writes failing after kill -9 of leader", "3 coord.")]
    assert fo[4:] == ["5.10 s", "0 lost", "**miss**"]
    assert markdown(results).count("\n") == len(rows(results)) + 1


def test_aimd_grows_by_about_one_per_round_and_backs_off() -> None:
    from bench.cluster_scale.measure import Aimd

    a = Aimd(4, lo=1, hi=6, slow_s=3.0)
    for _ in range(4):  # one round of four fast answers: 4 + 1/4 + 1/4.25 + ... ~ 4.94
        a.answered(0.5)
    assert a.window == 4 and 4.9 < a.limit < 5.0
    for _ in range(20):
        a.answered(0.5)
    assert a.limit == 6  # capped at hi
    a.answered(5.0)  # slow: 6 * 0.7 = 4.2
    assert a.window == 4
    a.failed()  # 4.2 / 2 = 2.1
    a.failed()  # 1.05
    a.failed()  # floor at lo = 1
    assert a.limit == 1.0


def test_report_names_a_run_that_ended_early() -> None:
    from bench.cluster_scale.report import rows

    results = {
        "scale": {
            "steps": [{"nodes": 2000, "broke": "not grown: only 325 of 995 nodes were ready"}],
            "error": "KeyboardInterrupt: signal 15",
        }
    }
    got = rows(results)
    assert got[0][0] == "scale-up" and "not grown" in got[0][-1]
    assert got[-1][0] == "scale run ended early" and "signal 15" in got[-1][-1]
