"""One growing cluster: a real coordinator (embedded etcd) and N simulated agents, measured
at each step of N. See ``__main__`` for the command line and ``docs/performance.md``."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloudless.coordinator.deciders.membership import MembershipConfig

from .cluster import (
    CoordinatorProc,
    EventFollower,
    PatientClient,
    Worker,
    admin_client,
    make_tokens,
    proc_cpu,
    proc_rss,
)
from .measure import Event, first_after, split_counts, summary
from .netcut import Cut, watch_server_side

PER_WORKER = 1250  # agents per bulk worker process (one asyncio loop each)
IN_FLIGHT = 24  # initial enrollments in flight over the bulk workers of one step
KILL9_PROCS, CUT_PROCS, FREEZE_PROCS = 8, 4, 7  # one-agent processes


def spec(name: str, replicas: int, selector: str = "") -> bytes:
    sel = (
        f"  node_selector: [{{key: bench-role, operator: in, values: [{selector}]}}]\n"
        if selector
        else ""
    )
    return (
        f"name: {name}\nimage: busybox:latest\ncommand: [sleep, '3600']\n"
        f"resources: {{cpu: 10m, memory: 8Mi}}\nreplicas: {replicas}\n"
        f"placement:\n{sel}  max_per_node: 1\n"
    ).encode()


def went(node: str, t0: float, state: str) -> Callable[[list[Event]], Event | None]:
    """A predicate: the first event after ``t0`` recording ``node`` entering ``state``."""
    return lambda evs: first_after(evs, t0, kind="node", node=node, state=state)


def replacement_running(wl: str, dead: str, t0: float) -> Callable[[list[Event]], Event | None]:
    """A predicate: a replica of ``wl`` placed after ``t0`` off ``dead`` and reported running."""

    def pred(evs: list[Event]) -> Event | None:
        for p in evs:
            if (
                p.kind == "placement"
                and p.fields.get("workload") == wl
                and p.at >= t0
                and p.fields.get("node") != dead
                and "replica" in p.fields
            ):
                ev = first_after(
                    evs, t0, kind="replica", replica=p.fields["replica"], state="running"
                )
                if ev:
                    return ev
        return None

    return pred


def _after(ev: Event | None, t0: float) -> str:
    return f"+{ev.at - t0:.3f}s" if ev else "never (timed out)"


class ScaleRun:
    def __init__(self, root: Path, log: Any) -> None:
        self.root = root
        self.log = log
        self.coord = CoordinatorProc("c1", root / "c1")
        self.tokens = root / "tokens.txt"
        self.workers: list[Worker] = []
        self.used_tokens = 0
        self.client: PatientClient
        self.events: EventFollower
        self.rng = random.Random(7)
        self.dead: set[str] = set()
        self._token_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.token_errors: list[str] = []

    # ---- setup -------------------------------------------------------------------------

    def start(self) -> None:
        self.coord.data.mkdir(parents=True)
        self.coord.start(bootstrap=True)
        self.client = PatientClient(admin_client(self.coord))
        self.events = EventFollower(self.client)

    def add_workers(
        self, counts: list[int], role: str, concurrency: int, stream: bool = False
    ) -> list[Worker]:
        """Start worker processes for ``counts`` agents. Their join tokens are created first,
        or with ``stream``, in the background in chunks of 20 while the agents already
        enroll (each waits for its line of the token file)."""
        need = sum(counts)
        if self._token_thread is not None:
            self._token_thread.join()  # tokens are appended in order: one writer at a time
        if stream:
            self._token_thread = threading.Thread(
                target=self._make_tokens, args=(need,), daemon=True
            )
            self._token_thread.start()
        else:
            make_tokens(self.client, need, self.tokens)
        out = []
        for c in counts:
            w = Worker(
                self.coord.api, self.tokens, self.used_tokens, c, self.root / "agents", role,
                concurrency,
            )  # fmt: skip
            self.used_tokens += c
            out.append(w)
        self.workers += out
        return out

    def _make_tokens(self, need: int) -> None:
        try:
            while need > 0 and not self._stopping.is_set():
                make_tokens(self.client, min(20, need), self.tokens)
                need -= min(20, need)
        except Exception as e:  # the agents waiting for them stall; grow() reports that
            self.token_errors.append(f"{type(e).__name__}: {e}")

    def enrolled(self) -> int:
        return sum(len(w.nodes) for w in self.workers)

    def ready_count(self) -> int:
        try:
            return sum(1 for n in self.client.nodes() if n["state"] == "ready")
        except Exception:  # no leader for a moment: count as none ready, ask again later
            return 0

    def term_ends(self) -> int:
        """How often the coordinator lost its leadership so far (its log: "term ended")."""
        try:
            with (self.root / "c1.log").open(errors="replace") as fh:
                return sum(1 for line in fh if "term ended" in line)
        except OSError:
            return 0

    def healthy(self, wait: float) -> bool:
        """Whether at least 98 % of the live enrolled nodes are ready within ``wait`` s."""
        deadline = time.monotonic() + wait
        while True:
            if self.ready_count() >= 0.98 * (self.enrolled() - len(self.dead)):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(5.0)

    def link_failures(self) -> int:
        """Agent streams ended so far (silent coordinator, broken stream): from worker logs."""
        n = 0
        for f in (self.root / "agents").parent.glob("worker-*.log"):
            with f.open(errors="replace") as fh:
                n += sum(1 for line in fh if "cloudless.agent.link link to" in line)
        return n

    def max_lag(self, since: float) -> float:
        """The worst event-loop lag of the bulk workers since ``since`` (monotonic)."""
        return max((w.max_lag(since) for w in self.workers if w.role == "bulk"), default=0.0)

    def owner(self, node_id: str) -> Worker | None:
        return next((w for w in self.workers if node_id in w.nodes), None)

    def stop(self) -> None:
        self._stopping.set()
        if self._token_thread is not None:  # at most one chunk of tokens more
            self._token_thread.join(timeout=30)
        for w in self.workers:
            w.stop()
        self.coord.stop()

    # ---- measurements --------------------------------------------------------------------

    def grow(self, n: int) -> dict[str, Any]:
        """Add agents until ``n`` nodes are ready; the time it took and any failure.

        Enrollment stops when every agent has enrolled, when fewer than max(10, 1 % of the
        step) have in 60 s (the
        agents gave up, or the coordinator is in a reconnect storm) or after
        ``max(300, n / 2)`` s; then up to 120 s for every enrolled node to be ``ready``. A
        progress line every 15 s.
        """
        t0 = time.monotonic()
        if not self.workers:  # one-agent processes to kill -9, to cut off and to freeze
            self.add_workers([1] * KILL9_PROCS, "kill9", 1)
            self.add_workers([1] * CUT_PROCS, "cut", 1)
            self.add_workers([1] * FREEZE_PROCS, "freeze", 1)
        delta = n - self.used_tokens
        new: list[Worker] = []
        if delta > 0:
            parts = -(-delta // PER_WORKER)
            new = self.add_workers(
                split_counts(delta, parts), "bulk", max(2, IN_FLIGHT // parts), stream=True
            )
        t_spawned = time.monotonic()
        budget = max(300.0, n / 2)
        trickle = max(10, delta // 100)  # fewer enrolled in 60 s: stalled (1 % of the step)
        deadline = t0 + budget
        last = (time.monotonic(), self.enrolled(), proc_cpu(self.coord.pid), 0)
        progress_at, seen = time.monotonic(), -1
        stalled = False
        while time.monotonic() < deadline:
            got = self.enrolled()
            if got >= seen + trickle or seen < 0:  # a trickle is a stall
                progress_at, seen = time.monotonic(), got
            if got >= n:
                break
            if time.monotonic() - progress_at > 60:
                stalled = True
                break
            if time.monotonic() - last[0] >= 15:
                last = self._progress(n, t0, last, new)
            time.sleep(1.0)
        t_enrolled = time.monotonic()
        ready = 0
        settle_by = time.monotonic() + 120  # first heartbeats, or recovery after a storm
        while time.monotonic() < settle_by:
            # Listing every node costs the coordinator (store range, JSON of N records):
            # every 5 s, not more, so the harness does not become part of the load.
            ready = self.ready_count()
            if ready >= self.enrolled() - len(self.dead):
                break
            if time.monotonic() - last[0] >= 15:
                last = self._progress(n, t0, last, new, ready)
            time.sleep(5.0)
        errors = [e for w in self.workers for e in w.errors]
        lat = [x for w in new for x in w.enroll_s]
        enroll_s = t_enrolled - t_spawned
        added = sum(len(w.nodes) for w in new)
        out = {
            "target": n,
            "ready": ready,
            "enrolled": self.enrolled(),
            "seconds": round(time.monotonic() - t0, 1),
            "enroll_seconds": round(enroll_s, 1),
            "enroll_rate_per_s": round(added / enroll_s, 1) if enroll_s > 0 else None,
            "enroll_latency_s": summary(lat),
            "enroll_in_flight_limits": [round(w.limit, 1) for w in new],
            "enroll_errors": len(errors),
            "enroll_stalled": stalled,
            "agent_stream_drops_so_far": self.link_failures(),
            "coordinator_leadership_lapses_so_far": self.term_ends(),
            "worker_max_loop_lag_s": self.max_lag(t0),
            "load_average_1m": round(os.getloadavg()[0], 1),  # the machine is shared
            "coordinator_rss_mb": round(proc_rss(self.coord.pid) / 2**20, 1),
            "first_errors": errors[:3],
            "token_errors": self.token_errors[:3],
        }
        self.log(f"grow -> {out}")
        return out

    def _progress(
        self,
        n: int,
        t0: float,
        last: tuple[float, int, float, int],
        new: list[Worker],
        ready: int | None = None,
    ) -> tuple[float, int, float, int]:
        now, got, cpu = time.monotonic(), self.enrolled(), proc_cpu(self.coord.pid)
        dt = now - last[0]
        recent = [x for w in new for x in w.enroll_s[-50:]]
        p50 = summary(recent).get("p50")
        drops = self.link_failures()
        self.log(
            f"  N={n}: enrolled {got}, ready {self.ready_count() if ready is None else ready} "
            f"after {now - t0:.0f}s; "
            f"{(got - last[1]) / dt:.1f} nodes/s; coordinator {(cpu - last[2]) / dt:.2f} cores "
            f"{proc_rss(self.coord.pid) / 2**20:.0f} MB; enroll P50 {p50}s, in flight <= "
            f"{sum(w.limit for w in new if len(w.nodes) < w.count):.0f}; "
            f"stream drops +{drops - last[3]}; worker loop lag <= {self.max_lag(last[0]):.1f}s; "
            f"load {os.getloadavg()[0]:.0f}"
        )
        return now, got, cpu, drops

    def heartbeat_cost(self, seconds: float) -> dict[str, Any]:
        etcd = self.coord.etcd_pids()
        wpids = [w.proc.pid for w in self.workers]
        c0, e0 = proc_cpu(self.coord.pid), sum(proc_cpu(p) for p in etcd)
        w0 = sum(proc_cpu(p) for p in wpids)
        drops0 = self.link_failures()
        t0 = time.monotonic()
        time.sleep(seconds)
        dt = time.monotonic() - t0
        out = {
            "window_s": round(dt, 1),
            "coordinator_cores": round((proc_cpu(self.coord.pid) - c0) / dt, 3),
            "etcd_cores": round((sum(proc_cpu(p) for p in etcd) - e0) / dt, 3),
            "agent_workers_cores": round((sum(proc_cpu(p) for p in wpids) - w0) / dt, 3),
            "coordinator_rss_mb": round(proc_rss(self.coord.pid) / 2**20, 1),
            "etcd_rss_mb": round(sum(proc_rss(p) for p in etcd) / 2**20, 1),
            "agent_workers_rss_mb": round(sum(proc_rss(p) for p in wpids) / 2**20, 1),
            "agent_stream_drops_in_window": self.link_failures() - drops0,
            "coordinator_leadership_lapses_so_far": self.term_ends(),
            "worker_max_loop_lag_s": self.max_lag(t0),
            "load_average_1m": round(os.getloadavg()[0], 1),
            "heartbeat_interval_s": MembershipConfig().interval_for(len(self.client.nodes())),
        }
        self.log(f"heartbeat cost: {out}")
        return out

    def scheduling(self, n: int, workloads: int, replicas: int) -> tuple[dict[str, Any], list[str]]:
        """Apply workloads one at a time; per replica, apply -> placement committed."""
        lat: list[float] = []
        whole: list[float] = []
        accepted: list[float] = []  # apply sent -> workload committed (coordinator's clock)
        after_commit: list[float] = []  # workload committed -> each replica placed
        names = []
        for k in range(workloads):
            name = f"sched-{n}-{k}"
            names.append(name)
            t0 = time.time()
            answer = self.client.apply(spec(name, replicas))
            committed = float((answer.get("workload") or {}).get("updated_at") or 0.0)

            def placed(evs: list[Event], name: str = name, t0: float = t0) -> list[Event] | None:
                got = [
                    e
                    for e in evs
                    if e.kind == "placement"
                    and e.fields.get("workload") == name
                    and "replica" in e.fields
                    and e.at >= t0 - 1
                ]
                return got if len(got) >= replicas else None

            got = self.events.wait(placed, 60) or []
            lat += [e.at - t0 for e in got]
            if got:
                whole.append(max(e.at for e in got) - t0)
            if got and committed:
                accepted.append(committed - t0)
                after_commit += [e.at - committed for e in got]
        out = {
            "workloads": workloads,
            "replicas_each": replicas,
            "per_replica_s": summary(lat, 0.020, 0.050),
            # the same, split at the workload's commit: the request (a new mutual-TLS
            # connection per call, auth, validation, the write) and what follows it (watch,
            # round, placement write)
            "apply_request_s": summary(accepted),
            "commit_to_placed_s": summary(after_commit, 0.020, 0.050),
            "whole_workload_s": summary(whole),
            # the goal is per replica: a whole workload's time divided by its replica count
            "amortized_per_replica_s": summary([w / replicas for w in whole], 0.020, 0.050),
        }
        self.log(f"scheduling: {out}")
        return out, names

    def _running_nodes(self, names: list[str]) -> dict[str, tuple[str, str]]:
        """node -> (workload, replica) of running replicas."""
        out = {}
        for name in names:
            for r in self.client.workload(name)["replicas"]:
                if r["observed"] == "running":
                    out[r["node_id"]] = (name, r["id"])
        return out

    def reschedule(self, names: list[str], victims: int) -> dict[str, Any]:
        """Kill agents holding running replicas (stream closed abruptly), one at a time."""
        deadline = time.monotonic() + 30
        running: dict[str, tuple[str, str]] = {}
        while time.monotonic() < deadline:
            running = self._running_nodes(names)
            if len(running) >= victims:
                break
            time.sleep(0.5)
        offline, replaced = [], []
        bulk = {n for w in self.workers if w.role == "bulk" for n in w.nodes}
        order = sorted((n for n in running if n not in self.dead), key=lambda n: n not in bulk)
        for node in order[:victims]:  # agents of the bulk workers first
            w = self.owner(node)
            if w is None:
                continue
            wl, _rid = running[node]
            w.kill_agent(node)
            tk = self._wait_killed(w, node)
            if tk is None:
                continue
            self.dead.add(node)
            off = self.events.wait(went(node, tk, "offline"), 30)
            if off:
                offline.append(off.at - tk)

            rep = self.events.wait(replacement_running(wl, node, tk), 30)
            if rep:
                replaced.append(rep.at - tk)
            self.log(
                f"  killed {node}: offline {_after(off, tk)}, replacement running {_after(rep, tk)}"
            )
        return {
            "victims": victims,
            "offline_after_stream_break_s": summary(offline, 2.0, 4.0),
            "replacement_running_s": summary(replaced, 2.5, 5.0),
        }

    @staticmethod
    def _wait_killed(w: Worker, node: str) -> float | None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with w.lock:
                if node in w.killed:
                    return w.killed[node]
            time.sleep(0.01)
        return None

    def kill9(self, count: int) -> dict[str, Any]:
        lat = []
        pool = [
            w
            for w in self.workers
            if w.role == "kill9"
            and w.proc.poll() is None
            and w.nodes
            and not (set(w.nodes) & self.dead)
        ]
        for w in pool[:count]:
            node = next(iter(w.nodes))
            tk = time.time()
            w.signal(signal.SIGKILL)
            self.dead.add(node)
            off = self.events.wait(went(node, tk, "offline"), 30)
            if off:
                lat.append(off.at - tk)
            self.log(f"  kill -9 {node}: offline {_after(off, tk)}")
        return {"kills": len(lat), "offline_s": summary(lat, 2.0, 4.0)}

    def cutoff(self, n: int, samples: int) -> dict[str, Any]:
        """Cut one-agent processes off with iptables (no FIN; see ``netcut``), one at a time,
        each holding a running replica: cut -> node ``offline``, cut -> replacement replica
        ``running`` elsewhere; then heal and wait for the node to be ``ready`` again."""
        cut = [w for w in self.workers if w.role == "cut" and w.nodes and w.alive]
        name = f"cut-{n}"
        replicas = max(1, len(cut) - 2)  # two spare nodes take the replacement
        self.client.apply(spec(name, replicas, selector="cut"))
        offline: list[float] = []
        transport: list[float] = []  # cut -> the coordinator's end of the connection closed
        replaced: list[float] = []
        back: list[float] = []
        notes: list[str] = []
        blocked_new = True
        for i in range(samples):
            victim = self._cut_victim(name, replicas, cut)
            if victim is None:
                notes.append(f"sample {i}: no cut-off node holds a running replica")
                self.log(f"  cut-off {i}: {notes[-1]}")
                continue
            w, node = victim
            try:
                with Cut(w.proc.pid, self.coord.agent_port) as c:
                    tk = c.t_cut
                    blocked_new = blocked_new and c.new_connections_blocked
                    closed: list[float | None] = []
                    watcher = threading.Thread(
                        target=lambda c=c, out=closed: out.append(watch_server_side(c.conns, 30))
                    )
                    watcher.start()
                    off = self.events.wait(went(node, tk, "offline"), 30)
                    watcher.join()
                    rep = self.events.wait(replacement_running(name, node, tk), 30)
                    conns = len(c.conns)
            except RuntimeError as e:  # no connection found: the agent is reconnecting
                notes.append(f"sample {i}: {e}")
                self.log(f"  cut-off {i}: {e}")
                time.sleep(2.0)
                continue
            th = time.time()
            gone = closed[0] if closed else None
            if gone is not None:
                transport.append(gone - tk)
            if off:
                offline.append(off.at - tk)
            if rep:
                replaced.append(rep.at - tk)
            ready = self.events.wait(went(node, th, "ready"), 60)
            if ready:
                back.append(ready.at - th)
            self.log(
                f"  cut-off {i} {node} ({conns} conn.): coordinator's socket closed "
                f"{'+%.3fs' % (gone - tk) if gone else 'never'}, offline {_after(off, tk)}, "
                f"replacement running {_after(rep, tk)}; healed -> ready {_after(ready, th)}"
            )
        self.client.call("DELETE", f"/v1/workloads/{name}")
        out = {
            "method": "iptables DROP both directions on lo (no FIN) + new connections blocked",
            "samples": samples,
            "offline_s": summary(offline, 2.0, 4.0),
            "coordinator_socket_closed_s": summary(transport),
            "replacement_running_s": summary(replaced, 2.5, 5.0),
            "healed_to_ready_s": summary(back),
            "new_connections_blocked": blocked_new,
            "notes": notes,
        }
        self.log(f"cut-off: {out}")
        return out

    def _cut_victim(self, name: str, replicas: int, cut: list[Worker]) -> tuple[Worker, str] | None:
        """A cut-off process whose node is ready and holds a running replica of ``name``, once
        the workload has settled (exactly ``replicas`` running: extras after a heal stopped)."""
        by_node = {next(iter(w.nodes)): w for w in cut}
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            running = self._running_nodes([name])
            held = [
                nd
                for nd in running
                if nd in by_node and self.client.call("GET", f"/v1/nodes/{nd}")["state"] == "ready"
            ]
            if len(running) == replicas and held:
                node = self.rng.choice(sorted(held))
                return by_node[node], node
            time.sleep(0.5)
        return None

    def false_alarms(self, n: int, seconds: float) -> dict[str, Any]:
        """Freeze agents for 1-2 s at random; count wrong offline marks and needless moves."""
        frz = [
            w
            for w in self.workers
            if w.role == "freeze" and w.nodes and not set(w.nodes) & self.dead
        ]
        name = f"fa-{n}"
        self.client.apply(spec(name, len(frz), selector="freeze"))
        self.events.wait(
            lambda evs: (
                len(
                    [
                        e
                        for e in evs
                        if e.kind == "replica"
                        and e.fields.get("workload") == name
                        and e.fields.get("state") == "running"
                    ]
                )
                >= len(frz)
            ),
            30,
        )
        nodes = {next(iter(w.nodes)) for w in frz}
        t0 = time.time()
        freezes = 0
        stop_at = time.monotonic() + seconds

        def freezer(w: Worker) -> None:
            nonlocal freezes
            rng = random.Random(hash(w.proc.pid))
            while time.monotonic() < stop_at:
                time.sleep(rng.uniform(0.5, 2.0))
                w.signal(signal.SIGSTOP)
                time.sleep(rng.uniform(1.0, 2.0))
                w.signal(signal.SIGCONT)
                freezes += 1

        ts = [threading.Thread(target=freezer, args=(w,)) for w in frz]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        time.sleep(3.0)
        evs = [e for e in self.events.snapshot() if e.at >= t0]
        wrong = [
            e
            for e in evs
            if e.kind == "node"
            and e.fields.get("state") == "offline"
            and e.fields.get("node") in nodes
        ]
        moved = [
            e
            for e in evs
            if e.kind == "placement" and e.fields.get("workload") == name and "replica" in e.fields
        ]
        out = {
            "frozen_agents": len(frz),
            "freezes": freezes,
            "freeze_s": [1.0, 2.0],
            "nodes_wrongly_offline": len(wrong),
            "replicas_needlessly_replaced": len(moved),
            "silence_limit_s": MembershipConfig().offline_after_for(n),
        }
        self.log(f"false alarms: {out}")
        self.client.call("DELETE", f"/v1/workloads/{name}")
        return out
