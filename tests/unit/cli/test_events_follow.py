"""``cloudless events -f`` across lost connections: resumed from the last event shown, so
nothing is shown twice or skipped, even when a cut falls between two events that one
transaction wrote. The server side is the real paging code
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
    ``(live, cut)``: ``live`` transactions are written while it streams, and it breaks
    after ``cut`` lines (``None``: it ends cleanly after them, as a coordinator that stops).
    Every transaction writes ``per_txn`` events (one revision, ids a, b, c...)."""

    def __init__(self, plans: list[tuple[int, int | None]], per_txn: int = 1) -> None:
        self.log: list[tuple[int, str, dict[str, Any]]] = []
        self.rev = 100
        self.plans = plans
        self.per_txn = per_txn
        self.paths: list[str] = []

    def write(self, txns: int, kind: str = "node") -> None:
        for _ in range(txns):
            self.rev += 1
            for i in range(self.per_txn):
                body = {"kind": kind, "message": f"event {self.rev}", "at": 0}
                self.log.append((self.rev, "abcdefgh"[i], body))

    def all_after(self, rev: int) -> list[str]:
        return [f"{r}{n}" for r, n, _ in self.log if r > rev]

    def stream(self, path: str, headers: dict[str, str] | None = None) -> Iterator[bytes]:
        self.paths.append(path)
        query = EventQuery.parse(dict(parse_qsl(urlsplit(path).query)))
        got = page(self.log, query, self.rev)
        if headers is not None:
            headers[CONTINUE_HEADER] = got.next.token
        lines = list(got.events)
        live, cut = self.plans.pop(0) if query.follow else (0, None)
        if live:
            self.write(live)
            lines += page(self.log, EventQuery(after=got.next, follow=True), self.rev).events
        lines = [e for e in lines if query.matches(e)]
        for i, e in enumerate(lines):
            if cut is not None and i == cut:
                raise ConnectionResetError("connection reset by peer")
            yield json.dumps(e).encode() + b"\n"
        if cut is not None:
            raise ConnectionResetError("connection reset by peer")


def run(server: Server, gaps: list[int], filters: dict[str, str] | None = None) -> list[str]:
    """Print the last 3 events, then follow through every scripted connection; ``gaps[i]``
    transactions are written while the client is away after connection i (the last must be
    0: nothing reads after the last connection). Returns the events shown, in order."""
    shown: list[str] = []

    def show(e: dict[str, Any]) -> None:
        shown.append(f"{e['revision']}{e['id']}")

    after = print_events(server, filters or {}, 3, show)  # type: ignore[arg-type]
    gaps = list(gaps)

    def sleep(_: float) -> None:
        server.write(gaps.pop(0) if gaps else 0)

    follow_events(
        server,  # type: ignore[arg-type]
        filters or {},
        after,
        show,
        sleep=sleep,
        attempts=len(server.plans),
    )
    return shown


@pytest.mark.parametrize(
    ("per_txn", "plans", "gaps"),
    [
        # breaks in the live part twice; events written while away each time
        (1, [(5, 2), (4, 1), (3, None)], [2, 3, 0]),
        # breaks before the first line, then inside the backlog of what was missed
        (1, [(5, 0), (0, 2), (2, None)], [4, 0, 0]),
        # a clean end (a coordinator stopping) is resumed the same way
        (1, [(2, None), (2, None)], [1, 0]),
        # nothing at all happens
        (1, [(0, None), (0, None)], [0, 0]),
        # three events a transaction: cuts after 1 and 5 lines fall inside a revision
        (3, [(2, 1), (1, 5), (1, None)], [1, 2, 0]),
    ],
)
def test_follow_resumes_without_gap_or_duplicate(
    per_txn: int, plans: list[tuple[int, int | None]], gaps: list[int]
) -> None:
    server = Server(list(plans), per_txn)
    server.write(4)  # revisions 101..104
    shown = run(server, gaps)
    # the last 3 events printed first, then every event written after, once each, in order
    everything = server.all_after(100)
    assert shown == everything[-(len(everything) - (4 * per_txn - 3)) :]
    assert len(shown) == len(set(shown))
    follows = [p for p in server.paths if "follow=1" in p]
    assert all("continue=" in p and "tail=" not in p for p in follows)


def test_follow_resumes_with_filters() -> None:
    server = Server([(0, 1), (0, None)])
    server.write(4, "node")  # 101..104
    server.write(4, "workload")  # 105..108
    server.write(2, "node")  # 109, 110
    shown = run(server, [0, 0], {"kind": "node"})
    # the last 3 node events; the cut connection had nothing new to show
    assert shown == ["104a", "109a", "110a"]


def test_a_client_error_is_not_retried() -> None:
    class Refusing:
        def stream(self, path: str, headers: dict[str, str] | None = None) -> Iterator[bytes]:
            raise ApiError(400, "invalid", "query kind: 'X' is not an event kind")
            yield b""  # pragma: no cover

    with pytest.raises(ApiError, match="event kind"):
        follow_events(Refusing(), {"kind": "X"}, "0", print, sleep=lambda _: None, attempts=3)  # type: ignore[arg-type]
