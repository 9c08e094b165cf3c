"""Shared pieces of the client commands: common options, the API client, name lookups."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from cloudless.cli.client import Client, ClientConfig
from cloudless.cli.output import Format
from cloudless.lib.errors import CloudlessError, NotFound

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="CLOUDLESS_CONFIG",
        help="Client config (JSON written by the first coordinator in <data-dir>/admin/); "
        "default ~/.cloudless/config.json.",
        show_default=False,
    ),
]
OutputOpt = Annotated[
    Format, typer.Option("--output", "-o", help="table, json or yaml.", case_sensitive=False)
]


def connect(config: Path | None) -> Client:
    """A client from ``config`` (or the default path). A missing or unreadable config, or
    missing certificate files, is a CloudlessError that names the file."""
    cfg = ClientConfig.load(config)
    for f in (cfg.ca_file, cfg.cert_file, cfg.key_file):
        if not f.exists():
            raise CloudlessError(f"client config names {f}, which does not exist")
    return Client(cfg)


def now() -> float:
    return time.time()


def node_names(nodes: list[dict[str, Any]]) -> dict[str, str]:
    return {str(n["id"]): str(n.get("name") or n["id"]) for n in nodes}


def find_node(nodes: list[dict[str, Any]], ref: str) -> dict[str, Any]:
    """The node whose id or name is ``ref``, else the one whose id starts with it.

    An ambiguous name or prefix is refused with the candidates; none at all is NotFound.
    """
    exact = [n for n in nodes if n.get("id") == ref]
    if exact:
        return exact[0]
    named = [n for n in nodes if n.get("name") == ref]
    if len(named) == 1:
        return named[0]
    if len(named) > 1:
        ids = ", ".join(sorted(str(n["id"]) for n in named))
        raise CloudlessError(f"{len(named)} nodes are named {ref!r} ({ids}): use the node id")
    prefixed = [n for n in nodes if str(n.get("id", "")).startswith(ref)]
    if len(prefixed) == 1:
        return prefixed[0]
    if len(prefixed) > 1:
        ids = ", ".join(sorted(str(n["id"]) for n in prefixed))
        raise CloudlessError(f"node id prefix {ref!r} is ambiguous ({ids})")
    raise NotFound(f"node {ref!r} not found (by id or name): list nodes with `cloudless get nodes`")


def resolve_node_id(client: Client, ref: str) -> str:
    return str(find_node(client.nodes(), ref)["id"])


def pick_replica(replicas: list[dict[str, Any]], ref: str) -> tuple[str, str]:
    """The replica ``ref`` means, and a note when it was not named exactly.

    In order: a replica id; a workload name (its first running replica by id, else its first
    replica); a unique replica id prefix. Anything else is NotFound, an ambiguous prefix too.
    """
    ids = sorted(str(r["id"]) for r in replicas)
    if ref in ids:
        return ref, ""
    mine = sorted(
        (r for r in replicas if r.get("workload") == ref),
        key=lambda r: (r.get("observed") != "running", str(r["id"])),
    )
    if mine:
        rid = str(mine[0]["id"])
        return rid, f"replica {rid} of workload {ref} ({len(mine)} replicas)"
    matches = [i for i in ids if i.startswith(ref)]
    if len(matches) == 1:
        return matches[0], ""
    if matches:
        shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise NotFound(f"replica prefix {ref!r} is ambiguous: {shown}")
    raise NotFound(
        f"replica {ref!r} not found (by id, workload or id prefix): list them with "
        "`cloudless get replicas`"
    )
