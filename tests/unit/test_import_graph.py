"""The import graph of ``cloudless``: the agent never imports the coordinator (the wire
format they share lives in ``cloudless.api``), and no two modules import each other, directly
or round a longer circle, at module level. Imports inside functions (deferred on purpose) and
under ``if TYPE_CHECKING:`` are not module-level and are left out of the circle check; the
agent rule counts every import."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "cloudless"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py")) if "/gen/" not in p.as_posix()}


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(body: list[ast.stmt], top: bool) -> Iterator[tuple[ast.stmt, bool]]:
    """(import statement, at module level) for every import in ``body``."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, top
        elif isinstance(node, ast.If) and _is_type_checking(node):
            yield from _imports(node.body, False)
            yield from _imports(node.orelse, top)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _imports(node.body, False)
        elif isinstance(node, ast.ClassDef):
            yield from _imports(node.body, top)
        else:
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list):
                    yield from _imports([n for n in inner if isinstance(n, ast.stmt)], top)
                    for h in inner:
                        if isinstance(h, ast.ExceptHandler):
                            yield from _imports(h.body, top)


def edges(known: dict[str, Path]) -> dict[str, set[tuple[str, bool]]]:
    """module -> {(imported cloudless module, at module level)}."""
    out: dict[str, set[tuple[str, bool]]] = {}
    for name, path in known.items():
        is_pkg = path.name == "__init__.py"
        found: set[tuple[str, bool]] = set()
        for node, top in _imports(ast.parse(path.read_text(), str(path)).body, True):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")
                    anchor = anchor if is_pkg else anchor[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    targets.append(sub if sub in known else base)
            for t in targets:
                while t and t not in known:  # ``import a.b.c`` of a name inside a module
                    t = t.rpartition(".")[0]
                if t and t != name:
                    found.add((t, top))
        out[name] = found
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_scan_sees_the_package() -> None:
    known = modules()
    graph = edges(known)
    assert len(known) > 200
    assert ("cloudless.api.convert", True) in graph["cloudless.agent.link"]


def test_the_agent_never_imports_the_coordinator() -> None:
    graph = edges(modules())
    bad = sorted(
        f"{src} imports {dst}"
        for src, targets in graph.items()
        if src.startswith("cloudless.agent")
        for dst, _ in targets
        if dst == "cloudless.coordinator" or dst.startswith("cloudless.coordinator.")
    )
    assert bad == []


def test_no_import_cycles_at_module_level() -> None:
    graph = edges(modules())
    top = {src: {dst for dst, at_top in targets if at_top} for src, targets in graph.items()}
    assert cycles(top) == []


def test_the_cycle_finder_finds_a_circle() -> None:
    # a -> b -> c -> a is one circle; d -> a hangs off it
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
