"""Debian's Prometheus scrapes a live cluster found through the coordinator's HTTP service
discovery: the coordinator over mutual TLS with a user certificate, each agent on its own
``/metrics`` listener. The test asks Prometheus's HTTP API for the series, so what it checks
is what an operator's dashboard would show."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from cloudless.lib.net import free_port

from ..cluster.harness import wait_for

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus missing: apt-get install prometheus"
)

WEB = b"""
name: web
image: busybox:latest
command: [httpd, -f, -p, "8080"]
resources: {cpu: 100m, memory: 16Mi}
replicas: 3
"""


def prometheus_config(api: str, admin: Path) -> dict[str, Any]:
    tls = {
        "ca_file": str(admin / "ca.pem"),
        "cert_file": str(admin / "admin.crt"),
        "key_file": str(admin / "admin.key"),
    }
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "cloudless",
                "tls_config": tls,
                "http_sd_configs": [
                    {"url": f"{api}/v1/sd/prometheus", "refresh_interval": "1s", "tls_config": tls}
                ],
                "relabel_configs": [
                    {"source_labels": ["__meta_cloudless_role"], "target_label": "role"},
                    {"source_labels": ["__meta_cloudless_node"], "target_label": "node"},
                ],
            }
        ],
    }


def start_prometheus(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )


def query(port: int, q: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.load(resp)
    except (urllib.error.URLError, OSError):
        return []
    return list(body.get("data", {}).get("result", []))


def value(port: int, q: str) -> float | None:
    res = query(port, q)
    return float(res[0]["value"][1]) if len(res) == 1 else None


async def test_prometheus_scrapes_cluster_through_sd(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    coord, client, _agents, start_agent = cluster
    for i in range(3):
        await start_agent(i, metrics_listen=f"127.0.0.1:{free_port()}")
    await wait_for(lambda: [n["state"] for n in client.nodes()] == ["ready"] * 3, what="3 ready")
    await asyncio.to_thread(client.apply, WEB)

    admin = coord.config.admin_dir
    (tmp_path / "prometheus.yml").write_text(
        json.dumps(prometheus_config(coord.config.api_url, admin))  # YAML is a JSON superset
    )
    port = free_port()
    proc = start_prometheus(tmp_path, port)
    try:
        # Every target found through SD and up: 1 coordinator + 3 agents.
        await wait_for(
            lambda: value(port, 'count(up{job="cloudless"} == 1)') == 4,
            timeout=60,
            what="4 targets up (see prometheus.log)",
        )
        agents_up = query(port, 'up{role="agent"}')
        assert sorted(r["metric"]["node"] for r in agents_up) == ["node0", "node1", "node2"]
        # The spec asks for 3; Prometheus sees 3 running, from the coordinator's gauges.
        await wait_for(
            lambda: value(port, 'cloudless_workload_replicas_running{workload="web"}') == 3,
            timeout=30,
            what="3 running replicas of web in Prometheus",
        )
        assert value(port, 'cloudless_workload_replicas_wanted{workload="web"}') == 3
        assert value(port, 'cloudless_nodes{state="ready"}') == 3
        # The agents agree: 3 running replicas over the fleet, from their own pages.
        await wait_for(
            lambda: value(port, 'sum(cloudless_agent_replicas{state="running"})') == 3,
            timeout=30,
            what="agents report 3 running",
        )
        assert (value(port, "sum(cloudless_agent_container_starts_total)") or 0) >= 3
        # The API's own traffic is counted by route template, never by id.
        routes = {r["metric"]["route"] for r in query(port, "cloudless_api_requests_total")}
        assert "/v1/workloads" in routes and "/v1/sd/prometheus" in routes
        assert not any("node0" in r for r in routes)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_metrics_refuse_a_caller_without_certificate(cluster) -> None:  # type: ignore[no-untyped-def]
    coord, _client, _agents, _start = cluster
    ctx = ssl.create_default_context(cafile=str(coord.config.admin_dir / "ca.pem"))

    def get(path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(coord.config.api_url + path, context=ctx, timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    for path in ("/metrics", "/v1/sd/prometheus"):
        status, body = await asyncio.to_thread(get, path)
        assert status == 401, (path, status)
        assert json.loads(body)["error"]["code"] == "no_certificate"


async def test_plain_metrics_listener(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An agent's plain listener serves only ``/metrics``, in the Prometheus text format."""
    _coord, client, _agents, start_agent = cluster
    port = free_port()
    await start_agent(0, metrics_listen=f"127.0.0.1:{port}")
    await wait_for(lambda: [n["state"] for n in client.nodes()] == ["ready"], what="ready")
    node = (await asyncio.to_thread(client.nodes))[0]
    assert node["metrics_address"] == f"http://127.0.0.1:{port}"

    def get(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, ""

    status, text = await asyncio.to_thread(get, "/metrics")
    assert status == 200
    assert "cloudless_agent_container_starts_total" in text
    assert 'cloudless_certificate_expiry_timestamp_seconds{cert="node"}' in text
    assert (await asyncio.to_thread(get, "/v1/nodes"))[0] == 404
