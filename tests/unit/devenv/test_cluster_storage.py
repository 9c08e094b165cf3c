"""``NetnsCluster(storage=...)``: which store flags each agent gets (no namespaces made: the
hosts are described, not created). A device behind NAT advertises its router's address, on
which the router forwards the two store ports; replication is 3, or fewer devices' count."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudless.devenv.cluster import NetnsCluster
from cloudless.devenv.netns import Host


def cluster(tmp_path: Path, agents: int, storage: str = "48Mi") -> NetnsCluster:
    c = NetnsCluster(tmp_path, agents=agents, subnet="10.213.250.0/24", nat_agents=1,
                     storage=storage, storage_grace=30)  # fmt: skip
    for i in range(agents):
        if i == agents - 1:  # behind NAT: no veth on the bridge, a router r<i+1> in front
            c.lab.hosts[f"r{i + 1}"] = Host(f"r{i + 1}", "x-r", f"10.213.250.{20 + i}", "v", "")
            c.agent_hosts.append(Host(f"a{i + 1}", "x-a", f"172.31.{i}.2", "", ""))
        else:
            c.agent_hosts.append(Host(f"a{i + 1}", "x-a", f"10.213.250.{10 + i}", "v", ""))
    return c


def flags(args: list[str]) -> dict[str, str]:
    return dict(zip(args[::2], args[1::2], strict=True))


@pytest.mark.parametrize(
    "agents,replication",
    [(3, "3"), (2, "2"), (5, "3")],  # R = min(3, devices)
)
def test_store_flags(tmp_path: Path, agents: int, replication: str) -> None:
    c = cluster(tmp_path, agents)
    last = agents - 1
    for i in range(agents):
        f = flags(c._storage_args(i))
        assert f["--storage"] == "48Mi" and f["--storage-replication"] == replication
        assert (f["--storage-listen"], f["--s3-listen"]) == ("0.0.0.0:3901", "0.0.0.0:3900")
        assert f["--storage-grace"] == "30"
        if i == last:  # the router's address, which forwards 3900 and 3901 to the device
            assert f["--storage-advertise"] == f"10.213.250.{20 + i}"
            assert c.s3_endpoint(i) == f"http://10.213.250.{20 + i}:3900"
        else:
            assert "--storage-advertise" not in f
            assert c.s3_endpoint(i) == f"http://10.213.250.{10 + i}:3900"


def test_no_store_without_storage(tmp_path: Path) -> None:
    assert cluster(tmp_path, 3, storage="")._storage_args(0) == []
