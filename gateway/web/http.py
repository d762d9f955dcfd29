"""Plumbing of the admin API: the endpoint decorator (auth, roles, JSON errors) and 405 for
a method an admin path does not serve. Every endpoint reads its input through
gateway.web.contract."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Protocol

import asyncpg
from aiohttp import web

from gateway import metrics
from gateway.auth.authenticator import Authenticator, refuse
from gateway.auth.keys import ApiKey, Role
from gateway.db.pool import json_dumps
from gateway.errors import (
    ClientError,
    Forbidden,
    GatewayError,
    MethodNotAllowed,
    NotFound,
    ServiceUnavailable,
)
from gateway.web.responses import error_response

log = logging.getLogger(__name__)

PREFIX = "/admin/v1"
POOL = web.AppKey("admin_pool", asyncpg.Pool)  # the pool every admin endpoint uses
LOGS_POOL = web.AppKey("admin_logs_pool", asyncpg.Pool)  # api_logs' (GATEWAY_LOGS_DATABASE_URL)
ANY_ADMIN_ROLE = (Role.ADMIN, Role.VIEWER, Role.SERVICE)
AUTHENTICATOR = web.AppKey("admin_authenticator", Authenticator)

# What a database that is down, restarting or unreachable raises through asyncpg.
DATABASE_DOWN = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
)

KeyHandler = Callable[[web.Request, ApiKey], Awaitable[Any]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CALLER = web.RequestKey("admin_caller", object)  # the authenticated ApiKey, set by endpoint
LOGGED: set[Callable[..., Any]] = set()  # every wrapped handler (a test checks all routes)


class CallLogger(Protocol):
    """Writes an api_logs row for each admin call (gateway.proxy.calllog.CallLog)."""

    async def run(self, request: web.Request, handler: Handler) -> web.StreamResponse: ...


CALL_LOG = web.AppKey("admin_call_log", CallLogger)


def logged(handler: Handler) -> Handler:
    """``handler`` with an api_logs row per call (once the application has a call log)."""

    async def call(request: web.Request) -> web.StreamResponse:
        calls = request.app.get(CALL_LOG)
        if calls is None:
            return await handler(request)
        return await calls.run(request, handler)

    call.__name__ = handler.__name__
    LOGGED.add(call)
    return call


def bind(
    pool_key: web.AppKey[asyncpg.Pool],
    auth_key: web.AppKey[Authenticator],
    logs_pool_key: web.AppKey[asyncpg.Pool] | None = None,
) -> Any:
    """A cleanup_ctx step giving the admin endpoints the app's pools and authenticator
    (the logs pool: api_logs' database, the main pool when not given)."""

    async def ctx(app: web.Application) -> Any:
        app[POOL] = app[pool_key]
        app[LOGS_POOL] = app[logs_pool_key if logs_pool_key is not None else pool_key]
        app[AUTHENTICATOR] = app[auth_key]
        yield

    return ctx


def actor(key: ApiKey) -> str:
    """How the audit trail names a key."""
    return f"key:{key.id}"


def endpoint(roles: Collection[Role], status: int = 200) -> Callable[[KeyHandler], Any]:
    """Authenticate the caller, check its role, answer JSON; errors become JSON with a code;
    each call is logged (route ``admin``, bodies omitted)."""

    def wrap(handler: KeyHandler) -> Handler:
        async def run(request: web.Request) -> web.StreamResponse:
            try:
                key = await request.app[AUTHENTICATOR].authenticate(request.headers)
                request[CALLER] = key  # the call's api_logs row names tenant and key
                if key.role not in roles:
                    allowed = ", ".join(sorted(r.value for r in roles))
                    raise refuse(
                        "forbidden", Forbidden(f"this endpoint needs one of the roles: {allowed}")
                    )
                result = await handler(request, key)
            except GatewayError as exc:
                return error_response(exc, request.headers.get("X-Request-Id"))
            except DATABASE_DOWN as exc:
                # A database that is down or unreachable: the documented 503, not a 500.
                log.warning("admin API: database unavailable: %s", type(exc).__name__)
                down = ServiceUnavailable("database unavailable", code="database_unavailable")
                return error_response(down, request.headers.get("X-Request-Id"))
            except asyncpg.DataError as exc:
                # Safety net: a client value PostgreSQL cannot take is the client's error.
                log.info("admin API: value refused by PostgreSQL: %s", type(exc).__name__)
                bad = ClientError("a value in the request cannot be used", code="invalid_input")
                return error_response(bad, None)
            except Exception:
                log.exception("admin API error on %s %s", request.method, request.path)
                return error_response(GatewayError("internal error"), None)
            if isinstance(result, web.StreamResponse):
                return result
            return web.Response(
                body=json_dumps(result), status=status, content_type="application/json"
            )

        run.__name__ = handler.__name__
        return logged(run)  # an api_logs row per call (CALL_LOG, below)

    return wrap


def refuse_other_methods(app: web.Application) -> None:
    """A method an admin path does not serve answers 405 with ``Allow`` (JSON, like every
    admin error), not the proxy's 404: call after every admin route is added."""
    for resource in app.router.resources():
        path = resource.canonical
        if not path.startswith(PREFIX):
            continue
        methods = sorted({route.method for route in resource} - {"*"})
        if not methods:
            continue
        refused = MethodNotAllowed(f"{path} allows {', '.join(methods)}", tuple(methods))

        async def not_allowed(
            request: web.Request, refused: MethodNotAllowed = refused
        ) -> web.StreamResponse:
            return error_response(refused, request.headers.get("X-Request-Id"))

        resource.add_route("*", logged(not_allowed))  # type: ignore[attr-defined]


def parse_uuid(raw: str, what: str = "id") -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound(f"no {what} {raw[:64]!r}") from None


__all__ = ["metrics"]
