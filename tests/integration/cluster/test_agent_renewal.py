"""An agent renews its node certificate at 2/3 of its life (within the 5 % jitter window)
and keeps its stream: the coordinator's session for the node is the same one before and
after, the node never leaves ``ready``, and the next connection uses the new certificate."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from cryptography import x509

from cloudless.agent.agent import Agent
from cloudless.agent.identity import AgentIdentity
from cloudless.lib.clock import SystemClock
from cloudless.runtime.fake import FakeRuntime
from cloudless.security.rotation import DEFAULT_FRACTION, DEFAULT_JITTER

from .harness import agent_config, wait_for


class JumpClock(SystemClock):
    """Real time plus an offset the test moves forward; a jump wakes every sleeper, which
    re-checks its deadline (as a process would after the machine slept for months)."""

    def __init__(self) -> None:
        self.offset = 0.0
        self._jumped = asyncio.Event()

    def now(self) -> float:
        return time.time() + self.offset

    def jump_to(self, t: float) -> None:
        self.offset = t - time.time()
        self._jumped.set()
        self._jumped = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        jumped = self._jumped
        try:
            await asyncio.wait_for(jumped.wait(), timeout=max(0.0, seconds))
        except TimeoutError:
            pass


def _validity(pem: bytes) -> tuple[float, float, int]:
    c = x509.load_pem_x509_certificate(pem)
    return c.not_valid_before_utc.timestamp(), c.not_valid_after_utc.timestamp(), c.serial_number


async def test_agent_renews_at_two_thirds_and_keeps_its_stream(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    coord, client, _agents, _start = cluster
    token = await asyncio.to_thread(client.create_token)
    clock = JumpClock()
    agent = Agent(
        agent_config(tmp_path, coord.config.api_url, token, 0), FakeRuntime(clock), clock=clock
    )
    task = asyncio.create_task(agent.run())
    try:
        await wait_for(lambda: agent.link is not None and agent.link.connected.is_set())
        assert agent.identity is not None
        node_id = agent.identity.node_id
        await wait_for(lambda: node_id in coord.agents.dispatcher.sessions, what="a session")
        session = coord.agents.dispatcher.sessions[node_id]
        nb, na, serial = _validity(agent.identity.cert_pem)
        life = na - nb  # 1 year + the 5 min back-dating
        earliest = nb + life * (DEFAULT_FRACTION - DEFAULT_JITTER)  # 2/3 - 5 %: day ~225
        latest = nb + life * DEFAULT_FRACTION  # 2/3: day ~243

        clock.jump_to(earliest - 3600)  # an hour before the window: nothing happens
        await asyncio.sleep(1.0)
        assert _validity(agent.identity.cert_pem)[2] == serial

        clock.jump_to(latest + 1)  # past 2/3 of its life: renewed
        await wait_for(lambda: _validity(agent.identity.cert_pem)[2] != serial, what="renewal")
        _, na2, _ = _validity(agent.identity.cert_pem)
        assert na2 > na  # a fresh year
        saved = AgentIdentity.load(agent.config.data_dir)
        assert saved is not None and saved.cert_pem == agent.identity.cert_pem  # on disk

        await asyncio.sleep(2.5)  # more than a heartbeat: the stream is still the same one
        assert coord.agents.dispatcher.sessions.get(node_id) is session and not session.closed
        assert agent.link.connected.is_set()
        node = await coord.state.nodes.get(node_id)
        assert node is not None and node.value.state.value == "ready"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
