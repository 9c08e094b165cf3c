"""``cloudless get`` and ``cloudless describe``: reading cluster state."""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import typer
from rich.table import Table
from rich.text import Text

from cloudless.cli import fmt
from cloudless.cli.client import Client
from cloudless.cli.output import Format, out, print_document, print_table, table
from cloudless.cli.session import ConfigOpt, OutputOpt, connect, find_node, node_names, now

get_app = typer.Typer(no_args_is_help=True, help="List nodes, workloads, replicas or volumes.")
describe_app = typer.Typer(no_args_is_help=True, help="Show one node or workload in detail.")


# ---- get ----------------------------------------------------------------------------------


@get_app.command("nodes")
def get_nodes(
    name: Annotated[str | None, typer.Argument(help="A node id or name.")] = None,
    config: ConfigOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Nodes: state, place, architecture, CPU and memory in use, last heartbeat."""
    client = connect(config)
    nodes = client.nodes()
    if name:
        nodes = [find_node(nodes, name)]
    if output is not Format.TABLE:
        print_document(nodes[0] if name else {"nodes": nodes}, output)
        return
    t = now()
    print_table(fmt.NODE_HEADERS, [fmt.node_row(n, t) for n in nodes], what="nodes")


@get_app.command("workloads")
def get_workloads(
    name: Annotated[str | None, typer.Argument(help="A workload name.")] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Only this namespace's.")
    ] = None,
    config: ConfigOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Workloads: replicas running/wanted, spec version, what could not be placed and why."""
    client = connect(config)
    if name:
        wls = [client.workload(name)]
    else:
        path = "/v1/workloads" + (f"?namespace={quote(namespace)}" if namespace else "")
        wls = list(client.call("GET", path)["workloads"])
    if output is not Format.TABLE:
        print_document(wls[0] if name else {"workloads": wls}, output)
        return
    t = now()
    print_table(fmt.WORKLOAD_HEADERS, [fmt.workload_row(w, t) for w in wls], what="workloads")


@get_app.command("replicas")
def get_replicas(
    name: Annotated[str | None, typer.Argument(help="A replica id.")] = None,
    workload: Annotated[str | None, typer.Option("--workload", "-w", help="Only of it.")] = None,
    node: Annotated[str | None, typer.Option("--node", "-n", help="Only on it (id/name).")] = None,
    config: ConfigOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Replicas: where each runs, desired and observed state, restarts, the latest reason."""
    client = connect(config)
    nodes = client.nodes()
    query = []
    if workload:
        query.append(f"workload={workload}")
    if node:
        query.append(f"node={find_node(nodes, node)['id']}")
    path = "/v1/replicas" + ("?" + "&".join(query) if query else "")
    reps = list(client.call("GET", path)["replicas"])
    if name:
        reps = [r for r in reps if r["id"] == name or str(r["id"]).startswith(name)]
        if not reps:
            from cloudless.lib.errors import NotFound

            raise NotFound(f"replica {name!r} not found: list them with `cloudless get replicas`")
    if output is not Format.TABLE:
        print_document({"replicas": reps}, output)
        return
    t, names = now(), node_names(nodes)
    print_table(fmt.REPLICA_HEADERS, [fmt.replica_row(r, t, names) for r in reps], what="replicas")


@get_app.command("services")
def get_services(
    config: ConfigOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Services: virtual IP, ports, endpoints ready/total (workloads with ports)."""
    from cloudless.network.state import SERVICE_HEADERS, service_row

    svcs = list(connect(config).call("GET", "/v1/services")["services"])
    if output is not Format.TABLE:
        print_document({"services": svcs}, output)
        return
    print_table(SERVICE_HEADERS, [service_row(s) for s in svcs], what="services")


@get_app.command("volumes")
def get_volumes(
    workload: Annotated[str | None, typer.Option("--workload", "-w", help="Only of it.")] = None,
    config: ConfigOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Persistent volumes: one per replica and volume name, with the node that holds it."""
    client = connect(config)
    path = "/v1/volumes" + (f"?workload={workload}" if workload else "")
    vols = list(client.call("GET", path)["volumes"])
    if output is not Format.TABLE:
        print_document({"volumes": vols}, output)
        return
    names = node_names(client.nodes())
    print_table(fmt.VOLUME_HEADERS, [fmt.volume_row(v, names) for v in vols], what="volumes")


# ---- describe -----------------------------------------------------------------------------


def _fields(pairs: list[tuple[str, str]]) -> Table:
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold")
    t.add_column()
    for k, v in pairs:
        t.add_row(Text(k), Text(v))  # literal text: never parsed as markup
    return t


def recent_events(client: Client, *, node: str = "", workload: str = "", n: int = 10) -> list[Any]:
    """The last ``n`` events that concern the node (by id) or else the workload."""
    obj = f"node/{node}" if node else f"workload/{workload}"
    path = "/v1/events?" + urlencode({"object": obj, "tail": n})
    return [json.loads(line) for line in client.stream(path) if line.strip()]


def _events_table(events: list[Any]) -> None:
    out.print()
    if not events:
        out.print("Events: none recorded")
        return
    rows = [
        [fmt.clock_time(float(e.get("at", 0))), str(e.get("kind", "")), e["message"]]
        for e in events
    ]
    out.print(table(["TIME", "KIND", "MESSAGE"], rows, title="Events"))


def _resources(r: dict[str, Any]) -> str:
    return (
        f"cpu {fmt.human_cpu(int(r.get('cpu_millis', 0)))}, "
        f"memory {fmt.human_size(int(r.get('memory_bytes', 0)))}, "
        f"disk {fmt.human_size(int(r.get('disk_bytes', 0)))}"
    )


def _overlay(o: dict[str, Any] | None) -> None:
    """The node's overlay as the coordinators observe it (clusters with networking)."""
    if not o:
        return
    reach = o.get("reachable")
    reach_text = {True: "yes", False: "NO", None: "not known"}[reach]
    direct = [p for p in o.get("paths") or [] if p.get("path") == "direct"]
    relayed = [p for p in o.get("paths") or [] if p.get("path") != "direct"]
    out.print()
    out.print(
        _fields(
            [
                ("Overlay IP", str(o.get("overlay_ip") or "-")),
                ("NAT", f"{o.get('nat')}: {o.get('nat_reason', '')}"),
                ("Reachable", f"{reach_text}: {o.get('reach_reason', '')}"),
                (
                    "Direct paths",
                    ", ".join(f"{p['peer_name']} ({p['via']})" for p in direct) or "none",
                ),
                (
                    "Relayed paths",
                    ", ".join(f"{p['peer_name']} via {p['via']}" for p in relayed) or "none",
                ),
            ]
        )
    )
    if reach is False:
        out.print(
            "This node is left out of service endpoints: other nodes cannot reach its "
            "replicas over the overlay, not even through a relay."
        )


@describe_app.command("node")
def describe_node(
    name: Annotated[str, typer.Argument(help="A node id or name.")],
    config: ConfigOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """A node: facts, capacity and usage, conditions, its replicas and recent events."""
    client = connect(config)
    nodes = client.nodes()
    node_id = str(find_node(nodes, name)["id"])
    n = client.call("GET", f"/v1/nodes/{node_id}")
    events = recent_events(client, node=node_id)
    if output is not Format.TABLE:
        print_document({**n, "events": events}, output)
        return
    t = now()
    conditions = [k for k, v in (n.get("conditions") or {}).items() if v]
    labels = ", ".join(f"{k}={v}" for k, v in sorted((n.get("labels") or {}).items()))
    out.print(
        _fields(
            [
                ("Node", f"{n['name']} ({n['id']})"),
                ("State", str(n.get("state", ""))),
                ("Zone / region", f"{n.get('zone') or '-'} / {n.get('region') or '-'}"),
                (
                    "Platform",
                    f"{n.get('os', '')}/{n.get('arch', '')} ({n.get('device_class', '')})",
                ),
                ("Address", str(n.get("address") or "-")),
                ("Labels", labels or "-"),
                ("Capacity", _resources(n.get("capacity", {}))),
                ("Allocatable", _resources(n.get("allocatable", {}))),
                ("Usage", _resources(n.get("usage", {}))),
                ("Conditions", ", ".join(conditions) or "none"),
                ("Reliability", f"{float(n.get('reliability', 0)):.2f}"),
                ("Enrolled", f"{fmt.age(t, n.get('enrolled_at'))} ago"),
                ("Last heartbeat", f"{fmt.age(t, n.get('last_heartbeat'))} ago"),
            ]
        )
    )
    _availability(n.get("availability"), t)
    _overlay(n.get("overlay"))
    reps = n.get("replicas") or []
    names = node_names(nodes)
    out.print()
    if reps:
        rows = [fmt.replica_row(r, t, names) for r in reps]
        out.print(table(fmt.REPLICA_HEADERS, rows, title="Replicas"))
    else:
        out.print("Replicas: none")
    _events_table(events)


_DAYS = ("Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed")  # bin 0: Unix time 0, a Thursday


def _availability(a: dict[str, Any] | None, t: float) -> None:
    """The learned availability model, reserved hours and a departure under way."""
    if not a:
        return
    rows: list[tuple[str, str]] = []
    m = a.get("model")
    if m:
        session = m.get("mean_session_h")
        rows += [
            (
                "Availability",
                f"now {m['p_online_now']:.2f}, next 24 h {m['availability_next_24h']:.2f}, "
                f"week {m['availability_week']:.2f}",
            ),
            (
                "Sessions",
                f"mean {'-' if session is None else f'{session:.1f} h'}, "
                f"P(up 1 h more) {m['p_stay_up_next_1h']:.2f}, "
                f"{m['sessions']} ended in {m['history_h']:.0f} h of history",
            ),
            (
                "Next hours (UTC)",
                " ".join(
                    f"{_DAYS[h['hour_of_week'] // 24]} {h['hour_of_week'] % 24:02d}h "
                    f"{h['p_online']:.2f}"
                    for h in m.get("next_hours", [])[:12]
                ),
            ),
        ]
    else:
        rows.append(("Availability", "no history yet"))
    rows.append(("Reserved hours", ", ".join(a.get("reserved_hours") or []) or "none"))
    d = a.get("departure")
    if d:
        left = float(d["deadline"]) - t
        when = f"deadline in {left:.0f}s" if left > 0 else "deadline passed"
        rows.append(("Departure", f"{d['kind']} ({d['reason']}), {when}"))
    out.print()
    out.print(_fields(rows))


@describe_app.command("workload")
def describe_workload(
    name: Annotated[str, typer.Argument(help="A workload name.")],
    config: ConfigOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """A workload: status, spec, its replicas and recent events."""
    client = connect(config)
    w = client.workload(name)
    events = recent_events(client, workload=name)
    if output is not Format.TABLE:
        print_document({**w, "events": events}, output)
        return
    t = now()
    unplaced = int(w.get("unplaced", 0))
    out.print(
        _fields(
            [
                ("Workload", str(w["name"]) + ("  (deleting)" if w.get("deleted") else "")),
                ("Version", str(w.get("version", ""))),
                (
                    "Replicas",
                    f"{w.get('replicas_running', 0)} running / {w['replicas_wanted']} wanted",
                ),
                ("Unplaced", f"{unplaced}: {w.get('unplaced_reason')}" if unplaced else "0"),
                ("Created", f"{fmt.age(t, w.get('created_at'))} ago"),
                ("Updated", f"{fmt.age(t, w.get('updated_at'))} ago"),
            ]
        )
    )
    out.print()
    out.print("Spec", style="bold")
    out.print(fmt_indent(print_spec(w.get("spec", {}))))
    reps = w.get("replicas") or []
    if reps:
        names = node_names(client.nodes())
        rows = [fmt.replica_row(r, t, names) for r in reps]
        out.print(table(fmt.REPLICA_HEADERS, rows, title="Replicas"))
    else:
        out.print("Replicas: none")
    _events_table(events)


def print_spec(spec: dict[str, Any]) -> str:
    from cloudless.cli.output import document

    return document(fmt.compact(spec), Format.YAML)


def fmt_indent(text: str, pad: str = "  ") -> str:
    return "\n".join(pad + line for line in text.splitlines())


def register(app: typer.Typer) -> None:
    # kubectl accepts singular names too: `get node`, `get workload`.
    get_app.command("node", hidden=True)(get_nodes)
    get_app.command("workload", hidden=True)(get_workloads)
    get_app.command("replica", hidden=True)(get_replicas)
    app.add_typer(get_app, name="get", rich_help_panel="Cluster state")
    app.add_typer(describe_app, name="describe", rich_help_panel="Cluster state")
