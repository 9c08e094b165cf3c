"""The agent's restart ledger: counts per replica and spec version, kept across processes; a
damaged file is ignored, not fatal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloudless.agent.restart_ledger import FILE, RestartLedger


def test_counts_per_replica_and_version_survive_a_new_process(tmp_path: Path) -> None:
    led = RestartLedger(tmp_path)
    assert led.get("db-0", 1) == 0  # nothing recorded
    led.record("db-0", 1, 2)
    led.record("web-x", 4, 7)
    again = RestartLedger(tmp_path)
    assert (again.get("db-0", 1), again.get("db-0", 2), again.get("web-x", 4)) == (2, 0, 7)
    again.forget("db-0")
    assert json.loads((tmp_path / FILE).read_text()) == {"web-x": [4, 7]}
    assert not (tmp_path / (FILE + ".tmp")).exists()  # written by rename


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"a": 3}', '{"a": ["x", 1]}'])
def test_a_damaged_file_is_ignored(tmp_path: Path, text: str) -> None:
    (tmp_path / FILE).write_text(text)
    led = RestartLedger(tmp_path)
    assert led.get("a", 1) == 0
    led.record("a", 1, 1)  # and replaced on the next restart
    assert RestartLedger(tmp_path).get("a", 1) == 1
