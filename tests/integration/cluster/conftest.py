"""The ``cluster`` fixture: a coordinator (in-memory store, real mTLS gRPC + HTTPS on
loopback) and a way to start fake-runtime agents against it."""

from __future__ import annotations

import asyncio
import io
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cloudless.agent.agent import Agent
from cloudless.cli.client import Client, ClientConfig
from cloudless.coordinator.wiring.process import Coordinator
from cloudless.lib.clock import SystemClock
from cloudless.runtime.fake import FakeRuntime

from .harness import agent_config, coordinator_config

STOP_S = 60.0
"""How long the coordinator and agents get to stop once cancelled."""


def task_stacks() -> str:
    """Every task of the running loop with the stack it is suspended at."""
    out = io.StringIO()
    for t in asyncio.all_tasks():
        if t is not asyncio.current_task():
            t.print_stack(limit=12, file=out)
    return out.getvalue()


@pytest.fixture
async def cluster(tmp_path: Path):  # type: ignore[no-untyped-def]
    coord = Coordinator(coordinator_config(tmp_path))
    task = asyncio.create_task(coord.run())
    await asyncio.wait_for(coord.ready.wait(), 30)
    client = Client(ClientConfig.load(tmp_path / "coord" / "admin" / "config.json"))
    agents: dict[int, asyncio.Task[None]] = {}

    async def start_agent(i: int, **overrides: Any) -> FakeRuntime:
        token = await asyncio.to_thread(client.create_token)
        cfg = replace(agent_config(tmp_path, coord.config.api_url, token, i), **overrides)
        runtime = FakeRuntime(SystemClock())
        agents[i] = asyncio.create_task(Agent(cfg, runtime).run())
        return runtime

    try:
        yield coord, client, agents, start_agent
    finally:
        running = [*agents.values(), task]
        for t in running:
            t.cancel()
        _, pending = await asyncio.wait(running, timeout=STOP_S)
        if pending:
            pytest.fail(f"still running {STOP_S:g} s after cancel:\n{task_stacks()}")
