"""Every repository path and every ``cloudless.…`` name that a docstring cites exists: a
docstring that points at a moved or never-written file (a contract test, a module) fails
here instead of misleading its reader."""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("cloudless", "tests", "bench", "scripts")
PATH = re.compile(r"(?<![\w/.-])((?:cloudless|tests|docs|bench|scripts|examples)/[\w./-]*\w)")
NAME = re.compile(r"``(cloudless(?:\.\w+)+)``")
EXTENSIONS = (".py", ".md", ".json", ".yaml", ".yml", ".toml", ".proto", ".txt", ".sh")


def docstrings() -> Iterator[tuple[str, int, str]]:
    """(file, line, docstring) for every module, class and function docstring."""
    for top in SCANNED:
        for f in sorted((ROOT / top).rglob("*.py")):
            if "/gen/" in f.as_posix():
                continue
            tree = ast.parse(f.read_text(), str(f))
            for node in ast.walk(tree):
                if isinstance(
                    node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
                ):
                    doc = ast.get_docstring(node, clean=False)
                    if doc:
                        line = getattr(node, "lineno", 1)
                        yield f.relative_to(ROOT).as_posix(), line, doc


def resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def citations() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for where, line, doc in docstrings():
        for m in PATH.finditer(doc):
            path = m.group(1).rstrip(".")
            if path.endswith(EXTENSIONS) or path.endswith("/"):
                found.append((f"{where}:{line}", path))
        for m in NAME.finditer(doc):
            found.append((f"{where}:{line}", m.group(1)))
    return found


def test_the_scan_finds_citations() -> None:
    # the scan itself works (the code cites dozens of files and modules)
    assert len(citations()) > 20


@pytest.mark.parametrize(("where", "cited"), citations())
def test_cited_path_or_name_exists(where: str, cited: str) -> None:
    if cited.startswith("cloudless.") and "/" not in cited:
        assert resolves(cited), f"{where} cites {cited}, which does not import"
    else:
        assert (ROOT / cited).exists(), f"{where} cites {cited}, which does not exist"
