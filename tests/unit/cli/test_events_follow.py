"""``cloudless events -f`` across lost connections: resumed from the last event shown, so
nothing is shown twice or skipped. The server side is the real paging code
(``cloudless.coordinator.eventlog.query.page``) over an event log that grows while the
client is connected and while it is not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from cloudless.cli.client import ApiError
from cloudless.cli.streams import follow_events, print_events
from cloudless.coordinator.eventlog.query import CONTINUE_HEADER, EventQuery, page


class Server:
    """An event log and ``Client.stream`` over it. ``plans[i]`` scripts follow connection i:
    ``(live, cut)``: ``live`` events are written while it streams, and it breaks after
    ``cut`` lines (``None``: it ends cleanly after them, as a coordinator that stops)."""

    def __init__(self, plans: list[tuple[int, int | None]]) -> None:
        self.log: list[tuple[int, dict[str, Any]]] = []
        self.rev = 100
        self.plans = plans
        self.paths: list[str] = []

    def write(self, n: int, kind: str = "node") -> None:
        for _ in range(n):
            self.rev += 1
            self.log.append((self.rev, {"kind": kind, "message": f"event {self.rev}", "at": 0}))

    def stream(self, path: str, headers: dict[str, str] | None = None) -> Iterator[bytes]:
        self.paths.append(path)
        query = EventQuery.parse(dict(parse_qsl(urlsplit(path).query)))
        got = page(self.log, query, self.rev)
        if headers is not None:
            headers[CONTINUE_HEADER] = str(got.next_since)
        lines = [e for e in got.events]
        live, cut = self.plans.pop(0) if query.follow else (0, None)
        after = got.next_since
        if live:
            self.write(live)
            lines += page(self.log, EventQuery(since=after, follow=True), self.rev).events
        lines = [e for e in lines if query.matches(e)]
        for i, e in enumerate(lines):
            if cut is not None and i == cut:
                raise ConnectionResetError("connection reset by peer")
            yield json.dumps(e).encode() + b"\n"
        if cut is not None:
            raise ConnectionResetError("connection reset by peer")


def run(server: Server, gaps: list[int], filters: dict[str, str] | None = None) -> list[int]:
    """Print the last 3 events, then follow through every scripted connection; ``gaps[i]``
    events are written while the client is away after connection i (the last must be 0:
    nothing reads after the last connection). Returns the revisions
    shown, in order."""
    shown: list[int] = []
    since = print_events(server, filters or {}, 3, lambda e: shown.append(e["revision"]))  # type: ignore[arg-type]
    gaps = list(gaps)

    def sleep(_: float) -> None:
        server.write(gaps.pop(0) if gaps else 0)

    follow_events(
        server,  # type: ignore[arg-type]
        filters or {},
        since,
        lambda e: shown.append(e["revision"]),
        sleep=sleep,
        attempts=len(server.plans),
    )
    return shown


@pytest.mark.parametrize(
    ("plans", "gaps"),
    [
        # breaks in the live part twice; events written while away each time
        ([(5, 2), (4, 1), (3, None)], [2, 3, 0]),
        # breaks before the first line, then inside the backlog of what was missed
        ([(5, 0), (0, 2), (2, None)], [4, 0, 0]),
        # a clean end (a coordinator stopping) is resumed the same way
        ([(2, None), (2, None)], [1, 0]),
        # nothing at all happens
        ([(0, None), (0, None)], [0, 0]),
    ],
)
def test_follow_resumes_without_gap_or_duplicate(
    plans: list[tuple[int, int | None]], gaps: list[int]
) -> None:
    server = Server(list(plans))
    server.write(10)  # revisions 101..110; the last 3 (108..110) are printed first
    shown = run(server, gaps)
    # everything after 107, once each, in order: the 3 printed, then all that was written
    assert shown == list(range(108, server.rev + 1))
    follows = [p for p in server.paths if "follow=1" in p]
    assert all("since=" in p and "tail=" not in p for p in follows)


def test_follow_resumes_with_filters() -> None:
    server = Server([(0, 1), (0, None)])
    server.write(4, "node")  # 101..104
    server.write(4, "workload")  # 105..108
    server.write(2, "node")  # 109, 110
    shown = run(server, [0, 0], {"kind": "node"})
    # the last 3 node events, then: the cut connection showed nothing new (nothing written)
    assert shown == [104, 109, 110]


def test_a_client_error_is_not_retried() -> None:
    class Refusing:
        def stream(self, path: str, headers: dict[str, str] | None = None) -> Iterator[bytes]:
            raise ApiError(400, "invalid", "query kind: 'X' is not an event kind")
            yield b""  # pragma: no cover

    with pytest.raises(ApiError, match="event kind"):
        follow_events(Refusing(), {"kind": "X"}, 0, print, sleep=lambda _: None, attempts=3)  # type: ignore[arg-type]
