"""``cloudless.lib.bounded``: every input is plain bounded data or a ``ValidationError`` that
names the path; never another exception, never an expansion of a YAML alias bomb."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudless.lib.bounded import MAX_DEPTH, MAX_VALUES, load_any, load_json, load_yaml
from cloudless.lib.errors import ValidationError

BOMB = "\n".join(
    [
        'a: &a ["x","x","x","x","x","x","x","x","x"]',
        *(
            f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]"
            for p, n in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ]
)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("x: .inf", "spec.x: inf is not a finite number"),
        ("x: -.inf", "spec.x: -inf is not a finite number"),
        ("x: .nan", "spec.x: nan is not a finite number"),
        ("x: [1, {y: .inf}]", "spec.x[1].y: inf is not a finite number"),
        # 2**63 = 9223372036854775808 is one past int64
        ("x: 9223372036854775808", "spec.x: 9223372036854775808 is out of range"),
        ("x: " + "9" * 5000, "spec: is not valid YAML (Exceeds the limit (4300 digits)"),
        ("x: 2024-01-01", "spec.x: a YAML date is not plain data"),
        ("x: !!set {a}", "spec.x: a YAML set is not plain data"),
        ("x: !!python/name:os.system", "spec: is not valid YAML (could not determine"),
        ("? [a, b]\n: 1", "spec: is not valid YAML"),
        ("\x1f", "spec: is not valid YAML"),
        ("a: 1\n---\nb: 2", "spec: is not valid YAML (expected a single document"),
        ("x: &a [*a]", "nested deeper than 32 levels"),
        ("x: " + "[" * 100, "spec: nested deeper than 32 levels"),
        ("[" * 100_000, "spec: is not valid YAML"),  # libyaml's own flow-level limit
        # 9 strings, then 8 levels of 9 aliases each: 9**9 = 387,420,489 once expanded;
        # refused at MAX_VALUES from the events, in about 10,000 / 9 alias steps
        (BOMB, f"spec: holds more than {MAX_VALUES:,} values once YAML aliases are expanded"),
    ],
)
def test_yaml_refusals_name_the_path(text: str, problem: str) -> None:
    with pytest.raises(ValidationError) as ei:
        load_yaml(text)
    assert problem in ei.value.message
    assert len(ei.value.message) < 400


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"x": Infinity}', "body.x: inf is not a finite number"),
        ('{"x": [-Infinity]}', "body.x[0]: -inf is not a finite number"),
        ('{"x": NaN}', "body.x: nan is not a finite number"),
        ('{"x": {"y": 1e999}}', "body.x.y: inf is not a finite number"),
        ('{"x": ' + "9" * 5000 + "}", "body: is not valid JSON (Exceeds the limit (4300 digits)"),
        # 2**63 = 9223372036854775808 is one past int64
        ('{"x": 9223372036854775808}', "body.x: 9223372036854775808 is out of range"),
        ('{"x": 1e300}', "body.x: 1e+300 is out of range"),
        ("[" * 100_000 + "]" * 100_000, "body: nested deeper than 32 levels"),
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "nested deeper than 32 levels"),
        (b"\xff", "body: is not UTF-8 text"),
        ("{", "body: is not valid JSON"),
    ],
)
def test_json_refusals_name_the_path(text: str | bytes, problem: str) -> None:
    with pytest.raises(ValidationError) as ei:
        load_json(text)
    assert problem in ei.value.message


def test_within_bounds_passes() -> None:
    deep = "[" * MAX_DEPTH + "]" * MAX_DEPTH  # exactly MAX_DEPTH levels
    assert load_json(deep) is not None
    assert load_any('{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}
    assert load_any("a: &x [1, 2]\nb: *x\n") == {"a": [1, 2], "b": [1, 2]}


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120) | st.binary(max_size=120))
def test_any_text_is_data_or_a_validation_error(text: str | bytes) -> None:
    try:
        load_any(text)
    except ValidationError as e:
        assert e.message.startswith("spec")
