"""The console's routes on the user API (see the package docstring for the login flow).

``/v1/ui/login`` sits behind the API's certificate check like every ``/v1`` route; every
``/ui`` route is checked here, by session cookie, instead. Pages answer with a strict
Content-Security-Policy (scripts only with this response's nonce, nothing from elsewhere).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from cloudless.coordinator.eventlog.query import EventQuery, Position, feed, read_page
from cloudless.coordinator.state.cluster import ClusterState
from cloudless.coordinator.userapi.console import pages
from cloudless.coordinator.userapi.console.session import SESSION_TTL_S, LoginLinks, Sessions
from cloudless.lib.clock import Clock
from cloudless.lib.errors import ValidationError
from cloudless.model.workload import WorkloadSpec
from cloudless.security.revocation import RevocationList
from cloudless.store.errors import StoreError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
WHO = web.RequestKey("console_who", str)
COOKIE = "cloudless_session"
EVENTS_BACKLOG = 20


class Console:
    def __init__(
        self,
        *,
        state: ClusterState,
        clock: Clock,
        revocations: RevocationList,
        identity_of: Callable[[web.Request], str],
        explain: Callable[[WorkloadSpec], Awaitable[str]],
        logs: Handler,
    ) -> None:
        self.state = state
        self.clock = clock
        self.revocations = revocations
        self.identity_of = identity_of
        self.explain = explain
        self.logs_handler = logs
        self.links = LoginLinks(clock)
        self.sessions = Sessions(state.store, clock)

    def install(self, app: web.Application) -> None:
        app.middlewares.append(self._session)
        r = app.router
        r.add_post("/v1/ui/login", self.create_login)
        r.add_get("/ui", self.to_overview)
        r.add_get("/ui/login", self.login)
        r.add_get("/ui/", self.overview)
        r.add_get("/ui/nodes", self.nodes)
        r.add_get("/ui/workloads", self.workloads)
        r.add_get("/ui/workloads/{name}", self.workload)
        r.add_get("/ui/replicas/{id}/logs", self.logs_page)
        r.add_get("/ui/replicas/{id}/logs/stream", self.logs_stream)
        r.add_get("/ui/events", self.events)

    # ---- login -----------------------------------------------------------------------------

    async def create_login(self, request: web.Request) -> web.Response:
        """For a certificate holder: a one-time link (60 s) to open in a browser."""
        secret = self.links.issue(self.identity_of(request))
        base = f"{request.scheme}://{request.host}"
        return web.json_response({"url": f"{base}/ui/login?secret={secret}", "expires_in": 60})

    async def login(self, request: web.Request) -> web.StreamResponse:
        who, why = self.links.redeem(request.query.get("secret", ""))
        if who is None:
            return _page(pages.error_page(401, why), 401)
        resp = web.HTTPSeeOther("/ui/")
        resp.set_cookie(
            COOKIE,
            await self.sessions.sign(who),
            max_age=int(SESSION_TTL_S),
            path="/ui",
            secure=True,
            httponly=True,
            samesite="Strict",
        )
        raise resp

    @web.middleware
    async def _session(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if not (path == "/ui" or path.startswith("/ui/")) or path == "/ui/login":
            return await handler(request)
        session, why = await self.sessions.check(request.cookies.get(COOKIE, ""))
        if session is None:
            return _page(pages.error_page(401, why), 401)
        revoked = self.revocations.identity_revoked(session.who, session.issued_at)
        if revoked is not None:
            return _page(pages.error_page(401, f"{session.who} was revoked: {revoked.reason}"), 401)
        request[WHO] = session.who
        return await handler(request)

    # ---- pages -----------------------------------------------------------------------------

    async def to_overview(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/ui/")

    async def _render(
        self, request: web.Request, title: str, fragment: str, *, live: bool = True
    ) -> web.Response:
        """The page, or with ``?fragment=1`` only its live part; ``live=False`` pages are
        not re-fetched (a log being followed would be lost)."""
        if request.query.get("fragment"):
            return _page(fragment)
        nonce = secrets.token_urlsafe(16)
        src = request.path + "?fragment=1" if live else ""
        body = pages.layout(title, src, fragment, request[WHO]).replace(
            "<script>", f'<script nonce="{nonce}">'
        )
        return _page(body, nonce=nonce)

    async def overview(self, request: web.Request) -> web.Response:
        snap = await self.state.snapshot()
        return await self._render(request, "Overview", pages.overview(snap.view))

    async def nodes(self, request: web.Request) -> web.Response:
        snap = await self.state.snapshot()
        return await self._render(request, "Nodes", pages.nodes_page(snap.view))

    async def workloads(self, request: web.Request) -> web.Response:
        snap = await self.state.snapshot()
        return await self._render(request, "Workloads", pages.workloads_page(snap.view))

    async def workload(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        snap = await self.state.snapshot()
        rec = snap.view.workloads.get(name)
        if rec is None or rec.deleted:
            return _page(pages.error_page(404, f"no workload named {name!r}"), 404)
        reps = [r for r in snap.view.replicas.values() if r.workload == name]
        explain = await self.explain(rec.spec)
        frag = pages.workload_page(rec, reps, snap.view.nodes, explain)
        return await self._render(request, f"Workload {name}", frag)

    async def logs_page(self, request: web.Request) -> web.Response:
        rid = request.match_info["id"]
        return await self._render(request, f"Logs of {rid}", pages.logs_page(rid), live=False)

    async def logs_stream(self, request: web.Request) -> web.StreamResponse:
        """The API's log stream of the replica (followed), answered by the leader."""
        proxied = request.clone(rel_url=request.rel_url.with_query({"follow": "1", "tail": "200"}))
        try:
            return await self.logs_handler(proxied)
        except web.HTTPTemporaryRedirect as r:
            leader = str(r.location).split("/v1/")[0] if r.location else "the leader"
            return _text(f"logs are served by the leader coordinator: open {leader}/ui/\n", 409)
        except web.HTTPException:
            raise
        except Exception as e:
            return _text(f"logs unavailable: {e}\n", 503)

    # ---- live events -----------------------------------------------------------------------

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events: the last few events, then each new one as it is written. The
        event id is its position in the log (``REVISION:ID``), so a reconnecting browser
        (``Last-Event-ID``) resumes after the last one it saw, without gaps or repeats."""
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        last = request.headers.get("Last-Event-ID", "")
        try:
            after = Position.parse(last, "Last-Event-ID") if last else None
        except ValidationError:
            after = None  # a forged or stale id: start from the newest events
        try:
            first = await read_page(
                self.state.events, EventQuery(after=after, tail=EVENTS_BACKLOG, follow=True)
            )
            for body in first.events:
                await resp.write(_sse(body))
            async for body in feed(self.state.events, EventQuery(follow=True), first.next):
                await resp.write(_sse(body))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        except StoreError as e:
            await resp.write(f"event: error\ndata: {json.dumps(str(e))}\n\n".encode())
        return resp


def _sse(body: dict[str, Any]) -> bytes:
    position = Position(int(body["revision"]), str(body["id"])).token
    return f"id: {position}\ndata: {json.dumps(body)}\n\n".encode()


def _page(body: str, status: int = 200, nonce: str = "") -> web.Response:
    script = f"script-src 'nonce-{nonce}'" if nonce else "script-src 'none'"
    return web.Response(
        text=body,
        status=status,
        content_type="text/html",
        headers={
            "Content-Security-Policy": (
                f"default-src 'self'; {script}; style-src 'unsafe-inline'; img-src 'self'; "
                "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
            ),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        },
    )


def _text(body: str, status: int) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/plain")
