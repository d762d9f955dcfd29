"""The api_logs search endpoints: GET /admin/v1/logs (filtered, keyset-paged, newest
first) and GET /admin/v1/logs/{id}, scoped to the caller's tenant."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp import web

from gateway.auth.keys import ApiKey
from gateway.capture.shapes import DEFAULT_WINDOW, LOG_READERS, MAX_WINDOW, LogQuery
from gateway.errors import NotFound
from gateway.web.contract import in_utc, parse_json, read_query
from gateway.web.http import LOGS_POOL, PREFIX, endpoint, parse_uuid
from gateway.web.pagination import Keyset, TimeKeyset, decode_time_cursor
from gateway.web.sql import Where


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


def _time_window(query: LogQuery) -> tuple[datetime, datetime]:
    """[from, to): at most MAX_WINDOW, ending at 'to' (the answer names the window)."""

    def back(d: datetime, by: timedelta) -> datetime:
        # a 'to' in the year 1 has no earlier day: the window starts at the first instant
        try:
            return d - by
        except OverflowError:
            return datetime.min.replace(tzinfo=UTC)

    end = in_utc(query.to) if query.to else datetime.now(UTC)
    start = in_utc(query.from_) if query.from_ else back(end, DEFAULT_WINDOW)
    return max(start, back(end, MAX_WINDOW)), end


STATUS_CLASSES = {"1xx": 100, "2xx": 200, "3xx": 300, "4xx": 400, "5xx": 500}


def _log_filters(
    query: LogQuery, tenant_id: uuid.UUID, window: tuple[datetime, datetime], keyset: TimeKeyset
) -> Where:
    w = Where()
    w.add("tenant_id = {}", tenant_id)
    w.add("created_at >= {}", window[0])
    w.add("created_at < {}", window[1])
    for name in ("route", "request_id", "external_system"):
        value = getattr(query, name)
        if value is not None:
            w.add(f"{name} = {{}}", value)
    if query.method is not None:
        w.add("method = {}", query.method.upper())
    if query.path_prefix is not None:
        prefix = query.path_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        w.add("path LIKE {} || '%'", prefix)
    if query.key_id is not None:
        w.add("api_key_id = {}", query.key_id)
    _status_filters(query, w)
    for name, column in (
        ("request_body_contains", "request_body"),
        ("response_body_contains", "response_body"),
    ):
        value = parse_json(getattr(query, name), name)
        if value is not None:
            w.add(f"{column} @> {{}}", value)
    before = keyset.after()
    if before is not None:
        w.add("(created_at, id) < ({}, {})", *before)
    return w


def _status_filters(query: LogQuery, w: Where) -> None:
    if query.status is not None:
        w.add("status = {}", query.status)
    if query.status_class is not None:
        base = STATUS_CLASSES[query.status_class]
        w.add("status >= {} AND status < {}", base, base + 100)


@endpoint(LOG_READERS)
async def search_logs(request: web.Request, key: ApiKey) -> Any:
    query = read_query(request, LogQuery)
    keyset = Keyset.of(query.limit, query.cursor, decode_time_cursor)
    window = _time_window(query)
    w = _log_filters(query, key.tenant_id, window, keyset)
    sql = (
        f"SELECT {LOG_SUMMARY} FROM api_logs WHERE {w.sql} "
        f"ORDER BY created_at DESC, id DESC LIMIT {keyset.fetch}"
    )
    async with request.app[LOGS_POOL].acquire() as conn:
        rows = await conn.fetch(sql, *w.args)
    page = keyset.page(rows, _log_json, lambda r: (r["created_at"], r["id"]))
    return {**page, "from": window[0].isoformat(), "to": window[1].isoformat()}


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
