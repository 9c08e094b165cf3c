"""``cloudless user``, ``cloudless role`` and ``cloudless audit``: who may do what.

``user create NAME --role ROLE`` makes the new user's private key here (it never leaves
this machine), has the coordinator certify it (SPIFFE ``.../user/NAME``) and writes a client
config directory for it: ``config.json``, ``NAME.key``, ``NAME.crt``, ``ca.pem`` (0600 files
in a 0700 directory), to hand to the user like a kubeconfig.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from cloudless.cli import fmt
from cloudless.cli.client import Client
from cloudless.cli.output import Format, note, out, print_document, print_table
from cloudless.cli.session import ConfigOpt, OutputOpt, connect
from cloudless.cli.trust import refresh_trust, renew_self
from cloudless.lib.errors import CloudlessError
from cloudless.security._files import write_private
from cloudless.security.identity import SpiffeId
from cloudless.security.keys import make_csr, new_private_key

user_app = typer.Typer(no_args_is_help=True, help="Create, list and revoke users.")
role_app = typer.Typer(no_args_is_help=True, help="Apply, list and delete custom roles.")


def issue_user(
    client: Client,
    name: str,
    role: str,
    out_dir: Path,
    *,
    namespaces: list[str] | None = None,
    ttl_seconds: int | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Create user ``name`` and write its client config under ``out_dir``; returns the
    config path and the API's answer. Refuses to overwrite an existing config."""
    cfg_path = out_dir / "config.json"
    if cfg_path.exists():
        raise CloudlessError(f"{cfg_path} exists: choose another --out directory")
    key = new_private_key()
    # The trust domain is the CA's; the CSR's URI SAN is checked against it, so ask first.
    td = str(client.call("GET", "/v1/users/whoami").get("trust_domain", "cloudless"))
    csr = make_csr(key, SpiffeId.user(name, td))
    body: dict[str, Any] = {"name": name, "role": role, "csr_pem": csr.decode()}
    if namespaces:
        body["namespaces"] = namespaces
    if ttl_seconds is not None:
        body["ttl_seconds"] = ttl_seconds
    res = client.call("POST", "/v1/users", body)
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(out_dir / f"{name}.key", key)
    write_private(out_dir / f"{name}.crt", res["cert_pem"].encode())
    write_private(out_dir / "ca.pem", res["ca_bundle_pem"].encode())
    cfg = {
        "servers": list(client.config.servers),
        "ca": "ca.pem",
        "cert": f"{name}.crt",
        "key": f"{name}.key",
    }
    write_private(cfg_path, json.dumps(cfg, indent=2).encode())
    return cfg_path, res


@user_app.command("renew")
def renew(config: ConfigOpt = None) -> None:
    """Renew this config's own certificate (new key) and follow the cluster's trusted roots
    (run it during a root rotation's overlap)."""
    client = connect(config)
    changed = refresh_trust(client.config)
    renew_self(client.config)
    extra = "; trusted roots updated" if changed else ""
    out.print(f"certificate renewed ({client.config.cert_file}){extra}")


@user_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="User name (a DNS label).")],
    role: Annotated[str, typer.Option(help="admin, operator, developer, viewer or custom.")],
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", help="Limit the role to this namespace (repeatable)."),
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Directory for the config (default ./NAME).")
    ] = None,
    ttl: Annotated[str | None, typer.Option(help="Certificate lifetime: 30d, 8760h.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Create a user with a role; writes its client config (key made here, never sent)."""
    try:
        seconds = int(fmt.parse_duration(ttl)) if ttl else None
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--ttl") from None
    path, res = issue_user(
        connect(config),
        name,
        role,
        out_dir or Path(name),
        namespaces=namespace,
        ttl_seconds=seconds,
    )
    u = res["user"]
    where = ", ".join(u["namespaces"]) if u.get("namespaces") else "every namespace"
    note(f"user {name} ({res['spiffe_id']}) has role {u['role']} in {where}")
    out.print(f"client config written to {path} (use --config {path})", soft_wrap=True)


@user_app.command("list")
def list_users(config: ConfigOpt = None, output: OutputOpt = Format.TABLE) -> None:
    """Every user, its role and namespaces."""
    users = connect(config).call("GET", "/v1/users")["users"]
    if output is not Format.TABLE:
        print_document({"users": users}, output)
        return
    rows = [
        [u["name"], u["role"], ", ".join(u["namespaces"] or ["*"]), u.get("created_by", "")]
        for u in users
    ]
    print_table(["NAME", "ROLE", "NAMESPACES", "CREATED BY"], rows, what="users")


@user_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="User name.")], config: ConfigOpt = None
) -> None:
    """Revoke a user: its certificates are refused from the next request on."""
    connect(config).call("DELETE", f"/v1/users/{name}")
    out.print(f"user {name} revoked")


@role_app.command("apply")
def apply_role(
    file: Annotated[Path, typer.Option("-f", "--file", help="Role in YAML or JSON.")],
    config: ConfigOpt = None,
) -> None:
    """Create or replace a custom role (verbs on resources, optionally per namespace)."""
    try:
        text = file.read_bytes()
    except OSError as e:
        raise CloudlessError(f"cannot read {file}: {e.strerror}") from None
    res = connect(config).call("POST", "/v1/roles", raw=text, content_type="application/yaml")
    out.print(f"role {res['role']['name']} applied")


@role_app.command("list")
def list_roles(config: ConfigOpt = None, output: OutputOpt = Format.TABLE) -> None:
    """Built-in and custom roles with their rules."""
    roles = connect(config).call("GET", "/v1/roles")["roles"]
    if output is not Format.TABLE:
        print_document({"roles": roles}, output)
        return
    rows = []
    for r in roles:
        rules = "; ".join(
            f"{','.join(x['verbs'])} {','.join(x['resources'])}"
            + (f" in {','.join(x['namespaces'])}" if x.get("namespaces") else "")
            for x in r["rules"]
        )
        rows.append([r["name"], "yes" if r["builtin"] else "", rules])
    print_table(["NAME", "BUILT-IN", "RULES"], rows, what="roles")


@role_app.command("delete")
def delete_role(
    name: Annotated[str, typer.Argument(help="Role name.")], config: ConfigOpt = None
) -> None:
    """Delete a custom role no user holds."""
    connect(config).call("DELETE", f"/v1/roles/{name}")
    out.print(f"role {name} deleted")


def audit(
    tail: Annotated[int, typer.Option(help="How many recent entries.")] = 50,
    config: ConfigOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Recent API writes: who, what, allowed or denied, when."""
    entries = connect(config).call("GET", f"/v1/audit?tail={tail}")["entries"]
    if output is not Format.TABLE:
        print_document({"entries": entries}, output)
        return
    rows = [
        [
            fmt.clock_time(e["at"]),
            e["user"].rsplit("/", 1)[-1],
            e["role"],
            f"{e['verb']} {e['resource']}" + (f"/{e['name']}" if e["name"] else ""),
            e["namespace"],
            "allowed" if e["allowed"] else "DENIED",
            str(e["status"]),
        ]
        for e in entries
    ]
    print_table(
        ["AT", "USER", "ROLE", "ACTION", "NAMESPACE", "RESULT", "STATUS"],
        rows,
        what="audit entries",
    )


def register(app: typer.Typer) -> None:
    app.add_typer(user_app, name="user", rich_help_panel="Access")
    app.add_typer(role_app, name="role", rich_help_panel="Access")
    app.command("audit", rich_help_panel="Access")(audit)
