"""``cloudless token``: join tokens for agents and coordinators."""

from __future__ import annotations

from typing import Annotated

import typer

from cloudless.cli import fmt
from cloudless.cli.output import Format, note, out, print_document, print_table
from cloudless.cli.session import ConfigOpt, OutputOpt, connect, now

token_app = typer.Typer(no_args_is_help=True, help="Create, list and revoke join tokens.")

USES = ("node-enrollment", "coordinator-join")


@token_app.command("create")
def create(
    use: Annotated[str, typer.Option(help="node-enrollment or coordinator-join.")] = USES[0],
    ttl: Annotated[str, typer.Option(help="Lifetime: 30m, 24h, 7d.")] = "24h",
    label: Annotated[
        list[str] | None,
        typer.Option(metavar="KEY=VALUE", help="Label given to the node (repeatable)."),
    ] = None,
    description: Annotated[str, typer.Option(help="A note for `token list`.")] = "",
    config: ConfigOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Create a one-time token; prints the token alone on stdout (TOKEN=$(cloudless token
    create)). Details go to stderr."""
    if use not in USES:
        raise typer.BadParameter(f"{use!r}: expected one of {', '.join(USES)}", param_hint="--use")
    try:
        seconds = fmt.parse_duration(ttl)
        labels = fmt.parse_labels(label)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    body = {"use": use, "ttl_seconds": seconds, "labels": labels, "description": description}
    res = connect(config).call("POST", "/v1/tokens", body)
    if output is not Format.TABLE:
        print_document(res, output)
        return
    rec = res["record"]
    note(f"token {rec['token_id']} ({rec['use']}) expires in {fmt.human_duration(seconds)}")
    out.print(res["token"], soft_wrap=True)


@token_app.command("list")
def list_tokens(config: ConfigOpt = None, output: OutputOpt = Format.TABLE) -> None:
    """Every token: what for, active/used/expired/revoked, expiry, who used it."""
    toks = connect(config).call("GET", "/v1/tokens")["tokens"]
    if output is not Format.TABLE:
        print_document({"tokens": toks}, output)
        return
    t = now()
    print_table(fmt.TOKEN_HEADERS, [fmt.token_row(x, t) for x in toks], what="tokens")


@token_app.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(help="Token id (from `token list`).")],
    config: ConfigOpt = None,
) -> None:
    """Revoke a token so it can no longer be used."""
    rec = connect(config).call("DELETE", f"/v1/tokens/{token_id}")["record"]
    out.print(f"token {rec['token_id']} revoked")


def register(app: typer.Typer) -> None:
    token_app.command("ls", hidden=True)(list_tokens)
    app.add_typer(token_app, name="token", rich_help_panel="Cluster")
