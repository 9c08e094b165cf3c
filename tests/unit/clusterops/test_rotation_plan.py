"""When a root rotation takes its next step (``rotation_plan.next_step``): tables."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cloudless.clusterops.rotation_plan import (
    NodeTrust,
    Rotation,
    RotationView,
    abort_refusal,
    aborting,
    advanced,
    next_step,
)
from cloudless.lib.errors import ValidationError

OLD, NEW = "o" * 64, "n" * 64
ROT = Rotation("rot-1", "trust", OLD, NEW, "pem", "key", started_at=100.0, overlap_s=60.0)


def node(i: int, trusted: tuple[str, ...], issuer: str, ready: bool = True) -> NodeTrust:
    return NodeTrust(f"n{i}", ready, trusted, issuer)


BOTH = (OLD, NEW)


def view(
    phase: str,
    nodes: list[NodeTrust],
    applied: dict[str, tuple[str, str]] | None = None,
    now: float = 1000.0,
    issued_at: float = 900.0,
) -> RotationView:
    rot = replace(ROT, phase=phase, issued_at=issued_at)
    if applied is None:
        applied = {"c1": ("rot-1", phase), "c2": ("rot-1", phase)}
    return RotationView(rot, now, ("c1", "c2"), applied, tuple(nodes))


# (view, expected next phase or None, fragment of the reason)
CASES = [
    # trust: waits for every coordinator ...
    (view("trust", [], {"c1": ("rot-1", "trust")}), None, "1 of 2 coordinators"),
    # ... an applied phase of an *older* rotation does not count
    (
        view("trust", [], {"c1": ("rot-1", "trust"), "c2": ("rot-0", "done")}),
        None,
        "have not applied trust yet: c2",
    ),
    # ... and every ready node trusting the new root
    (view("trust", [node(1, BOTH, OLD), node(2, (OLD,), OLD)]), None, "1 of 2 ready nodes"),
    (view("trust", [node(1, BOTH, OLD), node(2, BOTH, OLD)]), "issue", "trusts the new root"),
    # a node that is not ready does not hold it back, but is named
    (
        view("trust", [node(1, BOTH, OLD), node(2, (OLD,), OLD, ready=False)]),
        "issue",
        "not waited for: n2",
    ),
    # a coordinator that already applied a later phase applied this one
    (
        view("trust", [], {"c1": ("rot-1", "issue"), "c2": ("rot-1", "trust")}),
        "issue",
        "trusts",
    ),
    # issue: every ready node's certificate from the new root ...
    (view("issue", [node(1, BOTH, NEW), node(2, BOTH, OLD)]), None, "old root: n2"),
    # ... and the overlap: issued at 900 + 60 s overlap = 960 <= now 1000: retire
    (view("issue", [node(1, BOTH, NEW)]), "retire", "renewed"),
    # issued at 990 + 60 = 1050 > now 1000: 50 s left
    (view("issue", [node(1, BOTH, NEW)], issued_at=990.0), None, "retired in 50s"),
    # retire: until no ready node trusts the old root
    (view("retire", [node(1, BOTH, NEW)]), None, "still trust the old root: n1"),
    (view("retire", [node(1, (NEW,), NEW)]), "done", "stopped trusting"),
    (view("done", [node(1, BOTH, OLD)]), None, "finished"),
]


@pytest.mark.parametrize(("v", "to", "fragment"), CASES)
def test_next_step(v: RotationView, to: str | None, fragment: str) -> None:
    step = next_step(v)
    assert step.advance_to == to, step.reason
    assert fragment in step.reason


def test_names_are_capped_at_five() -> None:
    nodes = [node(i, (OLD,), OLD) for i in range(8)]
    reason = next_step(view("trust", nodes)).reason
    assert "8 of 8 ready nodes" in reason and "and 3 more" in reason


def test_advanced_stamps_the_switch_time() -> None:
    v = view("trust", [node(1, BOTH, OLD)])
    rot = advanced(v.rotation, next_step(v), now=1234.0)
    assert (rot.phase, rot.issued_at, rot.updated_at) == ("issue", 1234.0, 1234.0)
    waiting = advanced(rot, next_step(replace(v, rotation=rot, now=1240.0)), now=1240.0)
    assert waiting.phase == "issue" and waiting.issued_at == 1234.0  # still waiting


@pytest.mark.parametrize(
    ("record", "fragment"),
    [
        ({**ROT.to_dict(), "phase": "switch"}, "rotation.phase: 'switch'"),
        ({"id": "rot-1", "phase": "trust"}, "incomplete"),
    ],
)
def test_bad_records_name_the_problem(record: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        Rotation.from_dict(record)


def test_record_round_trip_ignores_unknown_fields() -> None:
    assert Rotation.from_dict({**ROT.to_dict(), "future_field": 1}) == ROT


# ---- aborting -----------------------------------------------------------------------------


def aborted_view(
    from_phase: str,
    phase: str,
    nodes: list[NodeTrust],
    now: float = 1000.0,
    aborted_at: float = 900.0,
) -> RotationView:
    rot = replace(ROT, phase=phase, aborted_from=from_phase, aborted_at=aborted_at)
    applied = {"c1": ("rot-1", phase), "c2": ("rot-1", phase)}
    return RotationView(rot, now, ("c1", "c2"), applied, tuple(nodes))


ABORT_CASES = [
    # revert: every ready node back on a certificate from the old root ...
    (aborted_view("issue", "revert", [node(1, BOTH, NEW)]), None, "from the new root: n1"),
    # ... and the overlap: aborted at 900 + 60 s = 960 <= now 1000: untrust
    (aborted_view("issue", "revert", [node(1, BOTH, OLD)]), "untrust", "back on the old root"),
    # aborted at 990 + 60 = 1050 > now 1000: 50 s left
    (
        aborted_view("issue", "revert", [node(1, BOTH, OLD)], aborted_at=990.0),
        None,
        "dropped in 50s",
    ),
    # untrust: until no ready node trusts the new root
    (aborted_view("trust", "untrust", [node(1, BOTH, OLD)]), None, "still trust the new root"),
    (aborted_view("trust", "untrust", [node(1, (OLD,), OLD)]), "aborted", "dropped the new"),
    (aborted_view("issue", "aborted", []), None, "finished"),
    # a coordinator that applied issue has not applied revert (revert comes after issue)
    (
        RotationView(
            replace(ROT, phase="revert", aborted_from="issue"),
            1000.0,
            ("c1", "c2"),
            {"c1": ("rot-1", "revert"), "c2": ("rot-1", "issue")},
            (),
        ),
        None,
        "have not applied revert yet: c2",
    ),
]


@pytest.mark.parametrize(("v", "to", "fragment"), ABORT_CASES)
def test_next_step_when_aborting(v: RotationView, to: str | None, fragment: str) -> None:
    step = next_step(v)
    assert step.advance_to == to, step.reason
    assert fragment in step.reason


# (phase, aborted_from, refusal fragment or None)
REFUSALS = [
    ("trust", "", None),
    ("issue", "", None),
    ("retire", "", "too late to go back"),
    ("done", "", "too late to abort"),
    ("revert", "issue", "being aborted already (phase revert)"),
    ("untrust", "trust", "being aborted already (phase untrust)"),
    ("aborted", "issue", "was aborted already"),
]


@pytest.mark.parametrize(("phase", "aborted_from", "fragment"), REFUSALS)
def test_abort_refusal(phase: str, aborted_from: str, fragment: str | None) -> None:
    why = abort_refusal(replace(ROT, phase=phase, aborted_from=aborted_from))
    assert why == fragment if fragment is None else why is not None and fragment in why


def test_nothing_to_abort() -> None:
    assert "no root rotation has been started" in (abort_refusal(None) or "")


def test_aborting_from_trust_skips_revert() -> None:
    # nothing came from the new root yet: straight to dropping it
    rot = aborting(ROT, now=500.0)
    assert (rot.phase, rot.aborted_from, rot.aborted_at) == ("untrust", "trust", 500.0)
    assert rot.path == ("trust", "untrust", "aborted") and rot.active
    rot = aborting(replace(ROT, phase="issue"), now=600.0)
    assert (rot.phase, rot.aborted_from) == ("revert", "issue")
    assert rot.path == ("trust", "issue", "revert", "untrust", "aborted")


@pytest.mark.parametrize(
    ("record", "fragment"),
    [
        ({**ROT.to_dict(), "aborted_from": "retire"}, "rotation.aborted_from: 'retire'"),
        # revert is only on the path of a rotation aborted in issue
        ({**ROT.to_dict(), "phase": "revert"}, "not on this rotation's path"),
        ({**ROT.to_dict(), "phase": "revert", "aborted_from": "trust"}, "not on this"),
        ({**ROT.to_dict(), "phase": "retire", "aborted_from": "issue"}, "not on this"),
    ],
)
def test_bad_abort_records_name_the_problem(record: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        Rotation.from_dict(record)
