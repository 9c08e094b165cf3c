"""Property tests: log reading reassembles any write pattern; the fake's states only move
forward and every started container exits exactly once on the stream."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from cloudless.lib.clock import FakeClock
from cloudless.runtime import (
    ContainerSpec,
    ContainerState,
    FakeBehavior,
    FakeHost,
    FakeRuntime,
    InvalidState,
)
from cloudless.runtime.logs import split_lines
from cloudless.runtime.types import LogCursor, LogStream
from tests.unit.runtime.test_logs import MemSource

text = st.text(alphabet="ab\n", max_size=40)


@given(st.lists(text, max_size=8), st.integers(1, 7))
def test_split_lines_in_any_chunking_rebuilds_the_stream(parts: list[str], chunk: int) -> None:
    data = "".join(parts).encode()
    got: list[str] = []
    pos = 0
    while pos < len(data):
        # Feed whatever has arrived (up to `chunk` new bytes), resuming where we stopped.
        end = min(len(data), pos + chunk)
        lines, to = split_lines(data[pos:end], pos, final=end == len(data))
        got += [t for t, _ in lines]
        if to == pos and end < len(data):
            chunk += 1  # a line longer than the window: widen it, as a reader would
            continue
        pos = to if to > pos else end
    expected = data.decode().split("\n")
    if expected and expected[-1] == "":
        expected.pop()
    assert got == expected


@given(st.lists(text, max_size=6), st.integers(0, 5))
@settings(max_examples=50)
def test_resuming_from_any_cursor_yields_the_rest(parts: list[str], k: int) -> None:
    from cloudless.runtime.logs import read_logs

    async def go() -> None:
        src = MemSource(done=True)
        src.data[LogStream.STDOUT] += "".join(parts).encode()
        everything = [x async for x in read_logs(src, follow=False, tail=None, since=None)]
        cut = min(k, len(everything))
        since = everything[cut - 1].cursor if cut else LogCursor()
        rest = [x.text async for x in read_logs(src, follow=False, tail=None, since=since)]
        assert rest == [x.text for x in everything[cut:]]

    asyncio.run(go())


ops = st.lists(
    st.tuples(
        st.sampled_from(["create", "start", "stop", "delete", "advance", "kill"]),
        st.integers(0, 2),
    ),
    max_size=25,
)
ORDER = {ContainerState.CREATED: 0, ContainerState.RUNNING: 1, ContainerState.EXITED: 2}


@given(ops)
@settings(max_examples=60, deadline=None)
def test_fake_states_move_forward_and_each_start_exits_once(seq: list[tuple[str, int]]) -> None:
    async def go() -> None:
        clock = FakeClock()
        rt = FakeRuntime(
            clock,
            host=FakeHost(images={"img"}),
            by_container={"c1": FakeBehavior(run_for=1.5), "c2": FakeBehavior(oom_after=0.5)},
        )
        loop = asyncio.create_task(rt.run())
        exits = rt.exits()
        await rt.pull_image("img")
        seen: dict[str, ContainerState] = {}
        started: list[str] = []
        for op, n in seq:
            cid = f"c{n}"
            try:
                if op == "create" and cid not in seen:
                    await rt.create_container(ContainerSpec(id=cid, image="img"))
                elif op == "start" and cid in seen:
                    await rt.start_container(cid)
                    started.append(cid)
                elif op == "stop" and cid in seen:
                    await rt.stop_container(cid, timeout=0)
                elif op == "delete" and cid in seen:
                    await rt.delete_container(cid)
                    del seen[cid]
                    continue
                elif op == "kill" and cid in seen and seen[cid] is ContainerState.RUNNING:
                    rt.kill_externally(cid)
                elif op == "advance":
                    await clock.run_for(1.0, step=0.5)
            except InvalidState:
                pass  # e.g. starting twice: refused, state unchanged
            for s in await rt.list_containers():
                before = seen.get(s.id)
                assert before is None or ORDER[s.state] >= ORDER[before], (s.id, before, s.state)
                seen[s.id] = s.state
        await asyncio.sleep(0)
        got: list[str] = []
        while True:
            try:
                got.append((await asyncio.wait_for(anext(exits), 0.01)).id)
            except TimeoutError:
                break
        # Every container that started has exited at most once, and exactly once if it is
        # exited or was deleted; none exits without having started.
        assert sorted(set(got)) == sorted(set(got) & set(started))
        assert len(got) == len(started) - sum(
            1 for s in await rt.list_containers() if s.state is ContainerState.RUNNING
        )
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)

    asyncio.run(go())
