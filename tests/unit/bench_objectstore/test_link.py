"""The shaped-link arithmetic of ``bench.objectstore.cluster --link``: tc rates and whether
the ideal was network-bound."""

import pytest

from bench.objectstore.cluster import link_bits, link_use


@pytest.mark.parametrize(
    ("rate", "bits"),
    [("1gbit", 1e9), ("500mbit", 5e8), ("2.5gbit", 2.5e9), ("800kbit", 8e5), (" 1GBit ", 1e9)],
)
def test_rates_read_as_tc_reads_them(rate: str, bits: float) -> None:
    assert link_bits(rate) == bits


@pytest.mark.parametrize("bad", ["", "1gb", "fast", "-1mbit", "1tbit", "1 gbit", "gbit"])
def test_other_rates_are_refused_naming_the_forms(bad: str) -> None:
    with pytest.raises(ValueError, match="expected <number>kbit, mbit or gbit"):
        link_bits(bad)


def test_link_use() -> None:
    # 3 MiB cross the link per MiB PUT: 39.7 MiB/s of PUTs fill a gigabit
    full = link_use(39.74, "1gbit")
    assert full == {"rate": "1gbit", "fraction": 1.0, "network_bound": True}
    half = link_use(39.74, "2gbit")
    assert half is not None and half["fraction"] == 0.5 and not half["network_bound"]
    assert link_use(10.0, None) is None
