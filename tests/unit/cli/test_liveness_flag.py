"""``cloudless coordinator --liveness``: parsed into MembershipConfig and Keepalive."""

import pytest
import typer

from cloudless.cli.daemons import parse_liveness
from cloudless.coordinator.deciders.membership import MembershipConfig
from cloudless.lib.keepalive import Keepalive


def test_empty_keeps_the_defaults() -> None:
    assert parse_liveness("") == {}
    assert parse_liveness("  ") == {}


@pytest.mark.parametrize(
    ("text", "membership", "keepalive"),
    [
        ("grace=1", MembershipConfig(disconnect_grace_s=1.0), Keepalive()),
        (
            "frozen=8,ping=0.5",
            MembershipConfig(),
            Keepalive(frozen_limit_ms=8000, ping_every_ms=500),
        ),
        (
            "heartbeat=1, backstop=4, unacked=1",  # spaces after commas are fine
            MembershipConfig(heartbeat_interval_s=1.0, offline_after_s=4.0),
            Keepalive(unacked_limit_ms=1000),
        ),
    ],
)
def test_values(text: str, membership: MembershipConfig, keepalive: Keepalive) -> None:
    assert parse_liveness(text) == {"membership": membership, "keepalive": keepalive}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("graze=1", "expected KEY=SECONDS with KEY one of heartbeat"),
        ("grace", "expected KEY=SECONDS"),
        ("grace=soon", "grace='soon': expected seconds"),
        ("frozen=0", "frozen='0': expected seconds, more than 0"),
        ("backstop=2", "backstop=2 must exceed heartbeat=2"),
    ],
)
def test_bad_values_name_the_problem(text: str, says: str) -> None:
    with pytest.raises(typer.BadParameter) as e:
        parse_liveness(text)
    assert says in str(e.value)
