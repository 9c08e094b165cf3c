"""``cloudless ca status``, ``cloudless ca rotate`` and ``cloudless remove coordinator NAME``.

(``cloudless coordinator`` runs the coordinator process, so removing one is spelled like
removing a node: ``cloudless remove coordinator NAME``.)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Annotated

import typer

from cloudless.cli import fmt
from cloudless.cli.actions import remove_app
from cloudless.cli.client import ApiError, Client, ClientConfig
from cloudless.cli.output import Format, note, out, print_document, print_table
from cloudless.cli.session import ConfigOpt, OutputOpt, connect
from cloudless.cli.trust import own_issuer, refresh_trust, renew_self, trust_also
from cloudless.lib.errors import CloudlessError

ca_app = typer.Typer(no_args_is_help=True, help="The cluster's certificate authority.")


@ca_app.command("status")
def status(config: ConfigOpt = None, output: OutputOpt = Format.TABLE) -> None:
    """Trusted roots, the root-rotation phase, and certificate expiries."""
    doc = connect(config).call("GET", "/v1/ca/status")
    if output is not Format.TABLE:
        print_document(doc, output)
        return
    rows = [
        [r["role"], r["digest"][:16], fmt.clock_time(r["not_after"]), f"{r['days_left']:.0f}d"]
        for r in doc["roots"]
    ]
    own = doc.get("coordinator")
    if own:
        left = f"{own['days_left']:.0f}d"
        rows.append(["this coordinator", own["spiffe_id"], fmt.clock_time(own["not_after"]), left])
    for u in doc["users"]:
        left = f"{u['days_left']:.0f}d" if u["not_after"] else "?"
        when = fmt.clock_time(u["not_after"]) if u["not_after"] else "?"
        rows.append([f"user ({u['role']})", u["name"], when, left])
    note(f"trust domain {doc['trust_domain']}; root rotation: {doc['rotation']}")
    run = doc.get("rotation_run")
    if run and run["phase"] != "done":
        note(f"rotation {run['id']}: {run['phase']}: {run.get('waiting', '')}")
    print_table(["CERTIFICATE", "ID", "EXPIRES", "LEFT"], rows, what="certificates")


@ca_app.command("rotate")
def rotate(
    overlap: Annotated[
        str | None,
        typer.Option(
            help="Keep the old root trusted this long after every certificate was re-issued "
            "(time for other users to run `cloudless user renew`): 0, 90s, 10m, 1h. Default 60s; "
            "with --abort, how long the new root stays trusted after every certificate is back "
            "(default: the rotation's).",
            show_default=False,
        ),
    ] = None,
    abort: Annotated[
        bool,
        typer.Option(
            "--abort",
            help="Abort the rotation in progress (only while the old root is still trusted: "
            "phase trust or issue): the old root issues again, the new one is dropped.",
        ),
    ] = False,
    wait: Annotated[bool, typer.Option(help="Follow the rotation until it is done.")] = True,
    timeout: Annotated[str, typer.Option(help="Give up following after this long.")] = "30m",
    config: ConfigOpt = None,
) -> None:
    """Rotate the root CA: trust a new root, re-issue every certificate, retire the old one.

    Agents and coordinators follow on their own; this config trusts the new root at once
    and renews its own certificate during the overlap. With --abort, the rotation goes back
    to the old root and this config's certificate with it."""
    try:
        overlap_s = fmt.parse_duration(overlap, allow_zero=True) if overlap is not None else None
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--overlap") from None
    try:
        timeout_s = fmt.parse_duration(timeout)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--timeout") from None
    client = connect(config)
    if abort:
        body = {} if overlap_s is None else {"overlap_s": overlap_s}
        rot = client.call("POST", "/v1/ca/rotate/abort", body)
        note(f"root rotation {rot['id']} aborted in phase {rot['aborted_from']}: {rot['waiting']}")
    else:
        rot = client.call(
            "POST", "/v1/ca/rotate", {"overlap_s": 60.0 if overlap_s is None else overlap_s}
        )
        note(f"root rotation {rot['id']} started: new root {rot['new_digest'][:16]}")
        trust_also(client.config, str(rot["new_cert_pem"]).encode())
    if not wait:
        out.print("follow it with `cloudless ca status`")
        return
    for line in follow_rotation(client.config, str(rot["id"]), timeout_s):
        out.print(line, soft_wrap=True)


def follow_rotation(
    cfg: ClientConfig, rotation_id: str, timeout_s: float, poll_s: float = 0.5
) -> Iterator[str]:
    """Follow a rotation to ``done`` (or ``aborted``), renewing this config's certificate
    once the root it moves to issues; yields a line per change."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            doc = Client(cfg).call("GET", "/v1/ca/status")
        except ApiError as e:
            if e.status not in (502, 503, 504):
                raise
            # no leader for a moment (an etcd member restarting): the rotation goes on
            time.sleep(poll_s)
            continue
        run = doc.get("rotation_run") or {}
        if run.get("id") != rotation_id:
            raise CloudlessError(f"rotation {rotation_id} is no longer the current one")
        line = f"{run['phase']}: {run.get('waiting', '')}"
        if line != last:
            yield line
            last = line
        back = run["phase"] in ("revert", "untrust", "aborted")
        issuing = run["old_digest"] if back else run["new_digest"]
        if run["phase"] != "trust" and own_issuer(cfg) != issuing:
            renew_self(cfg)
            yield f"this config's certificate renewed from the {'old' if back else 'new'} root"
        if run["phase"] == "done":
            refresh_trust(cfg)
            yield f"root rotation {rotation_id} done; the old root is no longer trusted"
            return
        if run["phase"] == "aborted":
            refresh_trust(cfg)
            yield f"root rotation {rotation_id} aborted; the new root is no longer trusted"
            return
        time.sleep(poll_s)
    raise CloudlessError(
        f"root rotation {rotation_id} is still at {last!r} after {timeout_s:.0f}s: see "
        "`cloudless ca status`; it continues without this command"
    )


@remove_app.command("coordinator")
def remove_coordinator(
    name: Annotated[str, typer.Argument(help="Coordinator name.")], config: ConfigOpt = None
) -> None:
    """Remove a coordinator: its etcd member (never below quorum), registration, identity."""
    res = connect(config).call("DELETE", f"/v1/cluster/coordinators/{name}")
    extra = " and its etcd member" if res.get("etcd_member_removed") else ""
    out.print(f"coordinator {name}{extra} removed; its certificate is revoked")


def register(app: typer.Typer) -> None:
    app.add_typer(ca_app, name="ca", rich_help_panel="Cluster")
