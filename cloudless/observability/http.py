"""The HTTP side of the observability plane.

* ``request_metrics``: an aiohttp middleware counting every user API answer by route
  template (``/v1/nodes/{id}``, never the id itself), method and status, and timing it.
* ``MetricsPage``: ``GET /metrics`` for a component: refreshes the scrape-time collectors,
  then renders the registry (text format, or OpenMetrics when asked).
* ``sd_targets``: the Prometheus HTTP service-discovery document (``http_sd_configs``) for a
  fleet: every coordinator's metrics and every agent that advertises a metrics address, with
  ``__meta_cloudless_*`` labels to relabel on. Pure.
* ``serve_metrics``: a listener of its own for ``/metrics``, plain HTTP or mutual TLS, bound
  where the operator says.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from cloudless.model.node import Node, NodeState
from cloudless.observability.metrics import API_DURATION, API_REQUESTS, exposition

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Refresh = Callable[[], Awaitable[None]]


def route_of(request: web.Request) -> str:
    """The route template that matched (a closed set), or ``unmatched``."""
    info = request.match_info
    route = getattr(info, "route", None)
    resource = getattr(route, "resource", None)
    canonical = getattr(resource, "canonical", None)
    return canonical if isinstance(canonical, str) and canonical else "unmatched"


def request_metrics(timer: Callable[[], float] = time.perf_counter) -> Any:
    """Middleware: count and time every answer, errors and framework answers included."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        t0 = timer()
        route = route_of(request)
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        except web.HTTPException as e:
            status = e.status
            raise
        finally:
            API_REQUESTS.labels(route, request.method, str(status)).inc()
            API_DURATION.labels(route, request.method).observe(timer() - t0)

    return middleware


class MetricsPage:
    """``GET /metrics``: run every ``refresh`` (reads the store for the cluster gauges),
    then render ``registry``. A refresh that fails leaves the previous values in place and
    is counted by the store instrument; the scrape itself still answers."""

    def __init__(self, registry: CollectorRegistry, refresh: Sequence[Refresh] = ()) -> None:
        self.registry = registry
        self.refresh = refresh

    async def handle(self, request: web.Request) -> web.Response:
        for r in self.refresh:
            try:
                await r()
            except Exception:
                pass
        body, ctype = exposition(self.registry, request.headers.get("Accept", ""))
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = ctype
        return resp


def sd_targets(
    coordinators: Iterable[tuple[str, str]], nodes: Iterable[Node]
) -> list[dict[str, Any]]:
    """The ``http_sd_configs`` document: one group per coordinator (``(name, api URL)``,
    scraped over HTTPS at ``/metrics``) and one per agent that advertises a metrics address
    and is not removed. Labels: ``__meta_cloudless_role``, ``_node``, ``_node_id``,
    ``_zone``, ``_state``; ``__scheme__`` says how to reach the target."""
    groups: list[dict[str, Any]] = []
    for name, api in sorted(coordinators):
        scheme, _, rest = api.partition("://")
        hostport = rest.split("/", 1)[0]
        if not hostport:
            continue
        groups.append(
            {
                "targets": [hostport],
                "labels": {
                    "__scheme__": scheme or "https",
                    "__meta_cloudless_role": "coordinator",
                    "__meta_cloudless_coordinator": name,
                },
            }
        )
    for n in sorted(nodes, key=lambda n: n.id):
        if n.state is NodeState.REMOVED or not n.metrics_address:
            continue
        scheme, _, hostport = n.metrics_address.rpartition("://")
        groups.append(
            {
                "targets": [hostport],
                "labels": {
                    "__scheme__": scheme or "http",
                    "__meta_cloudless_role": "agent",
                    "__meta_cloudless_node": n.name,
                    "__meta_cloudless_node_id": n.id,
                    "__meta_cloudless_zone": n.zone,
                    "__meta_cloudless_state": n.state.value,
                },
            }
        )
    return groups


def parse_listen(spec: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) into its parts, with a clear error."""
    host, sep, port = spec.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{spec!r} is not HOST:PORT (e.g. 127.0.0.1:9100)")
    return host.strip("[]"), int(port)


def mtls_context(cert_file: str, key_file: str, ca_file: str) -> ssl.SSLContext:
    """A server context that requires a client certificate from the cluster's CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    ctx.load_verify_locations(ca_file)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


async def serve_metrics(
    page: MetricsPage, host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> web.AppRunner:
    """Serve ``/metrics`` (and nothing else: every other path is a 404) on a listener of
    its own. The caller cleans the runner up."""
    app = web.Application()
    app.router.add_get("/metrics", page.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    return runner


MAX_ADDRESS = 255


def metrics_address_problem(address: str) -> str:
    """Why an agent's advertised metrics address is unusable ("" when it is fine, and for
    the empty address, which means none): ``http://HOST:PORT`` or ``https://HOST:PORT``."""
    if not address:
        return ""
    if len(address) > MAX_ADDRESS:
        return f"metrics address is {len(address)} characters long (at most {MAX_ADDRESS})"
    if any(not c.isprintable() or c.isspace() for c in address):
        return "metrics address has control or space characters"
    scheme, sep, rest = address.partition("://")
    if not sep or scheme not in ("http", "https"):
        return f"metrics address {address!r} must start with http:// or https://"
    try:
        parse_listen(rest)
    except ValueError as e:
        return f"metrics address: {e}"
    return ""
