"""Planned departures: the decider's table (a snapshot in, node writes and stops out), the
reconcile round around it (make-before-break), and owner-reserved hours."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cloudless.coordinator.deciders.departures import SetDeparture, decide_departures
from cloudless.coordinator.deciders.reconcile import (
    ClusterView,
    CreateReplica,
    DeleteReplica,
    UpdateReplica,
    reconcile,
)
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.lib.errors import ValidationError
from cloudless.lib.ids import SequentialIds
from cloudless.model.departure import (
    Departure,
    DepartureKind,
    format_reserved,
    next_reserved,
    parse_reserved,
    reserved_at,
    reserved_end,
)
from cloudless.model.node import Node, NodeState
from cloudless.model.replica import DesiredState, Replica, ReplicaState
from cloudless.model.resources import Resources
from cloudless.model.workload import WorkloadSpec
from cloudless.testing.fake_placer import FakePlacer

S = NodeState
K = DepartureKind
H = 3600.0
BIG = Resources(4000, 8 << 30, 100 << 30, 10**9)
# Monday 2026-12-07 00:00 UTC. Unix time 0 was a Thursday, so Monday is bin 96.
MONDAY = 1796601600.0


def node(i: int, state: NodeState = S.READY, **kw: object) -> Node:
    return Node.make(f"n{i}", state=state, allocatable=BIG, capacity=BIG, **kw)  # type: ignore[arg-type]


def dep(kind: DepartureKind, deadline: float, at: float = 0.0) -> Departure:
    return Departure(kind, "why", at, deadline)


def rep(
    i: int,
    node_id: str,
    ready: bool = True,
    observed: ReplicaState = ReplicaState.RUNNING,
    **kw: object,
) -> Replica:
    return Replica(
        id=f"web-r{i}",
        workload="web",
        node_id=node_id,
        observed=observed,
        ready=ready,
        spec_version=1,
        **kw,  # type: ignore[arg-type]
    )


def wl(replicas: int) -> WorkloadRecord:
    spec = WorkloadSpec(name="web", image="busybox", replicas=replicas, resources=Resources(100))
    return WorkloadRecord(spec=spec, version=1)


def writes(n: Node, now: float, replicas: list[Replica] | None = None) -> list[SetDeparture]:
    return decide_departures({n.id: n}, replicas or [], now).nodes


# ---- reserved hours ----------------------------------------------------------------------


def test_monday_constant_is_a_monday() -> None:
    import datetime

    d = datetime.datetime.fromtimestamp(MONDAY, datetime.UTC)
    assert (d.weekday(), d.hour) == (0, 0)


@pytest.mark.parametrize(
    ("text", "offset_h", "utc_ranges"),
    [
        # Mon-Fri 18-23 at UTC: five 5-hour stretches
        ("Mon-Fri 18-23", 0, [f"{d} 18:00-23:00 UTC" for d in ("Mon", "Tue", "Wed", "Thu", "Fri")]),
        # the same at UTC+2: each 2 hours earlier in UTC
        ("Mon 18-23", 2, ["Mon 16:00-21:00 UTC"]),
        # 22-6 wraps past midnight into Sunday
        ("Sat 22-6", 0, ["Sat 22:00-Sun 06:00 UTC"]),
        # daily 0-24: the whole week, as one stretch
        ("daily 0-24", 0, ["Mon 00:00-Mon 00:00 UTC"]),
        # lists and several items; "Sat,Sun" and lower case
        (
            "sat,sun 10-12; Wed 9-10",
            0,
            ["Wed 09:00-10:00 UTC", "Sat 10:00-12:00 UTC", "Sun 10:00-12:00 UTC"],
        ),
    ],
)
def test_parse_reserved(text: str, offset_h: int, utc_ranges: list[str]) -> None:
    assert format_reserved(parse_reserved(text, offset_h * H)) == utc_ranges


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("Mon", "expected DAYS HH-HH"),
        ("Funday 1-2", "'Funday' is not a day"),
        ("Mon 18", "HH-HH"),
        ("Mon 25-26", "start <= 23"),
        ("Mon 5-5", "start != end"),
        ("Mon x-y", "not an hour range"),
    ],
)
def test_parse_reserved_refuses_naming_the_field(text: str, says: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_reserved(text, field="--reserved-hours")
    assert str(e.value).startswith("--reserved-hours: ") and says in str(e.value)


def test_reserved_helpers() -> None:
    bins = parse_reserved("Mon 18-20")
    assert reserved_at(bins, MONDAY + 18.5 * H) and not reserved_at(bins, MONDAY + 20 * H)
    # from 17:55 the stretch starts in 5 minutes; from 17:00 a 10-minute lead does not see it
    assert next_reserved(bins, MONDAY + 17 * H + 3300, 600) == MONDAY + 18 * H
    assert next_reserved(bins, MONDAY + 17 * H, 600) is None
    assert reserved_end(bins, MONDAY + 18.5 * H) == MONDAY + 20 * H


# ---- the decider's table -----------------------------------------------------------------

T = MONDAY + 12 * H  # Monday noon
RES = parse_reserved("Mon 18-20")


@pytest.mark.parametrize(
    ("case", "n", "now", "want"),
    [
        (
            "no departure, no reserved hours: nothing",
            node(0),
            T,
            [],
        ),
        (
            "reserved stretch 5 min away (lead 10 min): drain, deadline at its start",
            node(0, reserved_hours=RES),
            MONDAY + 18 * H - 300,
            [("n0", K.RESERVED, MONDAY + 18 * H, S.DRAINING)],
        ),
        (
            "reserved stretch 6 h away: nothing yet",
            node(0, reserved_hours=RES),
            T,
            [],
        ),
        (
            "inside the stretch, node came back ready: drain at once, deadline now",
            node(0, reserved_hours=RES),
            MONDAY + 19 * H,
            [("n0", K.RESERVED, MONDAY + 19 * H, S.DRAINING)],
        ),
        (
            "reserved stretch over: cleared, drained node ready again",
            node(0, S.CORDONED, reserved_hours=RES, departure=dep(K.RESERVED, MONDAY + 18 * H)),
            MONDAY + 20 * H,
            [("n0", None, None, S.READY)],
        ),
        (
            "still inside the stretch: keep it",
            node(0, S.CORDONED, reserved_hours=RES, departure=dep(K.RESERVED, MONDAY + 18 * H)),
            MONDAY + 19 * H,
            [],
        ),
        (
            "a reserved stretch does not start on an offline node",
            node(0, S.OFFLINE, reserved_hours=RES),
            MONDAY + 19 * H,
            [],
        ),
        (
            "leave announced, still draining: nothing (the reconciler moves replicas)",
            node(0, S.DRAINING, departure=dep(K.LEAVE, T + 300)),
            T,
            [],
        ),
        (
            "leaving node went offline: departed, not failed",
            node(0, S.OFFLINE, departure=dep(K.LEAVE, T + 300)),
            T,
            [("n0", K.LEAVE, T + 300, S.DEPARTED)],
        ),
        (
            "departed node came back (ready): its departure is cleared",
            node(0, S.READY, departure=dep(K.LEAVE, T - 300)),
            T,
            [("n0", None, None, None)],
        ),
        (
            "a drain with a deadline that finished (cordoned): cleared",
            node(0, S.CORDONED, departure=dep(K.DRAIN, T + 300)),
            T,
            [("n0", None, None, None)],
        ),
    ],
)
def test_decider_node_writes(
    case: str,
    n: Node,
    now: float,
    want: list[tuple[str, DepartureKind | None, float | None, NodeState | None]],
) -> None:
    got = [
        (
            w.node_id,
            w.departure.kind if w.departure else None,
            w.departure.deadline if w.departure else None,
            w.state,
        )
        for w in writes(n, now)
    ]
    assert got == want, case


@pytest.mark.parametrize(
    ("case", "now", "want_stopped"),
    [
        # deadline T + 300; before it nothing is forced, the reconciler's make-before-break rules
        ("before the deadline: nothing forced", T + 299, []),
        # at the deadline the running replica is stopped; the stopped one is left alone
        ("at the deadline: what still runs is stopped", T + 300, ["web-r0"]),
    ],
)
def test_deadline_stops_what_is_left(case: str, now: float, want_stopped: list[str]) -> None:
    n = node(0, S.DRAINING, departure=dep(K.LEAVE, T + 300))
    reps = [rep(0, "n0"), rep(1, "n0", desired=DesiredState.STOPPED), rep(2, "n1")]
    got = decide_departures({"n0": n, "n1": node(1)}, reps, now)
    assert [s.replica.id for s in got.stop] == want_stopped, case
    assert all("departure deadline passed" in s.reason for s in got.stop)


# ---- the reconcile round around it: make-before-break ------------------------------------


def _round(nodes: list[Node], reps: list[Replica], now: float) -> list[object]:
    view = ClusterView({n.id: n for n in nodes}, {"web": wl(2)}, {r.id: r for r in reps})
    return list(reconcile(view, FakePlacer(), SequentialIds(), now))


def _stopped(acts: list[object]) -> list[str]:
    return [
        a.replica.id
        for a in acts
        if isinstance(a, UpdateReplica) and a.replica.desired is DesiredState.STOPPED
    ]


def test_leave_is_make_before_break() -> None:
    leaving = node(0, S.DRAINING, departure=dep(K.LEAVE, T + 300))
    nodes = [leaving, node(1), node(2)]
    reps = [rep(0, "n0"), rep(1, "n1")]
    # round 1: a replacement on n2, nothing stopped (2 wanted, 1 ready elsewhere)
    acts = _round(nodes, reps, T)
    assert [a.replica.node_id for a in acts if isinstance(a, CreateReplica)] == ["n2"]
    assert _stopped(acts) == []
    # the replacement runs but is not ready: still nothing stopped
    reps.append(rep(2, "n2", ready=False))
    assert _stopped(_round(nodes, reps, T + 10)) == []
    # ready: now the old one stops
    reps[-1] = rep(2, "n2")
    assert _stopped(_round(nodes, reps, T + 20)) == ["web-r0"]


def test_deadline_breaks_without_make() -> None:
    # nowhere else to go (n1 is the only other node and is cordoned): the drain waits...
    nodes = [node(0, S.DRAINING, departure=dep(K.LEAVE, T + 300)), node(1, S.CORDONED)]
    reps = [rep(0, "n0"), rep(1, "n1")]
    assert _stopped(_round(nodes, reps, T)) == []
    # ...until the deadline
    assert _stopped(_round(nodes, reps, T + 300)) == ["web-r0"]


def test_departed_node_replicas_are_deleted_not_waited_for() -> None:
    nodes = [node(0, S.DEPARTED, departure=dep(K.LEAVE, T)), node(1), node(2)]
    reps = [rep(0, "n0", observed=ReplicaState.LOST), rep(1, "n1")]
    acts = _round(nodes, reps, T)
    assert [a.replica_id for a in acts if isinstance(a, DeleteReplica)] == ["web-r0"]
    assert [a.replica.node_id for a in acts if isinstance(a, CreateReplica)] == ["n2"]


def test_departed_is_reachable_and_comes_back() -> None:
    for start in (S.READY, S.DRAINING, S.CORDONED, S.OFFLINE):
        assert node(0, start).moved_to(S.DEPARTED)[0] is not None, start
    assert node(0, S.FAILED).moved_to(S.DEPARTED) == (
        None,
        "a node cannot go from failed to departed",
    )
    assert node(0, S.DEPARTED).moved_to(S.READY)[0] is not None


def test_departure_round_trips_in_the_record() -> None:
    n = node(0, S.DRAINING, departure=dep(K.DRAIN, T + 60, at=T), reserved_hours=RES)
    assert Node.from_dict(n.to_dict()) == n
    assert Node.from_dict(replace(n, departure=None).to_dict()).departure is None


def test_deadline_spares_replicas_of_workloads_with_volumes() -> None:
    # their data is on the node: they stay until it goes, on_node_loss decides then
    n = node(0, S.DRAINING, departure=dep(K.LEAVE, T))
    db = replace(rep(0, "n0"), workload="db", id="db-0")
    got = decide_departures({"n0": n}, [db, rep(1, "n0")], T, keep=frozenset({"db"}))
    assert [s.replica.id for s in got.stop] == ["web-r1"]
