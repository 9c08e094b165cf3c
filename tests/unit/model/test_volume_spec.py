"""``volumes:`` and ``on_node_loss:`` in a workload spec: parsing, round trip, bad input."""

from typing import Any

import pytest

from cloudless.lib.errors import ValidationError
from cloudless.model.volumes import NodeLoss, Volume
from cloudless.model.workload import parse_workload
from cloudless.model.workload_codec import workload_to_dict


def spec(volumes: Any, **kw: Any) -> dict[str, Any]:
    return {"name": "db", "image": "r/db:1", "volumes": volumes, **kw}


def test_parses_and_round_trips() -> None:
    s = parse_workload(
        spec(
            [
                {"name": "data", "mount_path": "/var/lib/db", "size": "1Gi"},
                {"name": "seed", "mount_path": "/seed", "read_only": True},
            ],
            on_node_loss="recreate",
        )
    )
    assert s.volumes == (
        Volume("data", "/var/lib/db", 1 << 30),  # 1Gi = 2**30 bytes
        Volume("seed", "/seed", 0, read_only=True),
    )
    assert s.on_node_loss is NodeLoss.RECREATE
    assert parse_workload(workload_to_dict(s)) == s
    plain = parse_workload({"name": "web", "image": "r/web:1"})
    assert plain.volumes == () and plain.on_node_loss is NodeLoss.WAIT
    assert "volumes" not in workload_to_dict(plain)


BAD: list[tuple[Any, dict[str, Any], str]] = [
    ("data", {}, "spec.volumes: expected a list"),
    (["data"], {}, "spec.volumes[0]: expected a mapping with name and mount_path"),
    ([{"name": "Data", "mount_path": "/d"}], {}, "spec.volumes[0].name: 'Data' must be"),
    ([{"name": "data"}], {}, "spec.volumes[0].mount_path: is required"),
    ([{"name": "d", "mount_path": "data"}], {}, "mount_path: 'data' must be an absolute path"),
    # outside the container root / not normal
    ([{"name": "d", "mount_path": "/data/../../etc"}], {}, "leaves the container's root"),
    ([{"name": "d", "mount_path": "/data/"}], {}, "is not a normal path; write '/data'"),
    ([{"name": "d", "mount_path": "//data"}], {}, "is not a normal path"),
    # over system paths
    ([{"name": "d", "mount_path": "/"}], {}, "'/' is a system path"),
    ([{"name": "d", "mount_path": "/etc"}], {}, "'/etc' is a system path"),
    ([{"name": "d", "mount_path": "/usr"}], {}, "'/usr' is a system path"),
    ([{"name": "d", "mount_path": "/proc/sys"}], {}, "is under /proc, which belongs to the kernel"),
    ([{"name": "d", "mount_path": "/dev/shm"}], {}, "is under /dev"),
    ([{"name": "d", "mount_path": "/a:b"}], {}, "contains a character not allowed"),
    ([{"name": "d", "mount_path": "/" + "x" * 300}], {}, "301 characters, at most 255"),
    ([{"name": "d", "mount_path": "/d", "size": "lots"}], {}, "spec.volumes[0].size:"),
    ([{"name": "d", "mount_path": "/d", "size": "100Ti"}], {}, "is over the 64Ti limit"),
    ([{"name": "d", "mount_path": "/d", "read_only": "yes"}], {}, "read_only: 'yes' is not"),
    ([{"name": "d", "mount_path": "/d", "owner": 1}], {}, "spec.volumes[0].owner: unknown field"),
    (
        [{"name": "d", "mount_path": "/a"}, {"name": "d", "mount_path": "/b"}],
        {},
        "spec.volumes[1].name: 'd' is already the name of spec.volumes[0]",
    ),
    (
        [{"name": "a", "mount_path": "/d"}, {"name": "b", "mount_path": "/d"}],
        {},
        "spec.volumes[1].mount_path: '/d' is already the mount path of spec.volumes[0]",
    ),
    ([{"name": f"v{i}", "mount_path": f"/v{i}"} for i in range(17)], {}, "17 volumes, at most 16"),
    ([{"name": "d", "mount_path": "/d"}], {"on_node_loss": "panic"}, "'panic' is not one of"),
    (None, {"on_node_loss": "recreate"}, "on_node_loss: applies only to workloads with volumes"),
]


@pytest.mark.parametrize(("volumes", "extra", "problem"), BAD)
def test_bad_input_names_the_field(volumes: Any, extra: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_workload(spec(volumes, **extra))
    assert any(problem in p for p in e.value.problems), e.value.problems
