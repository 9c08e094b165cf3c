"""A VIP with several endpoints, with real traffic: ``random`` spreads connections over every
endpoint, ``source-hash`` keeps one client on one endpoint, and a change sent alone
(``render_delta``) moves the traffic at once. One namespace: three HTTP backends (busybox httpd
on 10.42.1.2-4 on a veth, each answering with its own address) and the device's table; the
client is a process of the device (the output hook)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from cloudless.network.nft import render, render_delta
from cloudless.network.nft_apply import NftApplier
from cloudless.network.testing import Namespaces
from tests.unit.network.builders import CTX, svc

pytestmark = [pytest.mark.netns, pytest.mark.integration]

BACKENDS = ("10.42.1.2", "10.42.1.3", "10.42.1.4")
VIP = "10.43.0.7"


@pytest.fixture
def device(tmp_path: Path) -> Iterator[tuple[Namespaces, str]]:
    nss = Namespaces("v", base="cl14-")
    try:
        ns = nss.create("dev")
        nss.sh(
            ns, "ip link add d0 type veth peer name d1 && ip link set d0 up && ip link set d1 up"
        )
        for ip in BACKENDS:
            nss.sh(ns, f"ip addr add {ip}/32 dev d0")
            site = tmp_path / ip
            site.mkdir()
            (site / "index.html").write_text(ip + "\n")
            nss.popen(ns, ["busybox", "httpd", "-f", "-p", f"{ip}:80", "-h", str(site)])
        nss.sh(ns, "ip route add 10.43.0.0/16 dev d0")
        for ip in BACKENDS:  # each backend answers before the VIP is asked
            for _ in range(50):
                if nss.sh(ns, f"timeout 1 busybox wget -qO- http://{ip}/", check=False):
                    break
                time.sleep(0.1)
        yield nss, ns
    finally:
        nss.close()


def answers(nss: Namespaces, ns: str, n: int) -> Counter[str]:
    script = f"for i in $(seq {n}); do timeout 2 busybox wget -qO- http://{VIP}/; done"
    return Counter(nss.sh(ns, script, check=False).split())


async def test_random_spreads_source_hash_sticks_and_a_delta_moves_traffic(
    device: tuple[Namespaces, str],
) -> None:
    nss, ns = device
    table = NftApplier(host_argv=("ip", "netns", "exec", ns))
    spread = svc("web", VIP, *BACKENDS)
    await table.apply(render(CTX, [spread]))
    got = await asyncio.to_thread(answers, nss, ns, 45)
    # 45 connections over 3 endpoints at random: each gets some (P(one gets none) ~ 3e-8)
    assert sorted(got) == list(BACKENDS) and sum(got.values()) == 45, got

    sticky = replace(spread, spec=replace(spread.spec, balance="source-hash"))
    await table.apply(render_delta(CTX, [spread], [sticky]))
    got = await asyncio.to_thread(answers, nss, ns, 10)
    assert len(got) == 1 and sum(got.values()) == 10, got  # one client, one endpoint

    only = svc("web", VIP, BACKENDS[2])
    await table.apply(render_delta(CTX, [sticky], [only]))
    got = await asyncio.to_thread(answers, nss, ns, 10)
    assert got == Counter({BACKENDS[2]: 10}), got
