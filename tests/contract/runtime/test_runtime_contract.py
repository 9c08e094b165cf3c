"""The runtime contract: every ``ContainerRuntime`` (fake, containerd) must pass all of it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from cloudless.lib.errors import ValidationError
from cloudless.runtime import (
    ContainerExists,
    ContainerExit,
    ContainerNotFound,
    ContainerSpec,
    ContainerState,
    ImageNotFound,
    ImageNotPulled,
    InvalidState,
    LogStream,
    PullProgress,
    StartFailed,
)
from tests.contract.runtime.harness import Harness


async def next_exit(h: Harness, exits: AsyncIterator[ContainerExit], cid: str) -> ContainerExit:
    """The next exit of ``cid`` (others are skipped), letting up to 15 s of time pass."""

    async def find() -> ContainerExit:
        async for e in exits:
            if e.id == cid:
                return e
        raise AssertionError("exit stream ended")

    return await h.drive(asyncio.wait_for(find(), 15), 15)


async def test_pull_is_idempotent_and_reports_progress(harness: Harness) -> None:
    seen: list[PullProgress] = []
    first, second = await asyncio.gather(
        harness.runtime.pull_image(harness.image, seen.append),
        harness.runtime.pull_image(harness.image),
    )
    assert first.digest == second.digest and first.digest.startswith("sha256:")
    again = await harness.runtime.pull_image(harness.image)
    assert again.digest == first.digest
    assert seen and seen[-1].done_bytes == seen[-1].total_bytes > 0


async def test_pull_of_a_missing_image_says_not_found(harness: Harness) -> None:
    with pytest.raises(ImageNotFound) as e:
        await harness.runtime.pull_image(harness.missing_image)
    assert "not found" in str(e.value)


async def test_create_needs_a_pulled_image_and_a_valid_spec(harness: Harness) -> None:
    rt = harness.runtime
    with pytest.raises(ImageNotPulled):
        await rt.create_container(ContainerSpec(id="c-unpulled", image=harness.unpulled_image))
    await rt.pull_image(harness.image)
    with pytest.raises(ValidationError) as e:
        await rt.create_container(ContainerSpec(id="Bad id!", image=harness.image))
    assert "container id" in str(e.value)
    with pytest.raises(ValidationError):
        await rt.get_container("../etc")
    spec = harness.sleeper("c-dup")
    await rt.create_container(spec)
    with pytest.raises(ContainerExists):
        await rt.create_container(spec)
    await rt.delete_container("c-dup")


async def test_lifecycle_create_start_stop_delete(harness: Harness) -> None:
    rt = harness.runtime
    await rt.pull_image(harness.image)
    spec = harness.sleeper("c-life", env={"A": "1"})
    created = await rt.create_container(spec)
    assert created.state is ContainerState.CREATED and created.pid is None
    assert created.image == harness.image  # as given, not normalised
    running = await rt.start_container("c-life")
    await harness.ready("c-life")
    assert running.state is ContainerState.RUNNING and running.pid
    assert (await rt.get_container("c-life")).state is ContainerState.RUNNING
    assert "c-life" in [s.id for s in await rt.list_containers()]
    stopped = await harness.drive(rt.stop_container("c-life", timeout=10), 1)
    assert stopped.state is ContainerState.EXITED
    assert stopped.exit_code == 0 and not stopped.oom_killed  # the sleeper exits 0 on TERM
    await rt.delete_container("c-life")
    with pytest.raises(ContainerNotFound):
        await rt.get_container("c-life")
    with pytest.raises(ContainerNotFound):
        await rt.delete_container("c-life")


async def test_exit_code_and_separate_log_streams(harness: Harness) -> None:
    rt = harness.runtime
    await rt.pull_image(harness.image)
    exits = rt.exits()
    await rt.create_container(harness.exiter("c-exit", 3, ["out1", "out2"], ["err1"]))
    await rt.start_container("c-exit")
    e = await next_exit(harness, exits, "c-exit")
    assert (e.exit_code, e.oom_killed) == (3, False)
    st = await rt.get_container("c-exit")
    assert (st.state, st.exit_code) == (ContainerState.EXITED, 3)
    lines = [(x.stream, x.text) async for x in rt.container_logs("c-exit")]
    assert lines == [
        (LogStream.STDOUT, "out1"),
        (LogStream.STDOUT, "out2"),
        (LogStream.STDERR, "err1"),
    ]
    # tail=1 keeps the last line of each stream: out2 and err1.
    tail = [x.text async for x in rt.container_logs("c-exit", tail=1)]
    assert tail == ["out2", "err1"]
    # Resuming after the first line yields the rest.
    first, *_ = [x async for x in rt.container_logs("c-exit")]
    rest = [x.text async for x in rt.container_logs("c-exit", since=first.cursor)]
    assert rest == ["out2", "err1"]
    # Following an exited container drains and ends.
    followed = [x.text async for x in rt.container_logs("c-exit", follow=True)]
    assert followed == ["out1", "out2", "err1"]
    await rt.delete_container("c-exit")


async def test_sigterm_ignored_means_sigkill_after_timeout(harness: Harness) -> None:
    rt = harness.runtime
    await rt.pull_image(harness.image)
    await rt.create_container(harness.stubborn("c-stubborn"))
    await rt.start_container("c-stubborn")
    await harness.ready("c-stubborn")
    st = await harness.drive(rt.stop_container("c-stubborn", timeout=1.0), 2)
    assert (st.state, st.exit_code, st.oom_killed) == (ContainerState.EXITED, 137, False)
    await rt.delete_container("c-stubborn")


async def test_memory_limit_exceeded_is_reported_as_oom(harness: Harness) -> None:
    rt = harness.runtime
    await rt.pull_image(harness.image)
    exits = rt.exits()
    await rt.create_container(harness.memory_hog("c-oom"))
    await rt.start_container("c-oom")
    e = await next_exit(harness, exits, "c-oom")
    assert e.oom_killed and e.exit_code == 137
    assert (await rt.get_container("c-oom")).oom_killed
    await rt.delete_container("c-oom")


async def test_missing_command_fails_start_with_a_clear_reason(harness: Harness) -> None:
    rt = harness.runtime
    await rt.pull_image(harness.image)
    await rt.create_container(harness.missing_command("c-nocmd"))
    with pytest.raises(StartFailed) as e:
        await rt.start_container("c-nocmd")
    assert "no-such-cmd" in str(e.value) and "not found" in str(e.value)
    assert (await rt.get_container("c-nocmd")).state is ContainerState.CREATED
    await rt.delete_container("c-nocmd")


async def test_delete_of_a_running_container_stops_it_first(harness: Harness) -> None:
    rt = harness.runtime
    await rt.pull_image(harness.image)
    await rt.create_container(harness.sleeper("c-del"))
    await rt.start_container("c-del")
    await harness.drive(rt.delete_container("c-del"), 1)
    assert "c-del" not in [s.id for s in await rt.list_containers()]


async def test_stats_of_a_running_container(harness: Harness) -> None:
    rt = harness.runtime
    await rt.pull_image(harness.image)
    await rt.create_container(harness.sleeper("c-stats", memory_bytes=64 << 20))
    await rt.start_container("c-stats")
    await harness.ready("c-stats")
    s = await rt.container_stats("c-stats")
    assert s.pids >= 1 and s.memory_bytes > 0 and s.memory_limit_bytes == 64 << 20
    assert s.net_rx_bytes == -1  # containers share the host network: nothing of their own
    await rt.create_container(harness.sleeper("c-idle"))  # created, never started
    (every,) = await rt.stats_all()  # running containers only
    assert every.id == "c-stats" and every.memory_limit_bytes == 64 << 20
    await harness.drive(rt.stop_container("c-stats"), 1)
    with pytest.raises(InvalidState):
        await rt.container_stats("c-stats")
    assert await rt.stats_all() == []
    await rt.delete_container("c-stats")
    await rt.delete_container("c-idle")


async def test_exec_runs_a_command_in_a_running_container(harness: Harness) -> None:
    rt = harness.runtime
    await rt.pull_image(harness.image)
    await rt.create_container(harness.execer("c-exec"))
    with pytest.raises(InvalidState):  # created, not running
        await rt.exec_in_container("c-exec", ["true"])
    await rt.start_container("c-exec")
    await harness.ready("c-exec")
    r = await rt.exec_in_container("c-exec", ["sh", "-c", "echo out; exit 3"], timeout=5)
    assert (r.exit_code, r.timed_out) == (3, False) and "out" in r.output
    r = await harness.drive(rt.exec_in_container("c-exec", ["sleep", "5"], timeout=0.5), 1)
    assert r.timed_out and r.exit_code == -1
    r = await rt.exec_in_container("c-exec", ["no-such-cmd"], timeout=5)
    assert r.exit_code == 127 and "no-such-cmd" in r.output
    assert (await rt.get_container("c-exec")).state is ContainerState.RUNNING  # untouched
    with pytest.raises(ContainerNotFound):
        await rt.exec_in_container("c-nope", ["true"])
    await harness.drive(rt.delete_container("c-exec"), 1)


async def test_recover_adopts_survivors_after_an_agent_restart(harness: Harness) -> None:
    rt = harness.runtime
    await rt.pull_image(harness.image)
    await rt.create_container(harness.sleeper("c-rec", labels={"team": "a"}))
    await rt.start_container("c-rec")
    await harness.ready("c-rec")
    rt2 = await harness.reopen()
    found = [s for s in await rt2.recover() if s.id == "c-rec"]
    assert len(found) == 1
    assert found[0].state is ContainerState.RUNNING and found[0].labels["team"] == "a"
    # The new runtime sees its exits and can manage it.
    exits = rt2.exits()
    await harness.drive(rt2.stop_container("c-rec", timeout=5), 1)
    e = await next_exit(harness, exits, "c-rec")
    assert e.exit_code == 0
    await rt2.delete_container("c-rec")
    assert "c-rec" not in [s.id for s in await rt2.recover()]


async def test_starting_twice_is_refused_and_logs_follow_to_the_end(harness: Harness) -> None:
    rt = harness.runtime
    await rt.pull_image(harness.image)
    await rt.create_container(harness.sleeper("c-twice"))
    await rt.start_container("c-twice")
    await harness.ready("c-twice")
    with pytest.raises(InvalidState):
        await rt.start_container("c-twice")
    await harness.drive(rt.stop_container("c-twice"), 1)
    with pytest.raises(InvalidState):
        await rt.start_container("c-twice")
    await rt.delete_container("c-twice")
    with pytest.raises(ContainerNotFound):
        await rt.start_container("c-twice")
    with pytest.raises(ContainerNotFound):
        await rt.container_stats("c-twice")


async def test_unknown_containers_are_not_found_everywhere(harness: Harness) -> None:
    rt = harness.runtime
    for call in (
        rt.get_container("ghost"),
        rt.start_container("ghost"),
        rt.stop_container("ghost"),
        rt.delete_container("ghost"),
        rt.container_stats("ghost"),
    ):
        with pytest.raises(ContainerNotFound):
            await call
    with pytest.raises(ContainerNotFound):
        _ = [x async for x in rt.container_logs("ghost")]
    assert [s for s in await rt.list_containers() if s.id == "ghost"] == []


async def test_logs_since_a_time(harness: Harness) -> None:
    rt = harness.runtime
    await rt.pull_image(harness.image)
    await rt.create_container(harness.early_late("c-since"))
    await rt.start_container("c-since")
    mid = await harness.mid_then_late("c-since")
    # "early" lines were written ~1.5 s before mid, "late" ~1 s after it.
    after = [(x.stream, x.text) async for x in rt.container_logs("c-since", since=mid)]
    assert after == [(LogStream.STDOUT, "late")]
    everything = [x.text async for x in rt.container_logs("c-since", since=0.0)]
    assert everything == ["early", "late", "early-err"]
    await harness.drive(rt.delete_container("c-since"), 1)
