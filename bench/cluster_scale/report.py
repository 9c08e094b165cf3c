"""Render ``bench/results/cluster_scale.json`` as the Markdown table of docs/performance.md:
``python -m bench.cluster_scale.report [results.json]``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.common import RESULTS


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f} ms"


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def _verdict(s: dict[str, Any]) -> str:
    if s.get("n", 0) == 0:
        return "not measured"
    return {True: "pass", False: "**miss**"}.get(s.get("pass"), "-")


def _cutoff_rows(cut: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Runs before the real cut-off (no ``method``) froze the process with SIGSTOP instead."""
    if not cut:
        return []
    if "method" in cut:
        label = "membership: cut-off (iptables DROP, no FIN)"
    else:
        label = "membership: cut-off (SIGSTOP, stream open)"
    return [(label, "2 / 4 s", cut.get("offline_s", {}))]


def rows(results: dict[str, Any]) -> list[list[str]]:
    """One row per (metric, N): metric, goal, N, samples, P50, P95, verdict."""
    out: list[list[str]] = []
    for st in results.get("scale", {}).get("steps", []):
        n = str(st["nodes"])
        if "broke" in st:
            out.append(["scale-up", "-", n, "-", "-", "-", f"**broke**: {st['broke']}"])
            continue
        if set(st) <= {"nodes", "errors"}:  # stopped before anything was measured
            out.append(["scale-up", "-", n, "-", "-", "-", "**interrupted while growing**"])
            continue
        g = st.get("grow", {})
        if g.get("enroll_rate_per_s") is not None:
            out.append(["scale-up: enroll until all ready", "-", n, f"{g.get('enrolled')} nodes",
                        f"{g.get('seconds')} s", f"{g['enroll_rate_per_s']} nodes/s",
                        f"{g.get('enroll_errors', 0)} errors"])  # fmt: skip
        sch = st.get("scheduling", {})
        for key, label in (
            ("per_replica_s", "scheduling: apply -> each replica placed"),
            ("amortized_per_replica_s", "scheduling: whole workload / replicas"),
        ):
            s = sch.get(key, {})
            out.append([label, "20 / 50 ms", n, str(s.get("n", 0)), _ms(s.get("p50")),
                        _ms(s.get("p95")), _verdict(s)])  # fmt: skip
        for key, label in (
            ("apply_request_s", "  of which: the apply request (per workload)"),
            ("commit_to_placed_s", "  of which: workload committed -> replica placed"),
        ):
            s = sch.get(key, {})
            if s:
                out.append([label, "-", n, str(s.get("n", 0)), _ms(s.get("p50")),
                            _ms(s.get("p95")), "-"])  # fmt: skip
        cut = st.get("cutoff", {})
        sock = cut.get("coordinator_socket_closed_s", {})
        table = [
            ("membership: stream cut (agent task killed)", "2 / 4 s",
             st.get("reschedule", {}).get("offline_after_stream_break_s", {})),
            ("membership: kill -9 of the agent process", "2 / 4 s",
             st.get("kill9", {}).get("offline_s", {})),
            *_cutoff_rows(cut),
            # where a cut-off's time goes: the transport, then the disconnect grace
            *([("  of which: cut -> coordinator's socket closed", "-", sock)] if sock else []),
            ("rescheduling: death -> replacement running", "2.5 / 5 s",
             st.get("reschedule", {}).get("replacement_running_s", {})),
        ]  # fmt: skip
        if "method" in cut:
            table.append(("rescheduling: cut-off -> replacement running", "2.5 / 5 s",
                          cut.get("replacement_running_s", {})))  # fmt: skip
        for label, goal, s in table:
            verdict = _verdict(s) if goal != "-" else "-"
            out.append([label, goal, n, str(s.get("n", 0)), _s(s.get("p50")), _s(s.get("p95")),
                        verdict])  # fmt: skip
        hb = st.get("heartbeat_cost", {})
        if hb:
            cores, rss = hb["coordinator_cores"], hb["coordinator_rss_mb"]
            ok = "pass" if cores <= 1.0 and rss <= 1024 else "**miss**"
            label = "heartbeat cost: coordinator CPU, RSS"
            out.append([label, "<= 1 core, <= 1 GB", n, f"{hb['window_s']} s",
                        f"{cores:.2f} cores", f"{rss:.0f} MB", ok])  # fmt: skip
        fa = st.get("false_alarms", {})
        if fa:
            bad = fa["nodes_wrongly_offline"] + fa["replicas_needlessly_replaced"]
            out.append(["false alarms: 1-2 s freezes", "no mass restarts", n,
                        f"{fa['freezes']} freezes",
                        f"{fa['nodes_wrongly_offline']} offline",
                        f"{fa['replicas_needlessly_replaced']} replaced",
                        "pass" if bad == 0 else "**miss**"])  # fmt: skip
    err = results.get("scale", {}).get("error")
    if err:
        out.append(["scale run ended early", "-", "-", "-", "-", "-", f"**{err}**"])
    fo = results.get("failover", {})
    if fo:
        s = fo.get("write_failure_window_s", {})
        lost = fo.get("acknowledged_writes_lost")
        label = "failover: API writes failing after kill -9 of leader"
        out.append([label, "P50 <= 3 s; 0 lost",
                    "3 coord.", str(s.get("n", 0)), _s(s.get("p50")), f"{lost} lost",
                    _verdict(s) if lost == 0 else "**miss** (writes lost)"])  # fmt: skip
    return out


def markdown(results: dict[str, Any]) -> str:
    if "runs" in results:
        return _runs_markdown(results["runs"])
    head = ["metric", "goal P50 / P95", "N", "samples", "P50", "P95", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows(results)]
    return "\n".join(lines)


def _runs_markdown(runs: list[dict[str, Any]]) -> str:
    """Several runs (``bench.cluster_scale.combine``): per metric, each run's P50 / P95 and
    verdict side by side."""
    tables = [rows(r) for r in runs]
    head = ["metric", "goal P50 / P95", "N"] + [
        f"run {i + 1}: P50 / P95 (verdict)" for i in range(len(runs))
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    keys: list[tuple[str, str]] = []
    cells: dict[tuple[str, str], list[str]] = {}
    for i, table in enumerate(tables):
        for metric, goal, n, _samples, p50, p95, verdict in table:
            key = (metric, n)
            if key not in cells:
                keys.append(key)
                cells[key] = [goal] + ["-"] * len(tables)
            cells[key][1 + i] = f"{p50} / {p95} ({verdict})"
    for key in keys:
        goal, *per_run = cells[key]
        lines.append("| " + " | ".join([key[0], goal, key[1], *per_run]) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS / "cluster_scale.json"
    print(markdown(json.loads(path.read_text())))
