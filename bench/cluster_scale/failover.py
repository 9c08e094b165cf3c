"""Coordinator failover: three coordinators (each with its etcd member); kill -9 the leader
(and its etcd: the machine dies) while a writer applies workloads every 20 ms; the window in
which writes fail, and whether any acknowledged write is missing afterwards."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from cloudless.cli.client import Client

from .cluster import CoordinatorProc, Worker, admin_client, make_tokens
from .measure import summary


def _leader(client: Client, coords: list[CoordinatorProc]) -> CoordinatorProc | None:
    try:
        doc = client.call("GET", "/v1/cluster/coordinators")
    except Exception:
        return None
    return next((c for c in coords if c.api == doc.get("leader")), None)


def _etcd_raft(c: CoordinatorProc) -> tuple[bool | None, int | None]:
    """Whether ``c``'s etcd member is the raft leader, and the raft term it has seen (every
    etcd election adds one: terms that grow between kills mean etcd itself flapped)."""
    etcdctl = shutil.which("etcdctl")
    if etcdctl is None:
        return None, None
    tls = c.data / "tls"
    cmd = [
        etcdctl, f"--endpoints=https://127.0.0.1:{c.etcd_client}",
        f"--cacert={tls / 'etcd-ca.pem'}", f"--cert={tls / 'etcd-client.crt'}",
        f"--key={tls / 'etcd-client.key'}", "--command-timeout=2s",
        "endpoint", "status", "-w", "json",
    ]  # fmt: skip
    try:
        out = subprocess.run(
            cmd, capture_output=True, timeout=5, check=True, env={"ETCDCTL_API": "3"}
        )
        status = json.loads(out.stdout)[0]["Status"]
        return bool(status["header"]["member_id"] == status["leader"]), int(status["raftTerm"])
    except (subprocess.SubprocessError, OSError, ValueError, KeyError, IndexError):
        return None, None


def _spec(name: str) -> bytes:
    return f"name: {name}\nimage: busybox:latest\nresources: {{cpu: 1m}}\nreplicas: 0\n".encode()


def _wait_member(client: Client, name: str, timeout: float) -> None:
    """Until coordinator ``name`` is registered and its peers answer."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            doc = client.call("GET", "/v1/cluster/coordinators")
            if any(x["name"] == name for x in doc["coordinators"]) and doc.get("leader"):
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"coordinator {name} not a member with a leader after {timeout}s")
        time.sleep(0.5)


def failover(root: Path, kills: int, agents: int, log: Any) -> dict[str, Any]:
    coords = [CoordinatorProc(f"c{i + 1}", root / f"c{i + 1}") for i in range(3)]
    workers: list[Worker] = []
    windows: list[float] = []
    kills_log: list[dict[str, Any]] = []  # per kill: window, whose etcd was the raft leader
    acked: list[str] = []
    try:
        for c in coords:
            c.data.mkdir(parents=True)
        coords[0].start(bootstrap=True)
        client = admin_client(coords[0])
        for c in coords[1:]:
            c.start(join=coords[0].api, token=client.create_token(use="coordinator-join"))
            _wait_member(client, c.name, 60)
        client = admin_client(coords[0], servers=[c.api for c in coords])
        tokens = root / "tokens.txt"
        make_tokens(client, agents, tokens)
        workers.append(Worker(coords[0].api, tokens, 0, agents, root / "agents", "bulk"))
        time.sleep(5)

        stop = threading.Event()
        attempts: list[tuple[float, float, bool]] = []  # (started, ended, acknowledged)

        def writer() -> None:
            i = 0
            while not stop.is_set():
                name = f"fo-{i}"
                i += 1
                t0 = time.time()
                try:
                    Client(client.config, timeout=2.0).apply(_spec(name))
                    acked.append(name)
                    attempts.append((t0, time.time(), True))
                except Exception:
                    attempts.append((t0, time.time(), False))
                time.sleep(0.02)

        th = threading.Thread(target=writer, daemon=True)
        th.start()
        for _ in range(kills):
            time.sleep(3.0)
            lead = _leader(client, coords)
            if lead is None:
                log("failover: no leader known; skipping a kill")
                continue
            raft_leader, raft_term = _etcd_raft(lead)
            tk = time.time()
            lead.kill9()
            log(
                f"failover: killed leader {lead.name} (its etcd member raft leader: "
                f"{raft_leader}, raft term {raft_term})"
            )
            deadline = time.monotonic() + 30
            ok = None
            while time.monotonic() < deadline and ok is None:
                time.sleep(0.05)
                ok = next((a for a in list(attempts) if a[0] >= tk and a[2]), None)
            if ok is not None:
                windows.append(ok[1] - tk)
                log(f"failover: first acknowledged write {windows[-1]:.2f}s after the kill")
            kills_log.append(
                {
                    "killed": lead.name,
                    "etcd_raft_leader_killed": raft_leader,
                    "etcd_raft_term": raft_term,
                    "window_s": round(ok[1] - tk, 3) if ok is not None else None,
                }
            )
            lead.start()  # the machine comes back; it rejoins with its data dir
            # its registration survives it: wait until it answers itself (serving again)
            own = Client(dataclasses.replace(client.config, servers=[lead.api]), timeout=2.0)
            _wait_member(own, lead.name, 60)
            time.sleep(5.0)
        stop.set()
        th.join(10)
        time.sleep(1.0)
        present = {w["name"] for w in client.call("GET", "/v1/workloads")["workloads"]}
        lost = [n for n in acked if n not in present]
        return {
            "coordinators": 3,
            "agents": agents,
            "kills": kills,
            "write_failure_window_s": summary(windows, 3.0),
            "windows_s": [round(w, 3) for w in windows],
            "per_kill": kills_log,
            "acknowledged_writes": len(acked),
            "failed_writes": sum(1 for a in attempts if not a[2]),
            "acknowledged_writes_lost": len(lost),
        }
    except Exception as e:
        log(f"failover failed: {type(e).__name__}: {e}")
        for c in coords:
            tail = (
                (root / f"{c.name}.log").read_text(errors="replace")[-1500:]
                if (root / f"{c.name}.log").exists()
                else ""
            )
            log(f"--- {c.name}.log (tail)\n{tail}")
        return {
            "error": f"{type(e).__name__}: {e}",
            "write_failure_window_s": summary(windows, 3.0),
            "windows_s": [round(w, 3) for w in windows],
            "per_kill": kills_log,
            "acknowledged_writes": len(acked),
            "acknowledged_writes_lost": None,  # not checked: the run broke
        }
    finally:
        for w in workers:
            w.stop()
        for c in coords:
            c.stop()
