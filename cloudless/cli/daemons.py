"""``cloudless coordinator`` and ``cloudless agent``: the two long-running processes.

Each builds its config from flags, sets up logging and runs the component on an asyncio
loop until it ends or SIGINT/SIGTERM arrives (then the main task is cancelled, every
TaskGroup unwinds, and the process exits 0). A start-up failure is a CloudlessError that
main.py prints as ``error: ...`` with exit code 1.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import re
import signal
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from cloudless.cli.fmt import parse_duration, parse_labels
from cloudless.coordinator.agentapi.checks import MAX_LEAVE_S
from cloudless.coordinator.deciders.membership import MembershipConfig
from cloudless.coordinator.eventlog.window import EventBounds
from cloudless.lib.errors import CloudlessError, ValidationError
from cloudless.lib.keepalive import Keepalive

log = logging.getLogger("cloudless.cli")


def setup_logging(level: str, fmt: str = "console") -> None:
    """Logs on stderr (``cloudless.observability.logs``); a bad value names the flag."""
    from cloudless.observability import logs

    try:
        logs.setup(level, fmt)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--log-level/--log-format") from None


def setup_tracing(endpoint: str, service: str) -> None:
    from cloudless.observability import tracing

    if tracing.setup(endpoint, service):
        log.info("exporting traces to %s", endpoint)


async def run_until_signal(
    main: Coroutine[Any, Any, None], on_term: Callable[[], bool] | None = None
) -> bool:
    """Run ``main`` until it returns or SIGINT/SIGTERM cancels it; True if a signal did.
    ``on_term``: asked on the first SIGTERM; when it returns True it took the signal over (an
    agent that leaves, then returns) and ``main`` is not cancelled; a second signal is."""
    task = asyncio.create_task(main)
    loop = asyncio.get_running_loop()
    got: list[str] = []
    handed: list[str] = []

    def stop(sig: signal.Signals) -> None:
        if sig is signal.SIGTERM and on_term is not None and not handed and not got:
            handed.append(sig.name)
            if on_term():
                log.info("received SIGTERM: leaving the cluster first")
                return
        if not got:
            log.info("received %s: shutting down", sig.name)
        got.append(sig.name)
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig)
    # Log level at run time, without a restart: SIGUSR1 debug, SIGUSR2 back to info.
    for sig, level in ((signal.SIGUSR1, "debug"), (signal.SIGUSR2, "info")):
        loop.add_signal_handler(sig, _set_level, level)
    try:
        await task
    except asyncio.CancelledError:
        if not got:
            raise
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
            loop.remove_signal_handler(sig)
    return bool(got)


def _set_level(level: str) -> None:
    from cloudless.observability import logs

    logs.set_level(level)
    log.warning("log level set to %s (SIGUSR1: debug, SIGUSR2: info)", level)


def serve(main: Coroutine[Any, Any, None], on_term: Callable[[], bool] | None = None) -> None:
    """``asyncio.run`` with signal handling; a ``SystemExit("message")`` from inside becomes
    a CloudlessError (printed as ``error: message``)."""
    try:
        asyncio.run(run_until_signal(main, on_term))
    except SystemExit as e:
        if isinstance(e.code, str):
            raise CloudlessError(e.code.removeprefix("cloudless agent: ")) from None
        raise


def default_dir(kind: str) -> Path:
    return Path("~/.cloudless").expanduser() / kind


# ---- coordinator --------------------------------------------------------------------------

_M, _K, _E = MembershipConfig(), Keepalive(), EventBounds()
# --liveness keys: what each sets, with the default read from the configs themselves.
LIVENESS_KEYS = {
    "heartbeat": f"heartbeat interval, default {_M.heartbeat_interval_s:g}",
    "grace": f"offline after a stream ends, default {_M.disconnect_grace_s:g}",
    "backstop": f"offline after an open stream's silence, default {_M.offline_after_s:g}",
    "ping": f"PING an idle stream after, default {_K.ping_every_ms / 1000:g}",
    "unacked": f"TCP_USER_TIMEOUT, default {_K.unacked_limit_ms / 1000:g}",
    "frozen": f"unanswered PING closes the stream after, default {_K.frozen_limit_ms / 1000:g}",
}


def coordinator(
    data_dir: Annotated[
        Path | None,
        typer.Option(help="State dir (CA, TLS, etcd data). Default ~/.cloudless/coordinator."),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Member name, unique in the cluster. Default: hostname.")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind and advertise.")] = "127.0.0.1",
    api_port: Annotated[int, typer.Option(help="User HTTPS API.")] = 8443,
    agent_port: Annotated[int, typer.Option(help="Agents' mutual-TLS gRPC.")] = 7443,
    enroll_port: Annotated[int, typer.Option(help="Enrollment gRPC (server TLS).")] = 7444,
    etcd_client_port: Annotated[int, typer.Option(help="Embedded etcd client port.")] = 2379,
    etcd_peer_port: Annotated[int, typer.Option(help="Embedded etcd peer port.")] = 2380,
    bootstrap: Annotated[
        bool, typer.Option("--bootstrap", help="Create a new cluster (CA, identity, admin).")
    ] = False,
    join: Annotated[
        str, typer.Option(metavar="URL", help="API URL of a coordinator to join.")
    ] = "",
    token: Annotated[
        str, typer.Option(metavar="TOKEN", help="Coordinator-join token (with --join).")
    ] = "",
    store: Annotated[
        str, typer.Option(help="etcd (embedded member, durable) or memory (dev/test only).")
    ] = "etcd",
    root_key_size: Annotated[int, typer.Option(help="RSA bits of a new root CA key.")] = 4096,
    bcrypt_cost: Annotated[int, typer.Option(help="bcrypt cost of token hashes.")] = 10,
    liveness: Annotated[
        str,
        typer.Option(
            metavar="KEY=SECONDS,...",
            help="Failure detection, e.g. 'grace=0.5,frozen=5' (keys: "
            + ", ".join(f"{k} ({v})" for k, v in LIVENESS_KEYS.items())
            + "). See docs/performance.md for the trade-off.",
        ),
    ] = "",
    metrics_listen: Annotated[
        str,
        typer.Option(
            metavar="HOST:PORT",
            help="Also serve /metrics here in plain HTTP (default: only on the API, mTLS).",
        ),
    ] = "",
    otlp_endpoint: Annotated[
        str,
        typer.Option(
            metavar="HOST:PORT",
            envvar="OTEL_EXPORTER_OTLP_ENDPOINT",
            help="Export traces over OTLP/gRPC there (default: tracing off).",
        ),
    ] = "",
    keep_events: Annotated[
        int,
        typer.Option(
            metavar="COUNT",
            help="Events kept: the leader deletes older ones beyond this many.",
            min=1,
            max=10_000_000,
        ),
    ] = _E.max_count,
    events_max_age: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            help="Events kept at most this long (default 7 days).",
            min=1.0,
            max=10 * 365 * 86400.0,
        ),
    ] = _E.max_age_s,
    network: Annotated[
        str,
        typer.Option(
            metavar="on|KEY=CIDR,...",
            help="Container networking (address slots, service VIPs): 'on' for the defaults, "
            "or overlay=,containers=,prefix=,services=,lighthouse=IP:PORT (where devices reach "
            "this coordinator's Nebula lighthouse; see docs/network.md). Default off.",
        ),
    ] = "",
    scheduler: Annotated[
        str,
        typer.Option(
            metavar="KEY=VALUE,...",
            help="Placement defaults, e.g. 'strategy=pack,reliability=0.5,cost=0' (strategy: "
            "pack, best_fit, spread or score; weights of locality, reliability, cost, "
            "utilization, network). See docs/scheduler.md.",
        ),
    ] = "",
    etcd_follows_rotation: Annotated[
        bool,
        typer.Option(
            help="`cloudless ca rotate` also moves the embedded etcd member's certificates "
            "and trusted roots (one member restart at a time); with --no-etcd-follows-rotation "
            "etcd keeps the certificates it started with. See docs/security.md.",
        ),
    ] = True,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    log_format: Annotated[
        str, typer.Option(help="console (one plain line per record) or json (JSON lines).")
    ] = "console",
) -> None:
    """Run a coordinator (control plane): store member, scheduler, APIs."""
    config = coordinator_config(
        data_dir=data_dir,
        name=name,
        host=host,
        api_port=api_port,
        agent_port=agent_port,
        enroll_port=enroll_port,
        etcd_client_port=etcd_client_port,
        etcd_peer_port=etcd_peer_port,
        bootstrap=bootstrap,
        join=join,
        token=token,
        store=store,
        root_key_size=root_key_size,
        bcrypt_cost=bcrypt_cost,
        liveness=liveness,
        metrics_listen=metrics_listen,
        keep_events=keep_events,
        events_max_age=events_max_age,
        network=network,
        scheduler=scheduler,
        etcd_follows_rotation=etcd_follows_rotation,
    )
    setup_logging(log_level, log_format)
    setup_tracing(otlp_endpoint, "cloudless-coordinator")
    from cloudless.coordinator.wiring.process import Coordinator

    async def main() -> None:
        coord = Coordinator(config)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(coord.run())
            await coord.ready.wait()
            admin = config.admin_dir / "config.json"
            if admin.exists():
                log.info(
                    "ready. Use the cluster with: export CLOUDLESS_CONFIG=%s; add a node with: "
                    "cloudless agent --join %s --token $(cloudless token create)",
                    admin,
                    config.api_url,
                )

    serve(main())


def coordinator_config(
    *,
    data_dir: Path | None,
    name: str | None,
    host: str,
    api_port: int,
    agent_port: int,
    enroll_port: int,
    etcd_client_port: int,
    etcd_peer_port: int,
    bootstrap: bool,
    join: str,
    token: str,
    store: str,
    root_key_size: int,
    bcrypt_cost: int,
    liveness: str = "",
    metrics_listen: str = "",
    keep_events: int = _E.max_count,
    events_max_age: float = _E.max_age_s,
    network: str = "",
    scheduler: str = "",
    etcd_follows_rotation: bool = True,
) -> Any:
    """The CoordinatorConfig for the flags; contradictory flags are refused with the fix."""
    from cloudless.coordinator.wiring.config import CoordinatorConfig
    from cloudless.lib.errors import ValidationError
    from cloudless.scheduler.config import SchedulerConfig

    try:
        sched = SchedulerConfig.parse(scheduler)
    except ValidationError as e:
        raise typer.BadParameter(str(e), param_hint="--scheduler") from None

    if store not in ("etcd", "memory"):
        raise typer.BadParameter(f"{store!r}: expected etcd or memory", param_hint="--store")
    if bootstrap and join:
        raise typer.BadParameter(
            "--bootstrap creates a new cluster and --join joins one: pass only one",
            param_hint="--bootstrap/--join",
        )
    if join and not token:
        raise typer.BadParameter(
            "--join needs --token (create one on the cluster with "
            "`cloudless token create --use coordinator-join`)",
            param_hint="--token",
        )
    ports = {
        "--api-port": api_port,
        "--agent-port": agent_port,
        "--enroll-port": enroll_port,
    }
    if store == "etcd":
        ports |= {"--etcd-client-port": etcd_client_port, "--etcd-peer-port": etcd_peer_port}
    for flag, port in ports.items():
        if not 0 < port < 65536:
            raise typer.BadParameter(f"{port} is not a TCP port (1-65535)", param_hint=flag)
    seen: dict[int, str] = {}
    for flag, port in ports.items():
        if port in seen:
            raise typer.BadParameter(f"{port} is also {seen[port]}", param_hint=flag)
        seen[port] = flag
    from cloudless.network.addressing import parse_network_flag
    from cloudless.network.errors import NetworkConfigError

    try:
        network_config = parse_network_flag(network)
    except NetworkConfigError as e:
        raise typer.BadParameter(str(e), param_hint="--network") from None
    store_kind: Literal["etcd", "memory"] = "etcd" if store == "etcd" else "memory"
    return CoordinatorConfig(
        data_dir=(data_dir or default_dir("coordinator")).expanduser(),
        name=name or socket.gethostname().split(".")[0] or "coord-1",
        host=host,
        api_port=api_port,
        agent_port=agent_port,
        enroll_port=enroll_port,
        etcd_client_port=etcd_client_port,
        etcd_peer_port=etcd_peer_port,
        store=store_kind,
        bootstrap=bootstrap,
        join=join,
        join_token=token,
        root_key_size=root_key_size,
        bcrypt_cost=bcrypt_cost,
        events=replace(_E, max_count=keep_events, max_age_s=events_max_age),
        network=network_config,
        scheduler=sched,
        etcd_follows_rotation=etcd_follows_rotation,
        **parse_liveness(liveness),
        metrics_listen=_listen_flag(metrics_listen),
    )


def parse_liveness(text: str) -> dict[str, Any]:
    """``--liveness`` as CoordinatorConfig fields (``membership``, ``keepalive``); {} if empty.

    >>> parse_liveness("grace=1,frozen=8")["keepalive"].frozen_limit_ms
    8000
    """
    if not text.strip():
        return {}
    values: dict[str, float] = {}
    for part in text.split(","):
        key, eq, raw = part.strip().partition("=")
        if key not in LIVENESS_KEYS or not eq:
            raise typer.BadParameter(
                f"{part.strip()!r}: expected KEY=SECONDS with KEY one of "
                + ", ".join(LIVENESS_KEYS),
                param_hint="--liveness",
            )
        try:
            v = float(raw)
        except ValueError:
            v = -1.0
        if not 0 < v <= 3600:
            raise typer.BadParameter(
                f"{key}={raw!r}: expected seconds, more than 0 and at most 3600",
                param_hint="--liveness",
            )
        values[key] = v
    m, k = MembershipConfig(), Keepalive()
    m = replace(
        m,
        heartbeat_interval_s=values.get("heartbeat", m.heartbeat_interval_s),
        disconnect_grace_s=values.get("grace", m.disconnect_grace_s),
        offline_after_s=values.get("backstop", m.offline_after_s),
    )
    ms = {key: int(values[key] * 1000) for key in ("ping", "unacked", "frozen") if key in values}
    k = replace(
        k,
        ping_every_ms=ms.get("ping", k.ping_every_ms),
        unacked_limit_ms=ms.get("unacked", k.unacked_limit_ms),
        frozen_limit_ms=ms.get("frozen", k.frozen_limit_ms),
    )
    if m.offline_after_s <= m.heartbeat_interval_s:
        raise typer.BadParameter(
            f"backstop={m.offline_after_s:g} must exceed heartbeat={m.heartbeat_interval_s:g}",
            param_hint="--liveness",
        )
    return {"membership": m, "keepalive": k}


# ---- agent --------------------------------------------------------------------------------


def agent(
    ctx: typer.Context,
    join: Annotated[
        str,
        typer.Option(
            metavar="URL", help="Coordinator API URL, e.g. https://10.0.0.1:8443 (to enroll)."
        ),
    ] = "",
    token: Annotated[
        str, typer.Option(metavar="TOKEN", help="Node-enrollment token (to enroll).")
    ] = "",
    data_dir: Annotated[
        Path | None,
        typer.Option(help="State dir (identity, assignment, logs). Default ~/.cloudless/agent."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Node name. Default: hostname.")] = None,
    zone: Annotated[str, typer.Option(help="Failure zone, e.g. eu-1a.")] = "",
    region: Annotated[str, typer.Option(help="Region, e.g. eu-1.")] = "",
    label: Annotated[
        list[str] | None, typer.Option(metavar="KEY=VALUE", help="Node label (repeatable).")
    ] = None,
    address: Annotated[str, typer.Option(help="Address other nodes reach this one at.")] = "",
    runtime: Annotated[str, typer.Option(help="containerd or fake (testing).")] = "containerd",
    containerd_socket: Annotated[
        str, typer.Option(help="containerd's gRPC socket.")
    ] = "/run/containerd/containerd.sock",
    namespace: Annotated[str, typer.Option(help="containerd namespace.")] = "cloudless",
    insecure_registry: Annotated[
        list[str] | None,
        typer.Option(metavar="HOST:PORT", help="Registry reached over plain HTTP (repeatable)."),
    ] = None,
    cpu: Annotated[
        str | None, typer.Option(metavar="CPU", help="Declared CPU instead of measured (2, 1500m).")
    ] = None,
    memory: Annotated[
        str | None, typer.Option(metavar="SIZE", help="Declared memory instead of measured (4Gi).")
    ] = None,
    disk: Annotated[
        str | None, typer.Option(metavar="SIZE", help="Declared disk instead of measured (20Gi).")
    ] = None,
    restart_hold: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            help="On a clean stop (SIGTERM: upgrade, restart) ask the coordinator to keep this "
            "node's replicas this long before replacing them; 0 replaces at once. A killed "
            "agent is replaced at once regardless.",
        ),
    ] = 30.0,
    reserved_hours: Annotated[
        str,
        typer.Option(
            metavar="DAYS HH-HH[; ...]",
            help="Owner-reserved hours in this machine's local time, when it takes no work "
            "(its replicas move away before): e.g. 'Mon-Fri 18-23; Sat,Sun 10-24'.",
        ),
    ] = "",
    leave_on_stop: Annotated[
        bool,
        typer.Option(
            "--leave-on-stop",
            help="On SIGTERM, leave the cluster (replicas move elsewhere first, make-before-"
            "break) instead of a plain stop: for sleep hooks and machines reclaimed by owners.",
        ),
    ] = False,
    leave_deadline: Annotated[
        str,
        typer.Option(
            metavar="DURATION",
            help="How long a leave may wait for replicas to move before stopping them: 5m.",
        ),
    ] = "5m",
    leave_below_battery: Annotated[
        float,
        typer.Option(
            metavar="PERCENT",
            help="Leave the cluster (replicas move first) when on battery at or below this "
            "charge, e.g. 15; 0 never does.",
        ),
    ] = 0.0,
    metrics_listen: Annotated[
        str,
        typer.Option(
            metavar="HOST:PORT",
            help="Serve /metrics here, in plain HTTP unless --metrics-tls.",
        ),
    ] = "",
    metrics_tls: Annotated[
        bool,
        typer.Option(
            "--metrics-tls",
            help="Serve --metrics-listen over mutual TLS (scrapers need a cluster certificate).",
        ),
    ] = False,
    otlp_endpoint: Annotated[
        str,
        typer.Option(
            metavar="HOST:PORT",
            envvar="OTEL_EXPORTER_OTLP_ENDPOINT",
            help="Export traces over OTLP/gRPC there (default: tracing off).",
        ),
    ] = "",
    container_network: Annotated[
        bool,
        typer.Option(
            "--container-network/--no-container-network",
            help="Give each container its own network namespace, address and DNS when the "
            "coordinator runs with --network (needs root, nft, nebula, the CNI plugins).",
        ),
    ] = True,
    netns_prefix: Annotated[
        str,
        typer.Option(metavar="PREFIX", help="Name prefix of the containers' network namespaces."),
    ] = "cl-",
    volume_quota: Annotated[
        bool,
        typer.Option(
            "--volume-quota/--no-volume-quota",
            help="Hold each volume with a size hint to it (a loop-mounted ext4 image; needs "
            "root and e2fsprogs). Off, or where it cannot, usage is only reported.",
        ),
    ] = True,
    storage: Annotated[
        str | None,
        typer.Option(
            metavar="SIZE",
            help="Run an object-store node offering SIZE of this disk (e.g. 100Gi); 0 runs an "
            "S3 gateway only. Its zone is --zone.",
        ),
    ] = None,
    storage_listen: Annotated[
        str, typer.Option(metavar="HOST:PORT", help="Object-store peer traffic (mutual TLS).")
    ] = "0.0.0.0:3901",
    s3_listen: Annotated[
        str, typer.Option(metavar="HOST:PORT", help="The S3 API of this node.")
    ] = "0.0.0.0:3900",
    storage_advertise: Annotated[
        str,
        typer.Option(
            metavar="HOST",
            help="Where other nodes and S3 clients reach this node's store (default --address): "
            "e.g. a home router's public address that forwards the two store ports here.",
        ),
    ] = "",
    s3_domain: Annotated[
        str,
        typer.Option(
            metavar="DOMAIN[,DOMAIN]",
            help="Root domains of virtual-host-style S3 requests: Host <bucket>.<domain> "
            "names the bucket (clients may also use path style).",
        ),
    ] = "",
    storage_replication: Annotated[
        int, typer.Option(help="Copies per object, for the store's first layout (1-7).")
    ] = 3,
    storage_grace: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            help="A storage node absent longer is replaced. Default 900 at R=3, 300 at R=2.",
        ),
    ] = None,
    storage_repair_rate: Annotated[
        str,
        typer.Option(
            metavar="SIZE",
            help="Per second: the most this node pulls to sync and repair (0: no limit).",
        ),
    ] = "64Mi",
    storage_cache: Annotated[
        str,
        typer.Option(
            metavar="SIZE",
            help="Memory the store holds recently used rows and small blocks in (0: none).",
        ),
    ] = "24Mi",
    storage_lifecycle_every: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            min=1.0,
            help="How often buckets' lifecycle rules (expiry, upload abort) are applied.",
        ),
    ] = 3600.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    log_format: Annotated[
        str, typer.Option(help="console (one plain line per record) or json (JSON lines).")
    ] = "console",
) -> None:
    """Run an agent (data plane): enroll once, then run what the coordinators assign."""
    if ctx.invoked_subcommand is not None:
        return
    from cloudless.agent.agent import Agent

    config = agent_config(
        join=join,
        token=token,
        data_dir=data_dir,
        name=name,
        zone=zone,
        region=region,
        labels=label,
        address=address,
        cpu=cpu,
        memory=memory,
        disk=disk,
        restart_hold=restart_hold,
        metrics_listen=metrics_listen,
        metrics_tls=metrics_tls,
        container_network=container_network,
        netns_prefix=netns_prefix,
        reserved_hours=reserved_hours,
        leave_on_stop=leave_on_stop,
        leave_deadline=leave_deadline,
        leave_below_battery=leave_below_battery,
    )
    config.volume_quota = volume_quota
    if storage is not None:
        config.storage = storage_config(
            config,
            storage,
            storage_listen,
            s3_listen,
            storage_replication,
            storage_grace,
            advertise=storage_advertise,
            s3_domains=s3_domain,
            cache=storage_cache,
        )
        from cloudless.model.resources import parse_size

        config.storage.lifecycle_s = storage_lifecycle_every
        try:
            config.storage.repair_rate = float(parse_size(storage_repair_rate))
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--storage-repair-rate") from None
    if runtime not in ("containerd", "fake"):
        raise typer.BadParameter(
            f"{runtime!r}: expected containerd or fake", param_hint="--runtime"
        )
    setup_logging(log_level, log_format)
    setup_tracing(otlp_endpoint, "cloudless-agent")

    agents: list[Any] = []

    async def main() -> None:
        # Built on the running loop: the containerd client's gRPC channel binds to it.
        rt = make_runtime(
            runtime, config.data_dir, containerd_socket, namespace, insecure_registry or []
        )
        agents.append(Agent(config, rt))
        await agents[0].run()

    serve(main(), lambda: bool(agents) and agents[0].leave_requested_by_file())


def agent_config(
    *,
    join: str,
    token: str,
    data_dir: Path | None,
    name: str | None,
    zone: str,
    region: str,
    labels: list[str] | None,
    address: str,
    cpu: str | None,
    memory: str | None,
    disk: str | None,
    restart_hold: float = 0.0,
    metrics_listen: str = "",
    metrics_tls: bool = False,
    container_network: bool = True,
    netns_prefix: str = "cl-",
    reserved_hours: str = "",
    leave_on_stop: bool = False,
    leave_deadline: str = "5m",
    leave_below_battery: float = 0.0,
) -> Any:
    """The AgentConfig for the flags; a bad label or quantity names the flag and the form."""
    from cloudless.agent.agent import AgentConfig
    from cloudless.model.resources import Resources, parse_cpu, parse_size

    try:
        parsed_labels = parse_labels(labels)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--label") from None
    dims = []
    for flag, raw, parse in (
        ("--cpu", cpu, parse_cpu),
        ("--memory", memory, parse_size),
        ("--disk", disk, parse_size),
    ):
        try:
            dims.append(parse(raw) if raw else 0)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint=flag) from None
    override = Resources(dims[0], dims[1], dims[2], 0) if any(dims) else None
    if not 0 <= restart_hold <= 300:
        raise typer.BadParameter(
            f"{restart_hold:g}: expected seconds from 0 to 300", param_hint="--restart-hold"
        )
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,19}", netns_prefix):
        raise typer.BadParameter(
            f"{netns_prefix!r}: expected 1-20 lowercase letters, digits and '-', starting with "
            "a letter (e.g. cl-)",
            param_hint="--netns-prefix",
        )
    reserved = _reserved_flag(reserved_hours)
    leave_s = _duration_flag(leave_deadline, "--leave-deadline", MAX_LEAVE_S)
    if not 0 <= leave_below_battery < 100:
        raise typer.BadParameter(
            f"{leave_below_battery:g}: expected a charge percentage from 0 (off) to 99",
            param_hint="--leave-below-battery",
        )
    if join and not join.startswith("https://"):
        raise typer.BadParameter(
            f"{join!r}: expected the coordinator's API URL, https://HOST:PORT",
            param_hint="--join",
        )
    return AgentConfig(
        data_dir=(data_dir or default_dir("agent")).expanduser(),
        join=join,
        token=token,
        name=name or socket.gethostname().split(".")[0] or "node",
        labels=parsed_labels,
        region=region,
        zone=zone,
        address=address,
        capacity_override=override,
        restart_hold_s=restart_hold,
        metrics_listen=_listen_flag(metrics_listen),
        metrics_tls=metrics_tls,
        container_network=container_network,
        netns_prefix=netns_prefix,
        reserved_hours=reserved,
        leave_on_stop=leave_on_stop,
        leave_deadline_s=leave_s,
        leave_below_battery_pct=leave_below_battery,
    )


_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def storage_config(
    config: Any,
    size: str,
    listen: str,
    s3: str,
    replication: int,
    grace: float | None,
    *,
    advertise: str = "",
    s3_domains: str = "",
    cache: str = "24Mi",
) -> Any:
    """The agent's ``StorageConfig`` for ``--storage`` and its companion flags; a bad value
    names the flag."""
    from cloudless.model.resources import parse_size
    from cloudless.objectstore.layout import MAX_REPLICATION
    from cloudless.objectstore.service import StorageConfig
    from cloudless.observability.http import parse_listen

    try:
        capacity = parse_size(size)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--storage") from None
    try:
        cache_bytes = parse_size(cache)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--storage-cache") from None
    ends = []
    for flag, value in (("--storage-listen", listen), ("--s3-listen", s3)):
        try:
            ends.append(parse_listen(value))
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint=flag) from None
    if not 1 <= replication <= MAX_REPLICATION:
        raise typer.BadParameter(
            f"{replication}: expected 1..{MAX_REPLICATION}", param_hint="--storage-replication"
        )
    if grace is not None and grace < 0:
        raise typer.BadParameter(f"{grace:g}: expected seconds >= 0", param_hint="--storage-grace")
    if advertise and not (_HOST.match(advertise) or _is_ip(advertise)):
        raise typer.BadParameter(
            f"{advertise!r}: expected a host name or IP address, without scheme or port (the "
            "ports are those of --storage-listen and --s3-listen)",
            param_hint="--storage-advertise",
        )
    domains = tuple(d.strip().lower().rstrip(".") for d in s3_domains.split(",") if d.strip())
    for d in domains:
        if not _HOST.match(d) or _is_ip(d):
            raise typer.BadParameter(
                f"{d!r}: expected a domain name such as s3.home.example (no scheme or port)",
                param_hint="--s3-domain",
            )
    if capacity > 0 and not config.zone:
        raise typer.BadParameter(
            "a storage node needs a zone (a home, an office, a region): pass --zone",
            param_hint="--zone",
        )
    (rpc_host, rpc_port), (s3_host, s3_port) = ends
    return StorageConfig(
        data_dir=config.data_dir / "objectstore",
        zone=config.zone or "gateway",
        capacity=capacity,
        rpc_host=rpc_host,
        rpc_port=rpc_port,
        advertise=advertise or config.address,
        s3_host=s3_host,
        s3_port=s3_port,
        s3_domains=domains,
        replication=replication,
        grace_s=grace,
        cache_bytes=cache_bytes,
    )


def _reserved_flag(value: str) -> frozenset[int]:
    """``--reserved-hours`` in this machine's local time, as week bins."""
    from cloudless.model.departure import parse_reserved

    offset = datetime.datetime.now().astimezone().utcoffset()
    try:
        return parse_reserved(
            value, offset.total_seconds() if offset else 0.0, field="--reserved-hours"
        )
    except ValidationError as e:
        raise typer.BadParameter(
            str(e).removeprefix("--reserved-hours: "), param_hint="--reserved-hours"
        ) from None


def _duration_flag(value: str, flag: str, most: float) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint=flag) from None
    if not 0 <= seconds <= most:
        raise typer.BadParameter(
            f"{value!r}: expected a duration from 0s to {most:g}s", param_hint=flag
        )
    return seconds


def leave(
    data_dir: Annotated[
        Path | None,
        typer.Option(help="The agent's state dir. Default ~/.cloudless/agent."),
    ] = None,
    deadline: Annotated[
        str,
        typer.Option(
            metavar="DURATION",
            help="Longest wait for the replicas to be running elsewhere; then they stop anyway.",
        ),
    ] = "5m",
    reason: Annotated[str, typer.Option(help="Why (shown in events).")] = "owner reclaimed it",
    wait: Annotated[
        bool, typer.Option(help="Wait until the agent has left (for sleep hooks).")
    ] = True,
) -> None:
    """Leave the cluster: this node's replicas start elsewhere, and stop here only once they
    are ready there (bounded by --deadline); then the agent exits and the node is departed."""
    from cloudless.agent.agent import LEAVE_FILE, PID_FILE

    seconds = _duration_flag(deadline, "--deadline", MAX_LEAVE_S)
    d = (data_dir or default_dir("agent")).expanduser()
    try:
        pid = int((d / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        raise CloudlessError(
            f"no running agent found ({d / PID_FILE} missing or unreadable): pass --data-dir"
        ) from None
    (d / LEAVE_FILE).write_text(json.dumps({"deadline_s": seconds, "reason": reason}))
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        (d / LEAVE_FILE).unlink(missing_ok=True)
        raise CloudlessError(f"agent process {pid} is not running") from None
    typer.echo(f"agent {pid}: leaving (deadline {seconds:g}s)")
    if not wait:
        return
    until = time.monotonic() + seconds + 60.0
    while time.monotonic() < until:
        # The agent removes its pid file as it exits (the process may linger as a zombie
        # of whoever started it).
        try:
            os.kill(pid, 0)
            gone = not (d / PID_FILE).exists()
        except ProcessLookupError:
            gone = True
        if gone:
            typer.echo(f"agent {pid}: left")
            return
        time.sleep(0.2)
    raise CloudlessError(f"agent {pid} still running {seconds + 60:g}s after the leave request")


def _listen_flag(value: str) -> str:
    """``--metrics-listen``: HOST:PORT or empty, checked here so a typo fails at start."""
    from cloudless.observability.http import parse_listen

    if value:
        try:
            parse_listen(value)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--metrics-listen") from None
    return value


def make_runtime(
    kind: str,
    data_dir: Path,
    socket_path: str,
    namespace: str,
    insecure_registries: list[str] | None = None,
) -> Any:
    """The container runtime for ``--runtime``; containerd is imported only when chosen.
    ``insecure_registries`` (``HOST:PORT``) are pulled from over plain HTTP."""
    from cloudless.lib.clock import SystemClock

    if kind == "fake":
        from cloudless.runtime.fake import FakeRuntime

        return FakeRuntime(SystemClock())
    try:
        from cloudless.runtime.containerd import ContainerdRuntime
    except ImportError as e:
        raise CloudlessError(
            f"the containerd runtime is not available in this build ({e}); use --runtime fake "
            "to try Cloudless without containers"
        ) from None
    if not Path(socket_path).exists():
        raise CloudlessError(
            f"no containerd socket at {socket_path}: start containerd, or pass "
            "--containerd-socket PATH"
        )
    from cloudless.runtime.oci.distribution import RegistryConfig, RegistryHost

    registry = RegistryConfig(
        {h: RegistryHost(plain_http=True) for h in (insecure_registries or [])}
    )
    return ContainerdRuntime(socket_path, data_dir=data_dir, namespace=namespace, registry=registry)


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Processes")(coordinator)
    agent_app = typer.Typer(
        invoke_without_command=True, help="Run an agent (data plane); `agent leave` to leave."
    )
    agent_app.callback()(agent)
    agent_app.command("leave")(leave)
    app.add_typer(agent_app, name="agent", rich_help_panel="Processes")
