"""``ports`` entries that publish a container port on the device: ``{port: N, publish: M}``
beside plain numbers; bad input refused with the field named, nothing published half-way."""

from __future__ import annotations

from typing import Any

import pytest

from cloudless.lib.errors import ValidationError
from cloudless.model.workload import PublishedPort, parse_workload
from cloudless.model.workload_codec import workload_to_dict

BASE: dict[str, Any] = {"name": "w", "image": "busybox"}

GOOD = [
    # (ports, container ports, published)
    ([80], (80,), ()),  # a plain number publishes nothing
    ([{"port": 8080, "publish": 18080}], (8080,), (PublishedPort(8080, 18080),)),
    ([{"port": 8080}], (8080,), ()),  # the mapping form without publish: a container port
    (
        [53, {"port": 8080, "publish": 80}],  # 80 on the device -> 8080 in the container
        (53, 8080),
        (PublishedPort(8080, 80),),
    ),
]


@pytest.mark.parametrize(("ports", "want_ports", "want_published"), GOOD)
def test_accepted(
    ports: list[Any], want_ports: tuple[int, ...], want_published: tuple[PublishedPort, ...]
) -> None:
    s = parse_workload({**BASE, "ports": ports})
    assert (s.ports, s.published) == (want_ports, want_published)
    assert parse_workload(workload_to_dict(s)) == s  # the stored form reads back the same


BAD = [
    # (ports, the problem reported)
    ([{"port": 8080, "publish": 70000}], "spec.ports[0].publish: 70000 is out of range [1, 65535]"),
    ([{"port": 8080, "publish": 0}], "spec.ports[0].publish: 0 is out of range [1, 65535]"),
    ([{"port": 0, "publish": 18080}], "spec.ports[0].port: 0 is out of range [1, 65535]"),
    ([{"publish": 18080}], "spec.ports[0].port: is required"),
    ([{"port": 8080, "publish": "18080"}], "spec.ports[0].publish: '18080' is not a whole number"),
    ([{"port": 8080, "host": 1}], "spec.ports[0].host: unknown field (known: port, publish)"),
    (
        [{"port": 80, "publish": 18080}, {"port": 81, "publish": 18080}],
        "spec.ports[1].publish: device port 18080 is already published by spec.ports[0]",
    ),
]


@pytest.mark.parametrize(("ports", "problem"), BAD)
def test_refused_by_field(ports: list[Any], problem: str) -> None:
    with pytest.raises(ValidationError) as ei:
        parse_workload({**BASE, "ports": ports})
    assert any(p.startswith(problem) for p in ei.value.problems), ei.value.problems
