"""``cloudless top nodes|replicas``: live usage, like ``kubectl top`` and ``docker stats``.

Rows come from the leader (``GET /v1/top/*``); sorting and formatting are here (pure
``replica_table`` / ``node_table``). ``-`` means not measured: a replica with no sample yet,
or network for a replica sharing its node's network namespace.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any
from urllib.parse import urlencode

import typer

from cloudless.cli import fmt
from cloudless.cli.output import Format, print_document, print_table
from cloudless.cli.session import ConfigOpt, OutputOpt, connect

top_app = typer.Typer(no_args_is_help=True, help="Live CPU, memory, disk and network usage.")

REPLICA_HEADERS = ["REPLICA", "NODE", "CPU", "MEMORY", "MEM %", "DISK R/W", "NET RX/TX", "RESTARTS"]
NODE_HEADERS = ["NODE", "STATE", "CPU", "CPU %", "MEMORY", "MEM %", "REPLICAS", "REPLICAS CPU/MEM"]


class ReplicaSort(enum.StrEnum):
    CPU = "cpu"
    MEMORY = "memory"
    DISK = "disk"
    NET = "net"
    RESTARTS = "restarts"
    NAME = "name"


class NodeSort(enum.StrEnum):
    CPU = "cpu"
    MEMORY = "memory"
    REPLICAS = "replicas"
    NAME = "name"


def _rate(bps: int) -> str:
    return "-" if bps < 0 else f"{fmt.human_size(bps)}/s"


def _replica_key(sort: ReplicaSort) -> Any:
    def key(r: dict[str, Any]) -> Any:
        if sort is ReplicaSort.NAME:
            return r["id"]
        if not r.get("measured"):
            return -1
        if sort is ReplicaSort.CPU:
            return r["cpu_millis"]
        if sort is ReplicaSort.MEMORY:
            return r["memory_bytes"]
        if sort is ReplicaSort.DISK:
            return r["disk_read_bps"] + r["disk_write_bps"]
        if sort is ReplicaSort.NET:
            return max(0, r["net_rx_bps"]) + max(0, r["net_tx_bps"])
        return r["restarts"]

    return key


def replica_table(
    rows: list[dict[str, Any]], sort: ReplicaSort, names: dict[str, str]
) -> list[list[str]]:
    """Busiest first (names in order). Pure."""
    ordered = sorted(rows, key=_replica_key(sort), reverse=sort is not ReplicaSort.NAME)
    out = []
    for r in ordered:
        node = names.get(r["node_id"], r["node_id"])
        if not r.get("measured"):
            out.append([r["id"], node, "-", "-", "-", "-", "-", str(r["restarts"])])
            continue
        limit = r["memory_limit_bytes"]
        out.append(
            [
                r["id"],
                node,
                fmt.human_cpu(r["cpu_millis"]),
                fmt.human_size(r["memory_bytes"])
                + (f" / {fmt.human_size(limit)}" if limit else ""),
                fmt.percent(r["memory_bytes"], limit) if limit else "-",
                f"{_rate(r['disk_read_bps'])} / {_rate(r['disk_write_bps'])}",
                "-"
                if r["net_rx_bps"] < 0
                else f"{_rate(r['net_rx_bps'])} / {_rate(r['net_tx_bps'])}",
                str(r["restarts"]),
            ]
        )
    return out


def node_table(rows: list[dict[str, Any]], sort: NodeSort) -> list[list[str]]:
    """Busiest first (names in order). Pure."""
    keys = {
        NodeSort.CPU: lambda n: n["cpu_millis"],
        NodeSort.MEMORY: lambda n: n["memory_bytes"],
        NodeSort.REPLICAS: lambda n: n["replicas"],
        NodeSort.NAME: lambda n: n["name"] or n["id"],
    }
    ordered = sorted(rows, key=keys[sort], reverse=sort is not NodeSort.NAME)
    return [
        [
            n["name"] or n["id"],
            n["state"],
            fmt.human_cpu(n["cpu_millis"]),
            fmt.percent(n["cpu_millis"], n["cpu_allocatable_millis"]),
            fmt.human_size(n["memory_bytes"]),
            fmt.percent(n["memory_bytes"], n["memory_allocatable_bytes"]),
            str(n["replicas"]),
            f"{fmt.human_cpu(n['replicas_cpu_millis'])} / "
            f"{fmt.human_size(n['replicas_memory_bytes'])}",
        ]
        for n in ordered
    ]


@top_app.command("replicas")
def top_replicas(
    workload: Annotated[
        str | None, typer.Option("--workload", "-w", help="Only this workload's replicas.")
    ] = None,
    node: Annotated[str | None, typer.Option("--node", help="Only replicas on this node.")] = None,
    sort: Annotated[ReplicaSort, typer.Option("--sort", help="Busiest first by this.")] = (
        ReplicaSort.CPU
    ),
    config: ConfigOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Running replicas' CPU, memory (and limit), disk and network rates, and restarts."""
    c = connect(config)
    query = urlencode({k: v for k, v in (("workload", workload), ("node", node)) if v})
    rows = c.call("GET", "/v1/top/replicas" + (f"?{query}" if query else ""))["replicas"]
    if output is not Format.TABLE:
        print_document({"replicas": rows}, output)
        return
    names = {n["id"]: n["name"] for n in c.call("GET", "/v1/top/nodes")["nodes"]}
    print_table(REPLICA_HEADERS, replica_table(rows, sort, names), what="running replicas")


@top_app.command("nodes")
def top_nodes(
    sort: Annotated[NodeSort, typer.Option("--sort", help="Busiest first by this.")] = (
        NodeSort.CPU
    ),
    config: ConfigOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Nodes' measured CPU and memory against what they offer, and their replicas' share."""
    rows = connect(config).call("GET", "/v1/top/nodes")["nodes"]
    if output is not Format.TABLE:
        print_document({"nodes": rows}, output)
        return
    print_table(NODE_HEADERS, node_table(rows, sort), what="nodes")


def register(app: typer.Typer) -> None:
    app.add_typer(top_app, name="top", rich_help_panel="Workloads")
