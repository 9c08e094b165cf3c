"""Printing: tables keep data literal, documents are valid JSON/YAML, pipes get wide tables."""

from __future__ import annotations

import io
import json

import pytest
import yaml
from rich.console import Console

from cloudless.cli import output
from cloudless.cli.output import Format, document, table


def render(t: object, width: int = 100) -> str:
    buf = io.StringIO()
    Console(file=buf, width=width).print(t)
    return buf.getvalue()


def test_table_cells_are_literal_not_markup() -> None:
    text = render(
        table(["NAME", "REASON"], [["web", "0/5 nodes fit: 5 zone not in [eu-1a]"],
                                   ["[bold]x[/bold]", "closing [/x] tag"]])
    )  # fmt: skip
    assert "zone not in [eu-1a]" in text
    assert "[bold]x[/bold]" in text and "closing [/x] tag" in text


def test_table_layout() -> None:
    lines = render(table(["A", "LONGER"], [["1", "x"], ["22", "yy"]])).splitlines()
    # header, a rule, one line per row; columns aligned, no outer border
    assert [line.rstrip() for line in lines] == ["A    LONGER", "─" * 11, "1    x", "22   yy"]


@pytest.mark.parametrize("fmt", [Format.JSON, Format.YAML])
def test_documents_round_trip(fmt: Format) -> None:
    data = {"nodes": [{"id": "n1", "labels": {"zone": "a"}, "usage": 0.5, "gone": None}]}
    text = document(data, fmt)
    assert (json.loads(text) if fmt is Format.JSON else yaml.safe_load(text)) == data


def test_empty_table_is_a_note_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    output.print_table(["A"], [], what="workloads")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == "no workloads found"


def test_pipes_get_wide_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    c = output._Console(file=io.StringIO())  # not a terminal
    assert c.size.width >= output.PIPE_WIDTH
    monkeypatch.setenv("COLUMNS", "60")
    assert output._Console(file=io.StringIO()).size.width == 60  # the user's choice wins
