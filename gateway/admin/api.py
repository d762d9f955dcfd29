"""The admin REST API under /admin/v1: tenant, keys, log search, audit trail.

Every query is scoped to the caller's tenant; a key of tenant A can never name an object
of tenant B (such ids answer 404, exactly like ids that do not exist).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from gateway.admin import keys
from gateway.admin.auth import Authenticator
from gateway.admin.calllog import logged
from gateway.admin.http import (
    AUTHENTICATOR,
    Conflict,
    Invalid,
    NotFound,
    check_fields,
    decode_cursor,
    decode_time_cursor,
    encode_cursor,
    endpoint,
    field,
    parse_uuid,
    query_int,
    query_json,
    query_str,
    query_time,
    query_uuid,
    read_json_object,
)
from gateway.admin.keys import ApiKey, Role
from gateway.admin.openapi import document
from gateway.errors import ClientError

PREFIX = "/admin/v1"
POOL = web.AppKey("admin_pool", asyncpg.Pool)
DEFAULT_WINDOW = timedelta(hours=24)  # log search without 'from' looks this far back
MAX_WINDOW = timedelta(days=31)  # a search never spans more partitions than this
ANY_ADMIN_ROLE = (Role.ADMIN, Role.VIEWER, Role.SERVICE)
LOG_READERS = (Role.ADMIN, Role.VIEWER)


def setup(app: web.Application, pool_key: Any, auth_key: Any) -> None:
    """Register the admin routes on ``app``; pool and authenticator come from its cleanup_ctx."""
    r = app.router
    r.add_get(f"{PREFIX}/openapi.json", logged(openapi_json))
    r.add_get(f"{PREFIX}/tenant", get_tenant)
    r.add_patch(f"{PREFIX}/tenant", patch_tenant)
    r.add_get(f"{PREFIX}/keys", list_keys)
    r.add_post(f"{PREFIX}/keys", create_key)
    r.add_get(f"{PREFIX}/keys/{{key_id}}", get_key)
    r.add_delete(f"{PREFIX}/keys/{{key_id}}", revoke_key)
    r.add_get(f"{PREFIX}/logs", search_logs)
    r.add_get(f"{PREFIX}/logs/{{log_id}}", get_log)
    r.add_get(f"{PREFIX}/audit", list_audit)
    app.cleanup_ctx.append(_bind(pool_key, auth_key))


def _bind(pool_key: Any, auth_key: Any) -> Any:
    async def ctx(app: web.Application) -> Any:
        app[POOL] = app[pool_key]
        auth: Authenticator = app[auth_key]
        app[AUTHENTICATOR] = auth
        yield

    return ctx


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(document()), content_type="application/json")


def actor(key: ApiKey) -> str:
    return f"key:{key.id}"


# -- tenant ------------------------------------------------------------------------------


@endpoint(ANY_ADMIN_ROLE)
async def get_tenant(request: web.Request, key: ApiKey) -> Any:
    async with request.app[POOL].acquire() as conn:
        tenant = await keys.find_tenant(conn, str(key.tenant_id))
    if tenant is None:
        raise NotFound("tenant not found")
    return tenant.public()


@endpoint([Role.ADMIN])
async def patch_tenant(request: web.Request, key: ApiKey) -> Any:
    body = await read_json_object(request)
    check_fields(body, {"name"}, {"name"})
    name = field(body, "name", str, nullable=False)
    if not 1 <= len(name.strip()) <= 200:
        raise Invalid("field 'name' must be 1 to 200 characters", code="invalid_field")
    async with request.app[POOL].acquire() as conn:
        try:
            tenant = await keys.rename_tenant(conn, key.tenant_id, name, actor(key), key.id)
        except keys.KeyStoreError as exc:
            raise Conflict(str(exc)) from None
    return tenant.public()


# -- keys --------------------------------------------------------------------------------


@endpoint([Role.ADMIN])
async def list_keys(request: web.Request, key: ApiKey) -> Any:
    async with request.app[POOL].acquire() as conn:
        found = await keys.list_keys(conn, key.tenant_id)
    return {"items": [k.public() for k in found]}


@endpoint([Role.ADMIN], status=201)
async def create_key(request: web.Request, key: ApiKey) -> Any:
    body = await read_json_object(request)
    allowed = {"name", "role", "external_system", "rate_limit_per_minute", "expires_in_days"}
    check_fields(body, allowed, {"role"})
    role = field(body, "role", str, nullable=False)
    name = field(body, "name", str) or ""
    system = field(body, "external_system", str)
    rate = field(body, "rate_limit_per_minute", int)
    days = field(body, "expires_in_days", int)
    if rate is not None and not 1 <= rate <= 1_000_000:
        raise Invalid("field 'rate_limit_per_minute' must be in [1, 1000000]", code="invalid_field")
    if days is not None and not 1 <= days <= 3650:
        raise Invalid("field 'expires_in_days' must be in [1, 3650]", code="invalid_field")
    if len(name) > 200:
        raise Invalid("field 'name' must be at most 200 characters", code="invalid_field")
    async with request.app[POOL].acquire() as conn:
        try:
            made, token = await keys.create_key(
                conn,
                key.tenant_id,
                role,
                actor=actor(key),
                actor_key_id=key.id,
                name=name,
                external_system=system,
                rate_limit_per_minute=rate,
                expires_in=timedelta(days=days) if days else None,
            )
        except keys.KeyStoreError as exc:
            raise Invalid(str(exc), code="invalid_field") from None
    return {**made.public(), "token": token}


@endpoint([Role.ADMIN])
async def get_key(request: web.Request, key: ApiKey) -> Any:
    key_id = parse_uuid(request.match_info["key_id"], "key")
    async with request.app[POOL].acquire() as conn:
        found = await keys.get_key(conn, key.tenant_id, key_id)
    if found is None:
        raise NotFound(f"no key {key_id}")
    return found.public()


@endpoint([Role.ADMIN])
async def revoke_key(request: web.Request, key: ApiKey) -> Any:
    key_id = parse_uuid(request.match_info["key_id"], "key")
    async with request.app[POOL].acquire() as conn:
        revoked = await keys.revoke_key(
            conn, key.tenant_id, key_id, actor=actor(key), actor_key_id=key.id
        )
    if revoked is None:
        raise NotFound(f"no key {key_id}")
    request.app[AUTHENTICATOR].forget(key_id)
    return revoked.public()


# -- logs --------------------------------------------------------------------------------

LOG_SUMMARY = (
    "id, created_at, request_id, route, upstream, method, path, query, status, duration_ms, "
    "upstream_ms, error_code, error_message, client_ip, user_agent, external_system, api_key_id"
)
LOG_DETAIL = (
    LOG_SUMMARY + ", request_headers, request_body, request_body_format, request_body_size, "
    "request_body_truncated, response_headers, response_body, response_body_format, "
    "response_body_size, response_body_truncated, translated"
)


def _log_json(row: asyncpg.Record) -> dict[str, Any]:
    out = dict(row)
    for k in ("id", "api_key_id", "client_ip"):
        if out.get(k) is not None:
            out[k] = str(out[k])
    out["created_at"] = row["created_at"].isoformat()
    return out


def _time_window(request: web.Request) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    start, end = query_time(request, "from"), query_time(request, "to")
    end = end or now
    start = start or end - DEFAULT_WINDOW
    if start >= end:
        raise ClientError("'from' must be before 'to'", code="bad_time_range")
    if end - start > MAX_WINDOW:
        raise ClientError(f"a search spans at most {MAX_WINDOW.days} days", code="bad_time_range")
    return start, end


STATUS_CLASSES = {"1xx": 100, "2xx": 200, "3xx": 300, "4xx": 400, "5xx": 500}


class _Where:
    """WHERE clauses with numbered parameters, built one filter at a time."""

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.args: list[Any] = []

    def add(self, sql: str, *values: Any) -> None:
        """``sql`` uses {} for each value, in order."""
        marks = []
        for v in values:
            self.args.append(v)
            marks.append(f"${len(self.args)}")
        self.clauses.append(sql.format(*marks))

    @property
    def sql(self) -> str:
        return " AND ".join(self.clauses)


def _log_filters(request: web.Request, tenant_id: uuid.UUID) -> _Where:
    start, end = _time_window(request)
    w = _Where()
    w.add("tenant_id = {}", tenant_id)
    w.add("created_at >= {}", start)
    w.add("created_at < {}", end)
    for name in ("route", "request_id", "external_system"):
        value = query_str(request, name)
        if value is not None:
            w.add(f"{name} = {{}}", value)
    method = query_str(request, "method")
    if method is not None:
        w.add("method = {}", method.upper())
    path_prefix = query_str(request, "path_prefix")
    if path_prefix is not None:
        prefix = path_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        w.add("path LIKE {} || '%'", prefix)
    key_id = query_uuid(request, "key_id")
    if key_id is not None:
        w.add("api_key_id = {}", key_id)
    _status_filters(request, w)
    for name, column in (
        ("request_body_contains", "request_body"),
        ("response_body_contains", "response_body"),
    ):
        value = query_json(request, name)
        if value is not None:
            w.add(f"{column} @> {{}}", value)
    cursor = request.query.get("cursor")
    if cursor is not None:
        w.add("(created_at, id) < ({}, {})", *decode_time_cursor(cursor))
    return w


def _status_filters(request: web.Request, w: _Where) -> None:
    status = query_int(request, "status", None, 100, 599)
    if status is not None:
        w.add("status = {}", status)
    if "status_class" in request.query:
        base = STATUS_CLASSES.get(request.query["status_class"])
        if base is None:
            raise ClientError("status_class must be one of 1xx..5xx", code="bad_query")
        w.add("status >= {} AND status < {}", base, base + 100)


@endpoint(LOG_READERS)
async def search_logs(request: web.Request, key: ApiKey) -> Any:
    limit = query_int(request, "limit", 50, 1, 500)
    assert limit is not None
    w = _log_filters(request, key.tenant_id)
    sql = (
        f"SELECT {LOG_SUMMARY} FROM api_logs WHERE {w.sql} "
        f"ORDER BY created_at DESC, id DESC LIMIT {limit + 1}"
    )
    async with request.app[POOL].acquire() as conn:
        rows = await conn.fetch(sql, *w.args)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = (
        encode_cursor(rows[-1]["created_at"].isoformat(), rows[-1]["id"]) if more else None
    )
    return {"items": [_log_json(r) for r in rows], "next_cursor": next_cursor}


@endpoint(LOG_READERS)
async def get_log(request: web.Request, key: ApiKey) -> Any:
    log_id = parse_uuid(request.match_info["log_id"], "log entry")
    if log_id.version != 7:
        raise NotFound(f"no log entry {log_id}")
    # UUIDv7: the id's time part is created_at, so only one or two partitions are read.
    at = datetime.fromtimestamp((log_id.int >> 80) / 1000.0, UTC)
    async with request.app[POOL].acquire() as conn:
        row = await conn.fetchrow(
            f"""SELECT {LOG_DETAIL} FROM api_logs WHERE id = $1 AND tenant_id = $2
                AND created_at >= $3 AND created_at < $4""",
            log_id,
            key.tenant_id,
            at - timedelta(seconds=1),
            at + timedelta(seconds=1),
        )
    if row is None:
        raise NotFound(f"no log entry {log_id}")
    return _log_json(row)


# -- audit -------------------------------------------------------------------------------


@endpoint([Role.ADMIN])
async def list_audit(request: web.Request, key: ApiKey) -> Any:
    limit = query_int(request, "limit", 50, 1, 500)
    assert limit is not None
    w = _Where()
    w.add("tenant_id = {}", key.tenant_id)
    for name in ("action", "object_type"):
        value = query_str(request, name)
        if value is not None:
            w.add(f"{name} = {{}}", value)
    cursor = request.query.get("cursor")
    if cursor is not None:
        (raw,) = decode_cursor(cursor, 1)
        if not raw.isdigit() or len(raw) > 18:
            raise ClientError("cursor is not valid", code="bad_cursor")
        w.add("id < {}", int(raw))
    async with request.app[POOL].acquire() as conn:
        rows = await conn.fetch(
            f"""SELECT id, at, actor, action, object_type, object_id, before, after
                FROM audit_log WHERE {w.sql} ORDER BY id DESC LIMIT {limit + 1}""",
            *w.args,
        )
    more = len(rows) > limit
    rows = rows[:limit]
    items = [{**dict(r), "at": r["at"].isoformat()} for r in rows]
    return {"items": items, "next_cursor": encode_cursor(rows[-1]["id"]) if more else None}
