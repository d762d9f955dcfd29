"""The api_logs search endpoints: GET /admin/v1/logs (filtered, keyset-paged, newest
first) and GET /admin/v1/logs/{id}, scoped to the caller's tenant."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp import web

from gateway.auth.keys import ApiKey, Role
from gateway.errors import ClientError, NotFound
from gateway.web.http import (
    LOGS_POOL,
    PREFIX,
    endpoint,
    parse_uuid,
    query_int,
    query_json,
    query_str,
    query_time,
    query_uuid,
)
from gateway.web.pagination import TimeKeyset, newest_first
from gateway.web.sql import Where

DEFAULT_WINDOW = timedelta(hours=24)  # log search without 'from' looks this far back
MAX_WINDOW = timedelta(days=31)  # a search never spans more partitions than this
LOG_READERS = (Role.ADMIN, Role.VIEWER)


def setup(app: web.Application) -> None:
    """Register the log search endpoints (api_logs' pool: ``web.http.bind``)."""
    app.router.add_get(f"{PREFIX}/logs", search_logs)
    app.router.add_get(f"{PREFIX}/logs/{{log_id}}", get_log)


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


def _log_filters(request: web.Request, tenant_id: uuid.UUID, keyset: TimeKeyset) -> Where:
    start, end = _time_window(request)
    w = Where()
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
    before = keyset.after()
    if before is not None:
        w.add("(created_at, id) < ({}, {})", *before)
    return w


def _status_filters(request: web.Request, w: Where) -> None:
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
    keyset = newest_first(request)
    w = _log_filters(request, key.tenant_id, keyset)
    sql = (
        f"SELECT {LOG_SUMMARY} FROM api_logs WHERE {w.sql} "
        f"ORDER BY created_at DESC, id DESC LIMIT {keyset.fetch}"
    )
    async with request.app[LOGS_POOL].acquire() as conn:
        rows = await conn.fetch(sql, *w.args)
    return keyset.page(rows, _log_json, lambda r: (r["created_at"], r["id"]))


@endpoint(LOG_READERS)
async def get_log(request: web.Request, key: ApiKey) -> Any:
    log_id = parse_uuid(request.match_info["log_id"], "log entry")
    if log_id.version != 7:
        raise NotFound(f"no log entry {log_id}")
    # UUIDv7: the id's time part is created_at, so only one or two partitions are read.
    at = datetime.fromtimestamp((log_id.int >> 80) / 1000.0, UTC)
    async with request.app[LOGS_POOL].acquire() as conn:
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
