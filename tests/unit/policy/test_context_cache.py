"""The request contexts cache (``expressions.ContextCache``): a context is reused only for
values that convert to the same CEL values, it is bounded, and ``admit`` gives the same
answers with it as without it, request after request."""

from __future__ import annotations

from typing import Any

import pytest

from cloudless.policy.admission import admit, parse_policy, request_variables
from cloudless.policy.expressions import ContextCache, compile_expression, evaluate

from .test_admission import ADMIN, CASES, DEV, spec


def test_equal_values_share_a_context() -> None:
    cache = ContextCache()
    a = cache.get({"object": {"replicas": 2, "labels": {"team": "a"}}})
    b = cache.get({"object": {"replicas": 2, "labels": {"team": "a"}}})
    assert a is b and (cache.hits, cache.misses) == (1, 1)


# values Python calls equal but CEL does not: each gets its own context
@pytest.mark.parametrize(
    ("x", "y", "expr"),
    [
        (1, True, "object.v == 1"),  # int vs bool: True == 1 in Python
        (1, 1.0, "object.v / 2 == 0"),  # int vs double: 1 / 2 is 0, 1.0 / 2 is 0.5
        (1, "1", "object.v == 1"),  # int vs string
        ({1: "a"}, {"1": "a"}, '"1" in object.v'),  # map keys: int vs string
    ],
)
def test_values_python_calls_equal_do_not_share(x: Any, y: Any, expr: str) -> None:
    cache = ContextCache()
    e = compile_expression(expr)
    first = evaluate(e, cache.get({"object": {"v": x}}))
    second = evaluate(e, cache.get({"object": {"v": y}}))
    assert cache.misses == 2
    assert (first is True) != (second is True), (first, second)  # one true, one not


def test_bounded_least_recently_used() -> None:
    cache = ContextCache(size=2)
    a = cache.get({"object": {"v": 1}})
    cache.get({"object": {"v": 2}})
    assert cache.get({"object": {"v": 1}}) is a  # a is now the most recent
    cache.get({"object": {"v": 3}})  # evicts 2
    assert cache.get({"object": {"v": 1}}) is a
    misses = cache.misses
    cache.get({"object": {"v": 2}})
    assert cache.misses == misses + 1


def test_admit_answers_alike_with_and_without_the_cache() -> None:
    cache = ContextCache(size=4)  # small: hits, misses and evictions all happen
    pols = [
        parse_policy({"name": f"p{i}", "validations": [{"expression": expr}]})
        for i, (expr, *_rest) in enumerate(CASES)
    ]
    requests = [request_variables(obj, user) for _, obj, user, _ in CASES]
    requests += [request_variables(spec(replicas=n), u) for n in (1, 2, 3) for u in (DEV, ADMIN)]
    for _ in range(3):
        for r in requests:
            for p in pols:
                with_cache = admit([p], r, contexts=cache, timer=lambda: 0.0)
                without = admit([p], r, contexts=None, timer=lambda: 0.0)
                assert with_cache.denials == without.denials, (p.name, r)
    assert cache.hits and cache.misses


def test_requests_that_stop_repeating_bypass_the_cache_and_repeats_resume_it() -> None:
    cache = ContextCache(bypass_after=4, probe_every=3)
    for i in range(4):  # 4 misses in a row: bypass from now on
        cache.get({"object": {"v": i}})
    assert cache.misses == 4
    for i in range(4, 10):  # calls 5..10: only calls 6 and 9 look (every 3rd)
        cache.get({"object": {"v": i}})
    assert (cache.misses, cache.bypassed) == (6, 4)
    # the same request again and again (calls 11..16): probe 12 misses and keeps it, probe
    # 15 hits, and caching resumes (16 looks and hits)
    for _ in range(6):
        cache.get({"object": {"v": 9}})
    assert cache.hits == 2
    hits = cache.hits
    cache.get({"object": {"v": 9}})
    assert cache.hits == hits + 1  # looked up every time again
