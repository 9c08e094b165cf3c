"""Admission policies: CEL validations over a workload spec and the requesting user (pure).

Modelled on Kubernetes' ValidatingAdmissionPolicy. A policy::

    name: trusted-registries
    description: images only from our registry
    mode: enforce            # or dry-run: report what would be denied, deny nothing
    namespaces: [web]        # optional: the namespaces it applies to (default: all)
    validations:
      - expression: '["registry.local/"].exists(r, object.image.startsWith(r))'
        message: images must come from registry.local

Each expression sees ``object`` (the spec in its canonical form, ``workload_to_dict``),
``oldObject`` (the stored spec, or null on create), ``user`` (``name``, ``role``,
``namespaces``) and ``request`` (``verb``: create or update). It must be true for the request
to be admitted.

Rules of ``admit``:

1. a policy applies when it has no namespaces or lists the spec's namespace;
2. each of its validations is evaluated in order; the first that is false, errors at run
   time, or overruns the budget gives that policy's ``Denial`` (fail closed: an error denies)
   naming the policy, the expression and the message or error;
3. an ``enforce`` policy's denial denies the request; a ``dry-run`` policy's is only reported;
4. a policy whose comprehensions could take more than ``MAX_STEPS`` on this request (its
   ``cost_exponent`` over the largest list, map or string in the request) is not evaluated
   and denies, saying so: the evaluator cannot be interrupted, so the cost is bounded
   before it starts;
5. an evaluation that took longer than ``budget_s`` (measured with the injected ``timer``;
   by default this thread's CPU time, so being descheduled on a busy machine does not count)
   denies even if it was true, and says how long it took (the second line: the budget is
   checked after the fact). The whole request is timed with the cheap ``wall`` clock: a
   thread's CPU time never exceeds the wall time, so a request within the budget by the wall
   clock has no policy over it. Only a request over the budget by the wall clock (a slow
   policy, or a busy machine) is evaluated again policy by policy with ``timer`` around each
   (the evaluator is deterministic), so the common case reads no CPU clock at all: on a busy
   virtual machine one read of it cost more than evaluating a policy.

Cost per request: the request's values are trimmed to the fields the applicable expressions
read (``_plan``, worked out once per set of compiled policies), then converted into CEL
values once for every policy; that conversion is most of the cost, so the context is kept in
a ``ContextCache`` keyed by the trimmed values: a request whose trimmed values were seen
recently (a re-apply, a scale, the same user and spec fields) converts nothing.
"""

from __future__ import annotations

import enum
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cloudless.lib.errors import ValidationError
from cloudless.lib.ids import is_valid_id
from cloudless.policy.expressions import (
    ContextCache,
    Expression,
    ExpressionError,
    compile_expression,
    context,
    evaluate,
)
from cloudless.policy.rbac import parse_namespaces

DEFAULT_BUDGET_S = 0.050
MAX_STEPS = 200_000  # ~0.3 s of the evaluator's slowest steps (~1.7 µs each, measured)
MAX_VALIDATIONS = 32
CONTEXTS = ContextCache()  # the requests' CEL contexts, by their trimmed values


class Mode(enum.StrEnum):
    ENFORCE = "enforce"
    DRY_RUN = "dry-run"


@dataclass(frozen=True)
class Validation:
    expression: Expression
    message: str

    @property
    def source(self) -> str:
        return self.expression.source


@dataclass(frozen=True)
class Policy:
    name: str
    validations: tuple[Validation, ...]
    mode: Mode = Mode.ENFORCE
    namespaces: tuple[str, ...] | None = None
    description: str = ""

    def applies_to(self, namespace: str) -> bool:
        return self.namespaces is None or namespace in self.namespaces

    @functools.cached_property
    def cost(self) -> tuple[int, str]:
        """The largest ``cost_exponent`` of its validations, and that validation's source."""
        v = max(self.validations, key=lambda v: v.expression.cost_exponent)
        return v.expression.cost_exponent, v.source

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "mode": self.mode.value,
            "validations": [
                {"expression": v.source, "message": v.message} for v in self.validations
            ],
        }
        if self.namespaces is not None:
            out["namespaces"] = list(self.namespaces)
        return out


@dataclass(frozen=True)
class Denial:
    policy: str
    expression: str
    message: str
    enforced: bool

    def describe(self) -> str:
        return f"policy {self.policy}: {self.message} (expression: {self.expression})"


@dataclass(frozen=True)
class Verdict:
    denials: tuple[Denial, ...] = ()  # enforced: the request is refused
    warnings: tuple[Denial, ...] = ()  # dry-run policies that would have refused it
    timings_s: Mapping[str, float] = field(default_factory=dict)

    @property
    def allowed(self) -> bool:
        return not self.denials

    def message(self) -> str:
        return "denied by " + "; ".join(d.describe() for d in self.denials)


def parse_policy(data: Any, path: str = "policy") -> Policy:
    """A policy from plain data, every expression compiled; all problems at once."""
    if not isinstance(data, dict):
        raise ValidationError(f"{path}: expected an object with name and validations")
    problems: list[str] = []
    extra = sorted(set(data) - {"name", "description", "mode", "namespaces", "validations", "kind"})
    if extra:
        problems.append(f"{path}: unknown field(s) {', '.join(extra)}")
    name = data.get("name")
    if not isinstance(name, str) or not is_valid_id(name):
        problems.append(f"{path}.name: {name!r} must be a DNS label (a-z, 0-9, '-')")
        name = ""
    raw_mode = data.get("mode", Mode.ENFORCE.value)
    try:
        mode = Mode(raw_mode)
    except ValueError:
        problems.append(f"{path}.mode: {raw_mode!r} is not enforce or dry-run")
        mode = Mode.ENFORCE
    namespaces = parse_namespaces(data.get("namespaces"), f"{path}.namespaces", problems)
    raw = data.get("validations")
    validations: list[Validation] = []
    if not isinstance(raw, list) or not raw:
        problems.append(f"{path}.validations: expected a non-empty list of {{expression, message}}")
        raw = []
    if len(raw) > MAX_VALIDATIONS:
        problems.append(f"{path}.validations: {len(raw)} validations; at most {MAX_VALIDATIONS}")
    for i, v in enumerate(raw[:MAX_VALIDATIONS]):
        vp = f"{path}.validations[{i}]"
        if not isinstance(v, dict) or not isinstance(v.get("expression"), str):
            problems.append(f"{vp}: expected {{expression: <CEL>, message: <text>}}")
            continue
        extra = sorted(set(v) - {"expression", "message"})
        if extra:
            problems.append(f"{vp}: unknown field(s) {', '.join(extra)}")
        try:
            expr = compile_expression(v["expression"])
        except ExpressionError as e:
            problems.append(f"{vp}.expression: {e.message}")
            continue
        msg = v.get("message")
        validations.append(
            Validation(expr, msg if isinstance(msg, str) and msg else f"failed: {expr.source}")
        )
    desc = data.get("description", "")
    if problems:
        raise ValidationError(problems)
    return Policy(name, tuple(validations), mode, namespaces, str(desc))


def request_variables(
    obj: Mapping[str, Any],
    user: Mapping[str, Any],
    *,
    old: Mapping[str, Any] | None = None,
    verb: str = "create",
) -> dict[str, Any]:
    return {"object": obj, "oldObject": old, "user": user, "request": {"verb": verb}}


def admit(
    policies: Sequence[Policy],
    variables: Mapping[str, Any],
    *,
    budget_s: float = DEFAULT_BUDGET_S,
    timer: Callable[[], float] = time.thread_time,
    wall: Callable[[], float] = time.perf_counter,
    contexts: ContextCache | None = CONTEXTS,
) -> Verdict:
    """Evaluate every applicable policy over one request (see the module rules);
    ``contexts=None`` converts the request afresh."""
    namespace = str(variables["object"].get("namespace", "default"))
    applicable = [p for p in policies if p.applies_to(namespace)]
    if not applicable:
        return Verdict()
    started = wall()
    verdict = _admit(applicable, variables, budget_s, None, contexts)
    if wall() - started <= budget_s:
        return verdict  # no policy can have overrun: CPU time <= wall time
    return _admit(applicable, variables, budget_s, timer, contexts)


def _admit(
    applicable: Sequence[Policy],
    variables: Mapping[str, Any],
    budget_s: float,
    timer: Callable[[], float] | None,
    contexts: ContextCache | None,
) -> Verdict:
    """One pass over the policies; with ``timer``, each policy is timed (rule 5)."""
    slim = _slim(variables, _plan(applicable))
    ctx = contexts.get(slim) if contexts is not None else context(slim)
    full: Any = None  # the whole request's context, built only if an error needs it
    denials: list[Denial] = []
    warnings: list[Denial] = []
    timings: dict[str, float] = {}
    largest: int | None = None
    for p in applicable:
        enforced = p.mode is Mode.ENFORCE
        exponent, source = p.cost
        if exponent:
            largest = largest if largest is not None else _largest(slim)
            why = _too_costly(largest, exponent)
            if why:
                (denials if enforced else warnings).append(Denial(p.name, source, why, enforced))
                continue
        started = timer() if timer is not None else 0.0
        hit: Denial | None = None
        for v in p.validations:
            result = evaluate(v.expression, ctx)
            if isinstance(result, ExpressionError) and full is not ctx:
                # the field analysis is a heuristic: an error on the trimmed values is
                # checked against the whole request (if affordable) before it counts
                e = v.expression.cost_exponent
                why = _too_costly(_largest(variables), e) if e else None
                if why:
                    hit = Denial(p.name, v.source, why, enforced)
                    break
                full = full if full is not None else context(dict(variables))
                result = evaluate(v.expression, full)
            if isinstance(result, ExpressionError):
                hit = Denial(p.name, v.source, f"evaluation error: {result.message}", enforced)
            elif result is False:
                hit = Denial(p.name, v.source, v.message, enforced)
            if hit:
                break
        if timer is None:
            if hit:
                (denials if enforced else warnings).append(hit)
            continue
        took = timer() - started
        timings[p.name] = took
        if took > budget_s:
            hit = Denial(
                p.name,
                hit.expression if hit else p.validations[-1].source,
                f"timed out: evaluation took {took * 1e3:.1f} ms, over the "
                f"{budget_s * 1e3:.1f} ms budget (simplify the policy)",
                enforced,
            )
        if hit:
            (denials if enforced else warnings).append(hit)
    return Verdict(tuple(denials), tuple(warnings), timings)


CUT_VARIABLES = ("object", "oldObject", "user")
# what each variable is cut to: None keeps every top-level field; otherwise top field ->
# None (kept whole) or the keys read one level down (kept if the value is a dict holding them)
_Cut = dict[str, dict[str, frozenset[str] | None] | None]
_PLANS: dict[tuple[int, ...], tuple[tuple[Policy, ...], frozenset[str], _Cut]] = {}


def _plan(policies: Sequence[Policy]) -> tuple[frozenset[str], _Cut]:
    """Which variables and fields the policies' expressions read: worked out once per set
    of compiled policies (policy versions), not on every request."""
    key = tuple(map(id, policies))
    hit = _PLANS.get(key)
    if hit is not None:
        return hit[1], hit[2]
    exprs = tuple(v.expression for p in policies for v in p.validations)
    used = frozenset().union(*(e.variables for e in exprs)) if exprs else frozenset()
    cut: _Cut = {}
    for var in CUT_VARIABLES:
        if any(e.fields.get(var, frozenset()) is None for e in exprs):
            cut[var] = None
            continue
        tops: set[str] = set()
        for e in exprs:
            tops |= e.fields.get(var) or frozenset()
        cut[var] = {top: _subkeys(var, top, exprs) for top in tops}
    if len(_PLANS) >= 256:
        _PLANS.clear()
    _PLANS[key] = (tuple(policies), used, cut)  # kept alive: their ids stay unique
    return used, cut


def _subkeys(var: str, top: str, exprs: Sequence[Expression]) -> frozenset[str] | None:
    """The keys of ``var.top`` read one level down by every expression reading it, or None
    when one reads it whole (``object.resources.memory`` only: {"memory"})."""
    names: set[str] = set()
    for e in exprs:
        per = e.subfields.get(var, {})
        if top not in per:
            if top in (e.fields.get(var) or ()):
                return None
            continue
        sub = per[top]
        if sub is None:
            return None
        names |= sub
    return frozenset(names) if names else None


def _slim(variables: Mapping[str, Any], plan: tuple[frozenset[str], _Cut]) -> dict[str, Any]:
    """``variables`` with ``object``/``oldObject``/``user`` cut to what the expressions read
    (converting the whole spec costs ~140 µs; a few fields, a few µs)."""
    used, cut = plan
    out = {k: v for k, v in variables.items() if k in used}
    for var in CUT_VARIABLES:
        value = out.get(var)
        if value is None or not isinstance(value, Mapping):
            continue
        fields = cut.get(var)
        if fields is None:
            out[var] = {k: value[k] for k in value}
            continue
        slim: dict[str, Any] = {}
        for k, names in fields.items():
            if k not in value:
                continue
            v = value[k]
            if names is not None and type(v) is dict and names <= v.keys():
                v = {n: v[n] for n in names}
            slim[k] = v
        out[var] = slim
    return out


def _too_costly(largest: int, exponent: int) -> str | None:
    if largest**exponent <= MAX_STEPS:
        return None
    return (
        f"too costly for this request: its comprehensions over up to {largest} items or "
        f"characters could take ~{largest}^{exponent} steps, over {MAX_STEPS:,} (a smaller "
        "spec, or a flatter policy)"
    )


def _largest(value: Any) -> int:
    """The longest list, map or string anywhere in ``value`` (at least 1). Exact type checks
    first: this runs on every request a comprehension policy sees."""
    best = 1
    todo = [value]
    while todo:
        v = todo.pop()
        t = type(v)
        if t is str:
            if len(v) > best:
                best = len(v)
            continue
        if t is dict or (t is not list and t is not tuple and isinstance(v, Mapping)):
            if len(v) > best:
                best = len(v)
            for k, x in v.items():
                if type(k) is str and len(k) > best:
                    best = len(k)
                if type(x) in _CONTAINERS:
                    todo.append(x)
        elif t is list or t is tuple:
            if len(v) > best:
                best = len(v)
            for x in v:
                if type(x) in _CONTAINERS:
                    todo.append(x)
    return best


_CONTAINERS = frozenset({str, dict, list, tuple})
