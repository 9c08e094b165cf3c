"""A worker process hosting many simulated agents: ``python -m bench.cluster_scale.swarm``.

Each agent is a real ``cloudless.agent.agent.Agent`` (real enrollment: GET /v1/ca then gRPC
``Enroll``; a real mutual-TLS ``Connect`` stream; real heartbeats) on the ``FakeRuntime`` and a
constant resource monitor (no psutil reads: 5,000 monitors sampling /proc would measure the
harness, not the coordinator).

Protocol with the parent, one JSON object per line:

* stdout: ``{"enrolled": idx, "node": node_id, "s": seconds, "limit": n}`` once per agent
  (how long its enrollment took, and the worker's in-flight limit after it),
  ``{"error": ...}`` on an enrollment failure, ``{"killed": node_id, "t": wall}`` after a
  kill command;
* stdin: ``{"kill": node_id}`` cancels that agent's task (its stream closes abruptly: the
  coordinator sees a broken stream, as after kill -9 of a real agent). EOF on stdin ends the
  process (the parent is gone or done).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cloudless.agent.agent as agent_mod
from cloudless.agent.agent import Agent, AgentConfig
from cloudless.agent.facts import detect_facts
from cloudless.lib.clock import SystemClock
from cloudless.model.node import NodeConditions
from cloudless.model.resources import Resources
from cloudless.runtime.fake import FakeRuntime

from .measure import Aimd

CAPACITY = Resources(2000, 2 << 30, 10 << 30, 10**9)


class _Sample:
    def usage(self) -> Resources:
        return Resources()


class ConstantMonitor:
    """Duck-typed stand-in for ``ResourceMonitor``: fixed capacity, zero usage, no probes."""

    def __init__(self, capacity: Resources) -> None:
        self.cap = capacity
        self.latest = _Sample()

    def sample(self) -> _Sample:
        return self.latest

    def capacity(self, s: object) -> Resources:
        return self.cap

    def allocatable(self, s: object) -> Resources:
        return self.cap

    def conditions(self, s: object) -> NodeConditions:
        return NodeConditions()

    async def run(self, interval: float, on_sample: object = None) -> None:
        await asyncio.Event().wait()


def say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def raise_nofile(want: int = 65536) -> int:
    """Raise this process's open-file limit (sockets) to ``want`` if allowed, else to the
    hard limit; returns the soft limit now in force. Children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Limiter:
    """At most ``aimd.window`` enrollments in flight; the window adapts to answer times."""

    def __init__(self, aimd: Aimd) -> None:
        self.aimd = aimd
        self.busy = 0
        self.cond = asyncio.Condition()

    async def acquire(self) -> None:
        async with self.cond:
            await self.cond.wait_for(lambda: self.busy < max(1, self.aimd.window))
            self.busy += 1

    async def release(self, seconds: float | None) -> None:
        async with self.cond:
            self.busy -= 1
            if seconds is None:
                self.aimd.failed()
            else:
                self.aimd.answered(seconds)
            self.cond.notify_all()


class TokenFile:
    """The join tokens, one a line, appended by the parent while agents already enroll:
    ``await get(i)`` waits (re-reading the file every 0.5 s) until line ``i`` exists."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []
        self.read_at = -1.0

    async def get(self, i: int) -> str:
        while True:
            if i < len(self.lines):
                return self.lines[i]
            if time.monotonic() - self.read_at >= 0.5:  # one read for all waiting agents
                self.read_at = time.monotonic()
                text = self.path.read_text()
                # only whole lines: the parent may be half-way through appending one
                self.lines = text[: text.rfind("\n") + 1].split()
                continue
            await asyncio.sleep(0.5)


async def watch_lag(every: float = 0.5, report: float = 5.0) -> None:
    """How late this worker's event loop wakes up: the largest lag of each ``report``
    seconds goes to the parent (``{"lag": s}``). A lagging worker reads acks late, so its
    agents may judge a healthy coordinator silent: the harness, not the product, is slow."""
    worst, since = 0.0, time.monotonic()
    while True:
        t0 = time.monotonic()
        await asyncio.sleep(every)
        worst = max(worst, time.monotonic() - t0 - every)
        if time.monotonic() - since >= report:
            say({"lag": round(worst, 3)})
            worst, since = 0.0, time.monotonic()


async def main(a: argparse.Namespace, tokens: TokenFile) -> None:
    clock = SystemClock()
    lim = Limiter(Aimd(a.concurrency, lo=1, hi=max(2, 2 * a.concurrency), slow_s=a.slow_s))
    tasks: dict[str, asyncio.Task[None]] = {}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def one(idx: int) -> None:
        token = await tokens.get(idx)
        cfg = AgentConfig(
            data_dir=Path(a.data) / f"a{idx}",
            join=a.api,
            token=token,
            name=f"{a.prefix}{idx}",
            zone=f"zone-{'abc'[idx % 3]}",
            region="local",
            labels={"bench-role": a.role},
            capacity_override=CAPACITY,
        )
        agent = Agent(cfg, FakeRuntime(clock), monitor=ConstantMonitor(CAPACITY))  # type: ignore[arg-type]
        took = 0.0
        for attempt in range(5):
            await lim.acquire()
            t0 = time.monotonic()
            try:
                ident = await agent.ensure_identity()
            except Exception as e:  # report, retry a few times, then give up on this agent
                await lim.release(None)
                say({"error": f"enroll {idx} attempt {attempt}: {type(e).__name__}: {e}"})
                await asyncio.sleep(1.0 + attempt)
                continue
            took = time.monotonic() - t0
            await lim.release(took)
            break
        else:
            return
        say({"enrolled": idx, "node": ident.node_id, "s": round(took, 3),
             "limit": round(lim.aimd.limit, 1)})  # fmt: skip
        t = asyncio.current_task()
        assert t is not None
        tasks[ident.node_id] = t
        await agent.run()

    def on_line(line: str) -> None:
        try:
            cmd = json.loads(line)
        except ValueError:
            return
        if "kill" in cmd:
            t = tasks.pop(cmd["kill"], None)
            if t is not None:
                t.cancel()
                say({"killed": cmd["kill"], "t": time.time()})

    def reader() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(on_line, line)
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=reader, daemon=True).start()
    runners = [asyncio.create_task(one(a.first + i)) for i in range(a.count)]
    runners.append(asyncio.create_task(watch_lag()))
    await stop.wait()
    for t in runners:
        t.cancel()
    await asyncio.gather(*runners, return_exceptions=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--api", required=True)
    p.add_argument("--tokens", required=True)
    p.add_argument("--first", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--prefix", default="sim")
    p.add_argument("--role", default="bulk")
    p.add_argument("--concurrency", type=int, default=16, help="initial enrollments in flight")
    p.add_argument("--slow-s", type=float, default=3.0, help="an enrollment slower than this "
                   "shrinks the in-flight limit")  # fmt: skip
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("cloudless.agent.link").setLevel(logging.INFO)
    # Host facts are the same for every simulated agent of this host; probing them (which
    # runs systemd-detect-virt) on each connect would measure the harness, not the product.
    agent_mod.detect_facts = functools.cache(detect_facts)
    args = p.parse_args()
    raise_nofile()
    # The simulated agents stand for other machines: on this shared box they run below the
    # coordinator they measure (nice 10), so they do not starve it of CPU.
    os.nice(10)
    asyncio.run(main(args, TokenFile(Path(args.tokens))))
