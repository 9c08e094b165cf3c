"""FakeRuntime knobs, driven by a FakeClock (no sleeping)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from cloudless.lib.clock import FakeClock
from cloudless.runtime import (
    ContainerSpec,
    ContainerState,
    FakeBehavior,
    FakeHost,
    FakeRuntime,
    ImageNotFound,
    LogStream,
    RegistryUnauthorized,
)
from cloudless.runtime.types import RegistryAuth


@pytest.fixture
async def env() -> AsyncIterator[tuple[FakeClock, FakeRuntime]]:
    clock = FakeClock()
    rt = FakeRuntime(clock, host=FakeHost(images={"img:1"}))
    task = asyncio.create_task(rt.run())
    yield clock, rt
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_run_for_exits_when_the_clock_gets_there(env: tuple[FakeClock, FakeRuntime]) -> None:
    clock, rt = env
    rt.by_container["a"] = FakeBehavior(run_for=5, exit_code=2)
    await rt.pull_image("img:1")
    exits = rt.exits()
    await rt.create_container(ContainerSpec(id="a", image="img:1"))
    await rt.start_container("a")
    await clock.run_for(4.9)
    assert (await rt.get_container("a")).state is ContainerState.RUNNING
    await clock.run_for(0.2)  # 5.1 s after start: past run_for=5
    e = await asyncio.wait_for(anext(exits), 1)
    assert (e.id, e.exit_code, e.oom_killed) == ("a", 2, False)
    assert (await rt.get_container("a")).exit_code == 2


async def test_oom_after_is_reported_as_oom(env: tuple[FakeClock, FakeRuntime]) -> None:
    clock, rt = env
    rt.by_container["m"] = FakeBehavior(oom_after=1, run_for=10)
    await rt.pull_image("img:1")
    exits = rt.exits()
    await rt.create_container(ContainerSpec(id="m", image="img:1", memory_bytes=8 << 20))
    await rt.start_container("m")
    await clock.run_for(1.5)  # oom_after=1 comes before run_for=10
    e = await asyncio.wait_for(anext(exits), 1)
    assert (e.exit_code, e.oom_killed) == (137, True)


async def test_concurrent_pulls_share_one_delayed_pull(env: tuple[FakeClock, FakeRuntime]) -> None:
    clock, rt = env
    rt.default = FakeBehavior(pull_delay=3)
    pulls = asyncio.gather(*(rt.pull_image("img:1") for _ in range(3)))
    await clock.run_for(3.1)
    infos = await pulls
    assert len({i.digest for i in infos}) == 1 and rt.host.pull_count == 1


async def test_pull_errors(env: tuple[FakeClock, FakeRuntime]) -> None:
    _, rt = env
    with pytest.raises(ImageNotFound):
        await rt.pull_image("absent:1")
    rt.by_image["img:1"] = FakeBehavior(pull_error=RegistryUnauthorized("no"))
    with pytest.raises(RegistryUnauthorized):
        await rt.pull_image("img:1")


async def test_stop_waits_out_the_grace_period_of_a_stubborn_container(
    env: tuple[FakeClock, FakeRuntime],
) -> None:
    clock, rt = env
    rt.by_container["s"] = FakeBehavior(ignore_sigterm=True)
    await rt.pull_image("img:1")
    await rt.create_container(ContainerSpec(id="s", image="img:1"))
    await rt.start_container("s")
    stop = asyncio.create_task(rt.stop_container("s", timeout=10))
    await clock.run_for(9.5)
    assert not stop.done()  # 9.5 s < 10 s grace
    await clock.run_for(1)
    st = await asyncio.wait_for(stop, 1)
    assert st.exit_code == 137


async def test_logs_and_external_kill(env: tuple[FakeClock, FakeRuntime]) -> None:
    _, rt = env
    rt.by_container["l"] = FakeBehavior(stdout=b"a\nb\n")
    await rt.pull_image("img:1")
    await rt.create_container(ContainerSpec(id="l", image="img:1"))
    await rt.start_container("l")
    lines: list[str] = []

    async def follow() -> None:
        async for x in rt.container_logs("l", follow=True):
            lines.append(x.text)

    task = asyncio.create_task(follow())
    await asyncio.sleep(0)
    rt.write_log("l", LogStream.STDERR, b"c\n")
    rt.kill_externally("l", 9)
    await asyncio.wait_for(task, 1)
    assert lines == ["a", "b", "c"]


async def test_a_registry_wanting_credentials(env: tuple[FakeClock, FakeRuntime]) -> None:
    """Checked on every pull, even of an image already on the node (like a manifest fetch)."""
    _, rt = env
    await rt.pull_image("img:1")
    rt.host.registry_auth["docker.io"] = RegistryAuth("u", "p")
    for auth, why in ((None, "requires a username"), (RegistryAuth("u", "x"), "refused access")):
        with pytest.raises(RegistryUnauthorized) as e:
            await rt.pull_image("img:1", auth=auth)
        assert f"registry docker.io {why}" in str(e.value)
    await rt.pull_image("img:1", auth=RegistryAuth("u", "p"))
