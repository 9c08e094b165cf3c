"""The user API's error object and how every failure becomes one.

``{"error": {"code", "message", "problems"?}}``: ``code`` a stable slug, ``problems`` every
``<field path>: <reason>``. ``errors`` (a middleware) turns what handlers raise into it, and
``JsonErrorRunner`` does the same for what aiohttp refuses before any route runs (a
malformed request line, header or chunk); a bug is a JSON 500 ``internal``, logged with its
traceback. An error repeats at most ``MAX_ERROR_CHARS`` of what it was sent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from cloudless.lib.errors import CloudlessError, Conflict, NotFound, ValidationError
from cloudless.store.errors import Fenced, StoreError

log = logging.getLogger("cloudless.coordinator.http")

MAX_BODY = 1 << 20
MAX_ERROR_CHARS = 4096  # of message and problems together
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(CloudlessError):
    def __init__(self, status: int, code: str, message: str, problems: list[str] | None = None):
        super().__init__(message, code=code)
        self.status = status
        self.problems = problems or []


def redirect_to_leader(request: web.Request, leader: str | None, unavailable: str) -> NoReturn:
    """Send a leader-only request to the leader's API (307), or answer 503 ``no_leader`` with
    ``unavailable`` when no leader is known."""
    if not leader:
        raise ApiError(503, "no_leader", unavailable)
    raise web.HTTPTemporaryRedirect(leader.rstrip("/") + str(request.rel_url))


def json_response(data: Any, status: int = 200) -> web.Response:
    # Compact: ``indent`` makes the json module fall back from its C encoder to pure Python
    # (measured: a 3,500-node listing spent more time in the encoder than anywhere else).
    return web.json_response(data, status=status, dumps=json.dumps)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every exception a handler raises as the error object; a redirect passes."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise  # redirects
        resp = error_response(e.status, _HTTP_CODES.get(e.status, f"http_{e.status}"), _reason(e))
        if "Allow" in e.headers:
            resp.headers["Allow"] = e.headers["Allow"]
        return resp
    except ApiError as e:
        return error_response(e.status, e.code, e.message, e.problems)
    except ValidationError as e:
        return error_response(400, "invalid", e.message, e.problems)
    except NotFound as e:
        return error_response(404, "not_found", e.message)
    except Conflict as e:
        return error_response(409, "conflict", e.message)
    except Fenced as e:
        return error_response(503, "not_leader", f"{e}: retry, or ask the leader")
    except StoreError as e:
        return error_response(503, "store_unavailable", f"the cluster store did not answer: {e}")
    except CloudlessError as e:
        return error_response(400, e.code, e.message)
    except Exception:
        log.exception("API %s %s failed", request.method, request.path)
        return error_response(
            500, "internal", "the coordinator failed on this request (see its log)"
        )


def _reason(e: web.HTTPException) -> str:
    if e.status == 413:
        return f"the request body is larger than the limit of {MAX_BODY:,} bytes"
    if e.status == 405:
        return f"method not allowed here (allowed: {e.headers.get('Allow', 'none')})"
    if e.status == 404:
        return "no such route: see /openapi.json for the API's routes"
    return e.reason


def _capped(text: str, budget: int) -> str:
    return text if len(text) <= budget else text[: max(0, budget)] + "... (cut)"


def error_response(
    status: int, code: str, message: str, problems: list[str] | None = None
) -> web.Response:
    """The documented error object, repeating at most ``MAX_ERROR_CHARS`` of the input."""
    budget = MAX_ERROR_CHARS
    shown: list[str] = []
    for p in problems or []:
        if budget <= 0:
            shown.append(f"... and {len(problems or []) - len(shown)} more problems")
            break
        shown.append(_capped(p, min(budget, 512)))
        budget -= len(shown[-1])
    if shown:
        message = "; ".join(shown)
    body: dict[str, Any] = {"code": code, "message": _capped(message, MAX_ERROR_CHARS)}
    if shown:
        body["problems"] = shown
    return json_response({"error": body}, status=status)


class _JsonErrorHandler(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            super().handle_error(request, status, exc, message)  # logs the traceback
        elif request.writer.output_size > 0:
            raise ConnectionError("an answer was already sent; cannot send the error")
        else:  # a malformed request: the client's fault, one line in the log
            log.info("bad HTTP request from %s: %s", request.remote, " ".join(str(message).split()))
        code = _HTTP_CODES.get(status, "internal" if status == 500 else f"http_{status}")
        text = "the coordinator failed on this request" if status == 500 else message
        resp = error_response(status, code, text or "the request is not valid HTTP")
        resp.force_close()
        return resp


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorRunner(web.AppRunner):
    """An ``AppRunner`` whose connections answer the errors aiohttp finds before any route
    runs (a malformed request line, header or chunk) with the JSON error object too."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer
        return server
