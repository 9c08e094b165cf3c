"""CEL expressions for admission policies: compiled once, checked before they are trusted.

The engine is ``common-expression-language`` (the ``cel`` module: Rust ``cel-interpreter``
bindings), chosen over ``cel-python`` by measurement (``bench/policy``: ~1-3 µs vs
~200-1,000 µs per evaluation). ``compile_expression`` refuses, with the reason and the
column where the parser points:

* text that does not parse, or is longer than ``MAX_LENGTH``;
* a variable other than ``VARIABLES`` (comprehension variables such as ``r`` in
  ``list.exists(r, ...)`` are fine);
* comprehensions nested deeper than ``MAX_NESTING``: the evaluator holds the GIL and cannot
  be interrupted, so cost must be bounded before evaluation. ``cost_exponent`` gives each
  expression an upper bound on how its cost grows with the request's largest list or
  string; ``admission`` refuses to evaluate what would exceed its step cap on a given
  request, and checks a time budget afterwards.

``ContextCache`` keeps the contexts of requests seen recently, keyed by their values: the
CEL-side environment is converted once per context and reused by every later request with
the same (trimmed) values. ``evaluate`` runs a program over an already built
``cel.Context`` and returns ``True``,
``False`` or an ``ExpressionError`` naming what went wrong at run time (a missing field, a
type mismatch, a division by zero, a non-boolean result).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import cel

from cloudless.lib.errors import CloudlessError

VARIABLES = ("object", "oldObject", "user", "request")
MAX_LENGTH = 4096
MAX_NESTING = 2
MACROS = ("all", "exists", "exists_one", "map", "filter")
_BINDER = re.compile(r"\.(?:all|exists|exists_one|map|filter)\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,")
_MACRO = re.compile(r"\.(all|exists|exists_one|map|filter)\s*\($")


class ExpressionError(CloudlessError):
    code = "policy_expression"


@dataclass(frozen=True)
class Expression:
    source: str
    program: Any  # cel.Program
    # per large variable (object, oldObject): the top-level fields read, or None for all
    fields: dict[str, frozenset[str] | None] = field(default_factory=dict)
    # evaluation steps grow at most like (largest list or string in the request) ** this
    cost_exponent: int = 0
    # per large variable, per top-level field: the names read one level down (``.name``), or
    # None where the field is used otherwise (whole, indexed, iterated, a method called...)
    subfields: dict[str, dict[str, frozenset[str] | None]] = field(default_factory=dict)
    variables: frozenset[str] = frozenset(VARIABLES)  # the ones it references


_STRING = re.compile(r"('''|\"\"\"|'|\").*?(?<!\\)\1", re.S)
_FIELD_USE = re.compile(r"\b(object|oldObject|user)\b(\s*\.\s*([A-Za-z_][A-Za-z0-9_]*))?")


def fields_read(source: str) -> dict[str, frozenset[str] | None]:
    """Which top-level fields of ``object``/``oldObject``/``user`` the expression reads
    (None: it uses the whole value, e.g. ``size(object)`` or ``object["image"]``). Converting the
    spec into CEL values is the dearest part of a request, so only these are converted."""
    text = _STRING.sub(lambda m: " " * len(m.group(0)), source)
    out: dict[str, set[str] | None] = {}
    for m in _FIELD_USE.finditer(text):
        var, name = m.group(1), m.group(3)
        if name is None:
            out[var] = None
        elif var not in out or out[var] is not None:
            out.setdefault(var, set())
            cur = out[var]
            assert cur is not None
            cur.add(name)
    return {k: (frozenset(v) if v is not None else None) for k, v in out.items()}


_SUBFIELD_USE = re.compile(
    r"\b(object|oldObject)\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)"
    r"(?:\s*\.\s*([A-Za-z_][A-Za-z0-9_]*))?"
)


def subfields_read(source: str) -> dict[str, dict[str, frozenset[str] | None]]:
    """For ``object.a.b``: ``{"object": {"a": {"b"}}}``; ``a`` used in any other way (or
    ``b`` followed by a call, e.g. ``object.labels.exists(...)``) gives ``None`` for ``a``.
    ``admission`` trims a map field to these keys only when every name is one of its keys,
    so a method name (``object.image.size()``) never trims anything."""
    text = _STRING.sub(lambda m: " " * len(m.group(0)), source)
    out: dict[str, dict[str, set[str] | None]] = {}
    for m in _SUBFIELD_USE.finditer(text):
        var, top, sub = m.group(1), m.group(2), m.group(3)
        per = out.setdefault(var, {})
        after = text[m.end() :].lstrip()
        if sub is None or after.startswith("("):
            per[top] = None
        elif per.get(top, set()) is not None:
            cur = per.setdefault(top, set())
            assert cur is not None
            cur.add(sub)
    return {
        v: {t: (frozenset(x) if x is not None else None) for t, x in per.items()}
        for v, per in out.items()
    }


def nesting(source: str) -> int:
    """The deepest nesting of comprehension macros in ``source`` (string literals skipped)."""
    stack: list[bool] = []  # per open paren: is it a macro's
    deepest = 0
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if c in "\"'":
            quote = source[i : i + 3] if source[i : i + 3] in ('"""', "'''") else c
            end = source.find(quote, i + len(quote))
            while end != -1 and len(quote) == 1 and source[end - 1] == "\\":
                end = source.find(quote, end + 1)
            i = n if end == -1 else end + len(quote)
            continue
        if c == "(":
            stack.append(bool(_MACRO.search(source[max(0, i - 12) : i + 1])))
            deepest = max(deepest, sum(stack))
        elif c == ")" and stack:
            stack.pop()
        i += 1
    return deepest


_LINEAR = re.compile(r"\bin\b|\.(?:contains|startsWith|endsWith|matches)\s*\(|\+")


def cost_exponent(source: str) -> int:
    """An upper bound ``e`` such that evaluating ``source`` takes at most ~``n ** e`` steps,
    ``n`` being the largest list, map or string it can reach: one per enclosing comprehension,
    plus one where a linear operation (``in``, ``contains``, ``startsWith``, ``endsWith``,
    ``matches``, ``+``) runs inside a comprehension. 0: constant or linear, always cheap."""
    text = _STRING.sub(lambda m: " " * len(m.group(0)), source)
    linear = {m.start() for m in _LINEAR.finditer(text)}
    stack: list[bool] = []
    worst = 0
    for i, c in enumerate(text):
        if c == "(":
            stack.append(bool(_MACRO.search(text[max(0, i - 12) : i + 1])))
        elif c == ")" and stack:
            stack.pop()
        depth = sum(stack)
        worst = max(worst, depth + (1 if depth and i in linear else 0))
    return worst


def compile_expression(source: str) -> Expression:
    if not isinstance(source, str) or not source.strip():
        raise ExpressionError(
            "the expression is empty: write a CEL expression that is true "
            "when the request is allowed"
        )
    if len(source) > MAX_LENGTH:
        raise ExpressionError(f"the expression is {len(source)} characters; at most {MAX_LENGTH}")
    try:
        program = cel.compile(source)
    except (ValueError, RuntimeError) as e:
        first = str(e).split("\n")
        where = " ".join(x.strip() for x in first[1:3] if x.strip())
        raise ExpressionError(
            f"does not compile: {first[0].split(': ', 1)[-1]}" + (f" [{where}]" if where else "")
        ) from None
    binders = set(_BINDER.findall(source))
    unknown = [v for v in program.variables() if v not in VARIABLES and v not in binders]
    if unknown:
        raise ExpressionError(
            f"unknown variable(s) {', '.join(unknown)}: a policy sees only {', '.join(VARIABLES)}"
        )
    depth = nesting(source)
    if depth > MAX_NESTING:
        raise ExpressionError(
            f"comprehensions nested {depth} deep ({', '.join(MACROS)} inside one another); at "
            f"most {MAX_NESTING}: their cost multiplies with the size of each list"
        )
    return Expression(
        source,
        program,
        fields_read(source),
        cost_exponent(source),
        subfields_read(source),
        frozenset(v for v in program.variables() if v in VARIABLES),
    )


def context(variables: dict[str, Any]) -> Any:
    """The evaluation context for one request, shared by every policy evaluated on it."""
    return cel.Context(variables)


class _Lane:
    """One thread's cache state."""

    def __init__(self) -> None:
        self.entries: OrderedDict[str, Any] = OrderedDict()
        self.missed_in_row = 0
        self.bypass = False
        self.calls = 0


class ContextCache:
    """The last ``size`` contexts built, by the ``repr`` of their variables, per thread
    (``cel.Context`` is not thread-safe).

    Converting a request's values into CEL values is most of a request's cost, and the
    bindings convert a context once, when it is built, then reuse it. ``repr`` tells apart
    every value the converter treats differently (``1``, ``True``, ``1.0``, ``"1"``; dict keys
    by type), so two requests share a context only if their variables convert to equal CEL
    values (they are plain JSON-like data: the spec's canonical form and the user record).

    When requests stop repeating (``bypass_after`` misses in a row), the key and the LRU cost
    more than they save: the cache then only looks every ``probe_every``-th request, and
    resumes on the first of those that hits."""

    def __init__(self, size: int = 256, *, bypass_after: int = 32, probe_every: int = 16) -> None:
        self.size = size
        self.bypass_after = bypass_after
        self.probe_every = probe_every
        self._local = threading.local()
        self.hits = 0
        self.misses = 0
        self.bypassed = 0

    def _lane(self) -> _Lane:
        lane: _Lane | None = getattr(self._local, "lane", None)
        if lane is None:
            lane = self._local.lane = _Lane()
        return lane

    def get(self, variables: dict[str, Any]) -> Any:
        lane = self._lane()
        lane.calls += 1
        if lane.bypass and lane.calls % self.probe_every:
            self.bypassed += 1
            return context(variables)
        key = repr(variables)
        entries = lane.entries
        ctx = entries.get(key)
        if ctx is not None:
            entries.move_to_end(key)
            self.hits += 1
            lane.missed_in_row, lane.bypass = 0, False
            return ctx
        self.misses += 1
        lane.missed_in_row += 1
        if lane.missed_in_row >= self.bypass_after:
            lane.bypass = True
        ctx = context(variables)
        entries[key] = ctx
        if len(entries) > self.size:
            entries.popitem(last=False)
        return ctx

    def clear(self) -> None:
        self._local = threading.local()


def evaluate(expr: Expression, ctx: Any) -> bool | ExpressionError:
    try:
        value = expr.program.execute(ctx)
    except KeyError as e:
        return ExpressionError(f"no such key or field {e}: guard it with has(...) or `in`")
    except Exception as e:  # the evaluator's run-time errors: fail closed, say which
        return ExpressionError(f"{type(e).__name__}: {str(e).split('. ')[0]}")
    if not isinstance(value, bool):
        return ExpressionError(f"returned {value!r}, not true or false")
    return value
