import pytest

from cloudless.model.resources import Resources, parse_cpu, parse_rate, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512Mi", 512 * 2**20),  # 512 * 1,048,576 = 536,870,912
        ("1G", 10**9),
        ("1.5GiB", int(1.5 * 2**30)),  # 1,610,612,736
        (1024, 1024),
        ("10", 10),
        ("64kb", 64_000),
    ],
)
def test_parse_size(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["12XB", "", "-1", "abc", True, None, [1], -5])
def test_parse_size_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


def test_size_error_names_value() -> None:
    with pytest.raises(ValueError, match='"12XB" is not a size'):
        parse_size("12XB")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("500m", 500), ("2", 2000), (0.25, 250), ("1.5", 1500), (1, 1000)],
)
def test_parse_cpu(text: object, expected: int) -> None:
    assert parse_cpu(text) == expected


@pytest.mark.parametrize("bad", ["lots", "5x", True, None, "-1"])
def test_parse_cpu_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_cpu(bad)


def test_parse_rate() -> None:
    assert parse_rate("100Mbps") == 100_000_000
    assert parse_rate("1G") == 10**9


def test_arithmetic_and_fit() -> None:
    a = Resources(500, 100, 10, 0)
    b = Resources(250, 50, 5, 0)
    assert a + b == Resources(750, 150, 15, 0)
    assert a - b == Resources(250, 50, 5, 0)
    assert b.scale(2) == Resources(500, 100, 10, 0)
    assert b.fits(a)
    assert not a.fits(b)
    assert a.shortfall(b) == ["cpu", "memory", "disk"]
    assert Resources(0, 0, 0, 1).shortfall(Resources()) == ["bandwidth"]
    assert Resources.from_dict(a.to_dict()) == a
