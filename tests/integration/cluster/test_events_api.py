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
from cloudless.coordinator.state.cluster import event
from cloudless.coordinator.wiring.process import Coordinator

pytestmark = pytest.mark.integration


async def write(
    coord: Coordinator, n: int, kind: str = "test", pause: float = 0.0, per_txn: int = 1
) -> list[str]:
    """``n`` transactions of ``per_txn`` events each; their "revision:id" positions."""
    done = []
    for i in range(n):
        ops, names = [], []
        for j in range(per_txn):
            at = coord.clock.now() + j * 1e-6
            name, body = event(kind, f"{kind} event {i}.{j}", at, node=f"n{i % 3}")
            ops.append(coord.state.events.put_op(name, body))
            names.append(name)
        rev = (await coord.store.txn((), ops)).revision
        done += [f"{rev}:{name}" for name in sorted(names)]
        if pause:
            await asyncio.sleep(pause)
    return done


def get(client: Client, query: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    headers: dict[str, str] = {}
    lines = list(client.stream("/v1/events?" + query, headers))
    return [json.loads(x) for x in lines if x.strip()], {k.lower(): v for k, v in headers.items()}


async def test_pages_filters_and_bad_queries(cluster) -> None:  # type: ignore[no-untyped-def]
    coord, client, _, _ = cluster
    revs = await write(coord, 25)
    # pages of 10 from the start: 10 + 10 + 5, chained by the header
    seen: list[str] = []
    after, more = "0", True
    while more:
        page, h = await asyncio.to_thread(get, client, f"kind=test&continue={after}&limit=10")
        seen += [f"{e['revision']}:{e['id']}" for e in page]
        after, more = h["cloudless-continue"], h.get("cloudless-more") == "1"
    assert seen == revs
    # object: node n1 tagged on events 1, 4, 7, ... (i % 3 == 1): 8 of 25
    page, _ = await asyncio.to_thread(get, client, "kind=test&object=node/n1&tail=1000")
    assert [f"{e['revision']}:{e['id']}" for e in page] == revs[1::3]
    # a bad query is a 400 with the JSON error naming the parameter
    with pytest.raises(ApiError) as e:
        await asyncio.to_thread(get, client, "limit=Infinity")
    assert e.value.status == 400 and "query.limit" in str(e.value)


async def test_follow_resumes_across_cut_connections(cluster) -> None:  # type: ignore[no-untyped-def]
    coord, client, _, _ = cluster
    await write(coord, 5, kind="other")
    before = await write(coord, 3)
    total = 3 + 20 * 3
    shown: list[str] = []
    cuts = {1: 4, 2: 5}  # connection -> lines after which it is cut (inside a transaction)

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
        shown.append(f"{e['revision']}:{e['id']}")

    after = await asyncio.to_thread(print_events, client, {"kind": "test"}, 3, show)

    def follow() -> None:
        follow_events(Cutting(), {"kind": "test"}, after, show, attempts=3)  # type: ignore[arg-type]

    reader = asyncio.create_task(asyncio.to_thread(follow))
    # 20 transactions of 3 events, while connected, cut, and reconnecting
    during = await write(coord, 20, pause=0.03, per_txn=3)
    try:
        await asyncio.wait_for(reader, 30)
    except TimeoutError:
        raise AssertionError(f"shown {len(shown)}: {shown} vs {before + during}") from None
    assert shown == before + during  # every event once, in order, none skipped
