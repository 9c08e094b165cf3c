"""The agent worker's own parts: the token file read while it grows, the enrollment limiter."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.cluster_scale.measure import Aimd
from bench.cluster_scale.swarm import Limiter, TokenFile


async def test_token_file_waits_for_a_whole_line(tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text("t0\nt1\nt2-half")  # the parent is half-way through appending line 2
    tokens = TokenFile(path)
    assert await tokens.get(1) == "t1"
    waiter = asyncio.create_task(tokens.get(2))
    await asyncio.sleep(0.1)
    assert not waiter.done()  # "t2-half" has no newline yet: not a token
    path.write_text("t0\nt1\nt2-whole\n")
    assert await asyncio.wait_for(waiter, 2.0) == "t2-whole"


async def test_limiter_holds_enrollments_to_the_window() -> None:
    lim = Limiter(Aimd(2, lo=1, hi=4))
    await lim.acquire()
    await lim.acquire()
    third = asyncio.create_task(lim.acquire())
    await asyncio.sleep(0.05)
    assert not third.done() and lim.busy == 2  # window 2: the third waits
    await lim.release(None)  # a failure: 2 / 2 = 1, and one slot freed (busy 1 < 1? no)
    await asyncio.sleep(0.05)
    assert not third.done() and lim.aimd.limit == 1.0
    await lim.release(0.1)  # fast answer: 1 + 1/1 = 2; busy 0 -> the third gets in
    await asyncio.wait_for(third, 1.0)
    assert lim.busy == 1 and lim.aimd.limit == 2.0
