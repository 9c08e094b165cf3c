"""``cloudless coordinator --keep-events/--events-max-age`` reach ``CoordinatorConfig.events``;
``cloudless events --node --workload`` together is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudless.cli.daemons import coordinator_config
from cloudless.cli.main import app
from cloudless.coordinator.eventlog import EventBounds

runner = CliRunner()


def config(**kw: object) -> object:
    return coordinator_config(
        data_dir=Path("/tmp/x"),
        name="c1",
        host="127.0.0.1",
        api_port=8443,
        agent_port=7443,
        enroll_port=7444,
        etcd_client_port=2379,
        etcd_peer_port=2380,
        bootstrap=True,
        join="",
        token="",
        store="memory",
        root_key_size=2048,
        bcrypt_cost=4,
        **kw,  # type: ignore[arg-type]
    )


def test_defaults_and_flags() -> None:
    assert config().events == EventBounds()  # type: ignore[attr-defined]
    set_ = config(keep_events=500, events_max_age=3600.0).events  # type: ignore[attr-defined]
    assert (set_.max_count, set_.max_age_s, set_.interval_s) == (500, 3600.0, 10.0)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["coordinator", "--keep-events", "0"], "--keep-events"),
        (["coordinator", "--events-max-age", "inf"], "--events-max-age"),
        (["coordinator", "--events-max-age", "0.5"], "--events-max-age"),
        (["events", "--node", "n1", "--workload", "web"], "not both"),
    ],
)
def test_bad_flags_are_refused(args: list[str], says: str) -> None:
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert says in r.output
