"""Helpers for in-process cluster tests: configs on free loopback ports, polling."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from cloudless.agent.agent import AgentConfig
from cloudless.coordinator.wiring.config import CoordinatorConfig
from cloudless.lib.net import free_port
from cloudless.model.resources import Resources


async def wait_for(pred, timeout: float = 20.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        v = await asyncio.to_thread(pred)
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def ha_config(tmp: Path, name: str, **kw: object) -> CoordinatorConfig:
    """A coordinator with an embedded etcd member, on free loopback ports, in ``tmp/name``."""
    return CoordinatorConfig(
        data_dir=tmp / name,
        name=name,
        store="etcd",
        api_port=free_port(),
        agent_port=free_port(),
        enroll_port=free_port(),
        etcd_client_port=free_port(),
        etcd_peer_port=free_port(),
        root_key_size=2048,
        bcrypt_cost=4,
        **kw,  # type: ignore[arg-type]
    )


def coordinator_config(tmp: Path) -> CoordinatorConfig:
    return CoordinatorConfig(
        data_dir=tmp / "coord",
        store="memory",
        bootstrap=True,
        api_port=free_port(),
        agent_port=free_port(),
        enroll_port=free_port(),
        root_key_size=2048,
        bcrypt_cost=4,
    )


def agent_config(tmp: Path, api: str, token: str, i: int) -> AgentConfig:
    return AgentConfig(
        data_dir=tmp / f"agent{i}",
        join=api,
        token=token,
        name=f"node{i}",
        zone=f"zone-{'abc'[i % 3]}",
        region="local",
        capacity_override=Resources(2000, 2 << 30, 10 << 30, 10**9),
        monitor_interval_s=0.5,
    )
