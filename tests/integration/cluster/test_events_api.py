"""``GET /v1/events`` on a real coordinator (HTTPS, mTLS): pages chained by
``Cloudless-Continue``, filters, a bad query refused as JSON, and ``events -f`` (the CLI's
follow loop) across connections cut mid-stream while events keep coming: every event shown
once, in order, none skipped."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from cloudless.cli.client import ApiError, Client
from cloudless.cli.streams import follow_events, print_events
from cloudless.coordinator.server import Coordinator
from cloudless.coordinator.state import event

pytestmark = pytest.mark.integration


async def write(coord: Coordinator, n: int, kind: str = "test", pause: float = 0.0) -> list[int]:
    revs = []
    for i in range(n):
        name, body = event(kind, f"{kind} event {i}", coord.clock.now(), node=f"n{i % 3}")
        revs.append(await coord.state.events.put(name, body))
        if pause:
            await asyncio.sleep(pause)
    return revs


def get(client: Client, query: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    headers: dict[str, str] = {}
    lines = list(client.stream("/v1/events?" + query, headers))
    return [json.loads(x) for x in lines if x.strip()], {k.lower(): v for k, v in headers.items()}


async def test_pages_filters_and_bad_queries(cluster) -> None:  # type: ignore[no-untyped-def]
    coord, client, _, _ = cluster
    revs = await write(coord, 25)
    # pages of 10 from before the first: 10 + 10 + 5, chained by the header
    seen: list[int] = []
    since, more = revs[0] - 1, True
    while more:
        page, h = await asyncio.to_thread(get, client, f"kind=test&since={since}&limit=10")
        seen += [e["revision"] for e in page]
        since, more = int(h["cloudless-continue"]), h.get("cloudless-more") == "1"
    assert seen == revs
    # object: node n1 tagged on events 1, 4, 7, ... (i % 3 == 1): 8 of 25
    page, _ = await asyncio.to_thread(get, client, "kind=test&object=node/n1&tail=1000")
    assert [e["revision"] for e in page] == revs[1::3]
    # a bad query is a 400 with the JSON error naming the parameter
    with pytest.raises(ApiError) as e:
        await asyncio.to_thread(get, client, "limit=Infinity")
    assert e.value.status == 400 and "query limit" in str(e.value)


async def test_follow_resumes_across_cut_connections(cluster) -> None:  # type: ignore[no-untyped-def]
    coord, client, _, _ = cluster
    await write(coord, 5, kind="other")
    before = await write(coord, 3)
    total = 3 + 40
    shown: list[int] = []
    cuts = {1: 5, 2: 4}  # connection -> lines after which it is cut

    class Cutting:
        connections = 0

        def stream(self, path: str, headers: dict[str, str] | None = None) -> Iterator[bytes]:
            self.connections += 1
            cut = cuts.get(self.connections)
            lines = client.stream(path, headers)
            try:
                for n, line in enumerate(lines, 1):
                    yield line
                    if len(shown) >= total:
                        return
                    if n == cut:
                        raise ConnectionResetError("cut by the test")
            finally:
                lines.close()  # closes the connection: the server sees the client go

    def show(e: dict[str, Any]) -> None:
        shown.append(e["revision"])

    since = await asyncio.to_thread(print_events, client, {"kind": "test"}, 3, show)

    def follow() -> None:
        follow_events(Cutting(), {"kind": "test"}, since, show, attempts=3)  # type: ignore[arg-type]

    reader = asyncio.create_task(asyncio.to_thread(follow))
    during = await write(coord, 40, pause=0.02)  # while connected, cut, and reconnecting
    try:
        await asyncio.wait_for(reader, 30)
    except TimeoutError:
        raise AssertionError(f"shown {len(shown)}: {shown} vs {before + during}") from None
    assert shown == before + during  # every event once, in order, none skipped
