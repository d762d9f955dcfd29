"""Admin API for data_sync_status under /admin/v1/sync: reports (one or a batch), reads,
summary, the incremental change feed, retry and conflict resolution.

Partner keys may report and read the feed for their own external system only; internal
services report for any system of their tenant.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from gateway.audit import audit
from gateway.auth.keys import ApiKey, Role
from gateway.errors import ClientError, Conflict, Invalid, NotFound
from gateway.names import NAME_RE
from gateway.sync import store
from gateway.sync.model import (
    MAX_ERROR_CHARS,
    Direction,
    EntityKey,
    Outcome,
    Report,
    Side,
    Status,
)
from gateway.sync.recorder import count_outcomes
from gateway.web.http import (
    POOL,
    actor,
    check_fields,
    endpoint,
    field,
    parse_uuid,
    query_int,
    query_str,
    query_uuid,
    read_json_object,
)
from gateway.web.pagination import (
    Keyset,
    TimeKeyset,
    bad_cursor,
    decode_cursor,
    encode_cursor,
    newest_first,
)
from gateway.web.sql import Where

PREFIX = "/admin/v1/sync"
MAX_VERSION = 2**63 - 1  # versions are bigint
FEED_LIMIT = 100  # changes one feed page shows when the caller gives no limit
MAX_FEED_LIMIT = 1000
MAX_BATCH = 20_000  # reports in one batch call
MAX_BATCH_BYTES = 16 * 1024 * 1024  # body of one batch call
READERS = (Role.ADMIN, Role.VIEWER, Role.SERVICE)
REPORTERS = (Role.ADMIN, Role.SERVICE, Role.PARTNER)
OPERATORS = (Role.ADMIN, Role.SERVICE)
FEED_READERS = (Role.ADMIN, Role.VIEWER, Role.SERVICE, Role.PARTNER)
REPORT_FIELDS = frozenset(
    {
        "entity_type",
        "entity_id",
        "external_system",
        "direction",
        "status",
        "version",
        "side",
        "error",
    }
)
REPORTABLE = frozenset(s.value for s in Status if s is not Status.CONFLICT)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_post(f"{PREFIX}/reports", report_one)
    r.add_post(f"{PREFIX}/reports/batch", report_batch)
    r.add_get(f"{PREFIX}/status", list_status)
    r.add_get(f"{PREFIX}/status/{{sync_id}}", get_status)
    r.add_post(f"{PREFIX}/status/{{sync_id}}/retry", retry_status)
    r.add_post(f"{PREFIX}/status/{{sync_id}}/resolve", resolve_status)
    r.add_get(f"{PREFIX}/summary", get_summary)
    r.add_get(f"{PREFIX}/changes", list_changes)


# -- input -------------------------------------------------------------------------------


def _name(body: Mapping[str, Any], name: str, where: str) -> str:
    value = field(body, name, str, nullable=False)
    if value is None:
        raise Invalid(f"{where}field {name!r} is required", code="missing_field")
    if not NAME_RE.match(value):
        raise Invalid(f"{where}field {name!r} must match {NAME_RE.pattern}", code="invalid_field")
    return str(value)


def _enum(body: Mapping[str, Any], name: str, allowed: frozenset[str], where: str) -> str:
    value = field(body, name, str, nullable=False)
    if value not in allowed:
        raise Invalid(
            f"{where}field {name!r} must be one of {', '.join(sorted(allowed))}",
            code="invalid_field",
        )
    return str(value)


def parse_report(body: Any, key: ApiKey, where: str = "") -> Report:
    """One report from JSON; ``where`` prefixes messages (e.g. 'reports[12]: ')."""
    if not isinstance(body, dict):
        raise Invalid(f"{where}a report must be a JSON object", code="invalid_field")
    check_fields(body, REPORT_FIELDS, ("entity_type", "entity_id", "direction", "status"))
    raw_id = field(body, "entity_id", str, nullable=False)
    try:
        entity_id = uuid.UUID(raw_id)
    except (ValueError, TypeError):
        raise Invalid(f"{where}field 'entity_id' must be a UUID", code="invalid_field") from None
    version = field(body, "version", int)
    if version is not None and not 0 <= version <= MAX_VERSION:
        raise Invalid(f"{where}field 'version' must be in [0, 2^63-1]", code="invalid_field")
    error = field(body, "error", str)
    if error is not None and len(error) > MAX_ERROR_CHARS:
        raise Invalid(f"{where}field 'error' is too long", code="invalid_field")
    return Report(
        key=EntityKey(
            _name(body, "entity_type", where),
            entity_id,
            _system(body, key, where),
            Direction(_enum(body, "direction", frozenset(d.value for d in Direction), where)),
        ),
        status=Status(_enum(body, "status", REPORTABLE, where)),
        side=_side(body, key, where),
        version=version,
        error=error,
    )


def _system(body: Mapping[str, Any], key: ApiKey, where: str) -> str:
    if key.role is not Role.PARTNER:
        return _name(body, "external_system", where)
    given = body.get("external_system")
    if given is not None and given != key.external_system:
        raise Invalid(
            f"{where}a partner key reports for its own external system only",
            code="invalid_field",
        )
    assert key.external_system is not None
    return key.external_system


def _side(body: Mapping[str, Any], key: ApiKey, where: str) -> Side:
    if "side" not in body or body["side"] is None:
        return Side.EXTERNAL if key.role is Role.PARTNER else Side.INTERNAL
    return Side(_enum(body, "side", frozenset(s.value for s in Side), where))


# -- output ------------------------------------------------------------------------------


def row_json(row: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, datetime):
            out[k] = v.isoformat()
        elif isinstance(v, uuid.UUID):
            out[k] = str(v)
        else:
            out[k] = v
    out.pop("change_xid", None)
    out.pop("deleted_at", None)
    return out


# -- reports -----------------------------------------------------------------------------


async def _apply(request: web.Request, key: ApiKey, reports: list[Report]) -> list[store.Applied]:
    async with request.app[POOL].acquire() as conn:
        applied = await store.apply_reports(conn, key.tenant_id, reports, datetime.now(UTC))
    count_outcomes("api", reports, applied)
    return applied


@endpoint(REPORTERS)
async def report_one(request: web.Request, key: ApiKey) -> Any:
    report = parse_report(await read_json_object(request), key)
    (result,) = await _apply(request, key, [report])
    async with request.app[POOL].acquire() as conn:
        row = await store.get(conn, key.tenant_id, result.row_id)
    assert row is not None
    if result.outcome is Outcome.STALE:
        raise Conflict(
            f"version {report.version} is older than the version already synced ({row['version']})",
            code="stale_version",
        )
    if result.outcome is Outcome.CONFLICT:
        raise Conflict(
            f"sync conflict on {report.key.entity_type} {report.key.entity_id}: "
            f"{row['error_message'] or 'resolve it first'} (status id {row['id']})",
            code="sync_conflict",
        )
    return {"outcome": result.outcome.value, "status": row_json(row)}


@endpoint(REPORTERS)
async def report_batch(request: web.Request, key: ApiKey) -> Any:
    body = await read_json_object(request, MAX_BATCH_BYTES)
    check_fields(body, {"reports"}, {"reports"})
    items = field(body, "reports", list, nullable=False)
    if not 1 <= len(items) <= MAX_BATCH:
        raise Invalid(f"'reports' must hold 1 to {MAX_BATCH} reports", code="invalid_field")
    reports = [parse_report(item, key, f"reports[{i}]: ") for i, item in enumerate(items)]
    applied = await _apply(request, key, reports)
    counts = {o.value: 0 for o in Outcome}
    refused = []
    for i, result in enumerate(applied):
        counts[result.outcome.value] += 1
        if result.outcome in (Outcome.STALE, Outcome.CONFLICT):
            refused.append({"index": i, "outcome": result.outcome.value, "id": str(result.row_id)})
    return {"received": len(reports), "outcomes": counts, "refused": refused}


# -- reads -------------------------------------------------------------------------------


def _filters(request: web.Request, tenant_id: uuid.UUID, keyset: TimeKeyset) -> Where:
    w = Where()
    w.add("tenant_id = {}", tenant_id)
    w.add("deleted_at IS NULL")
    for name, allowed in (
        ("direction", frozenset(d.value for d in Direction)),
        ("status", frozenset(s.value for s in Status)),
    ):
        value = query_str(request, name)
        if value is not None:
            if value not in allowed:
                raise ClientError(
                    f"{name} must be one of {', '.join(sorted(allowed))}", code="bad_query"
                )
            w.add(f"{name} = {{}}", value)
    for name in ("entity_type", "external_system"):
        value = query_str(request, name, 63)
        if value is not None:
            w.add(f"{name} = {{}}", value)
    entity_id = query_uuid(request, "entity_id")
    if entity_id is not None:
        w.add("entity_id = {}", entity_id)
    older = query_int(request, "older_than_seconds", None, 0, 10 * 365 * 86400)
    if older is not None:
        w.add("unsynced_since <= {}", datetime.now(UTC) - timedelta(seconds=older))
    if request.query.get("due") == "true":
        w.add("next_retry_at <= {}", datetime.now(UTC))
    before = keyset.after()
    if before is not None:
        w.add("(created_at, id) < ({}, {})", *before)
    return w


@endpoint(READERS)
async def list_status(request: web.Request, key: ApiKey) -> Any:
    keyset = newest_first(request)
    w = _filters(request, key.tenant_id, keyset)
    async with request.app[POOL].acquire() as conn:
        rows = await conn.fetch(
            f"SELECT {store.COLUMNS} FROM data_sync_status WHERE {w.sql} "
            f"ORDER BY created_at DESC, id DESC LIMIT {keyset.fetch}",
            *w.args,
        )
    return keyset.page(rows, row_json, lambda r: (r["created_at"], r["id"]))


@endpoint(READERS)
async def get_status(request: web.Request, key: ApiKey) -> Any:
    sync_id = parse_uuid(request.match_info["sync_id"], "sync status")
    async with request.app[POOL].acquire() as conn:
        row = await store.get(conn, key.tenant_id, sync_id)
    if row is None:
        raise NotFound(f"no sync status {sync_id}")
    return row_json(row)


@endpoint(READERS)
async def get_summary(request: web.Request, key: ApiKey) -> Any:
    async with request.app[POOL].acquire() as conn:
        rows = await store.summary(conn, key.tenant_id)
    return {"items": [row_json(r) for r in rows]}


@endpoint(FEED_READERS)
async def list_changes(request: web.Request, key: ApiKey) -> Any:
    keyset = Keyset(request, _feed_cursor, FEED_LIMIT, MAX_FEED_LIMIT)
    system = query_str(request, "external_system", 63)
    if key.role is Role.PARTNER:
        if system not in (None, key.external_system):
            raise ClientError("a partner key reads its own external system only", code="bad_query")
        system = key.external_system
    if system is None:
        raise ClientError("query parameter 'external_system' is required", code="bad_query")
    after = keyset.after()
    async with request.app[POOL].acquire() as conn:
        found = await store.changes(conn, key.tenant_id, system, after, keyset.limit)
    if found:
        kind, last = found[-1]
        after = (int(last["change_xid"]), kind, last["id"])
    next_cursor = encode_cursor(*after) if after is not None else None
    items = [
        {
            **row_json(r),
            "kind": kind,
            "change": r["change_xid"],
            "deleted": r["deleted_at"] is not None,
        }
        for kind, r in found
    ]
    return {"items": items, "next_cursor": next_cursor}


def _feed_cursor(raw: str) -> store.FeedCursor:
    xid, kind, row_id = decode_cursor(raw, 3)
    try:
        value = int(xid)
        if not 0 <= value <= MAX_VERSION or kind not in store.FEED_KINDS:
            raise ValueError(xid)
        return value, kind, uuid.UUID(row_id)
    except ValueError:
        raise bad_cursor() from None


# -- operations --------------------------------------------------------------------------


async def _change(
    request: web.Request, key: ApiKey, action: str, side: Side | None = None
) -> dict[str, Any]:
    sync_id = parse_uuid(request.match_info["sync_id"], "sync status")
    async with request.app[POOL].acquire() as conn:
        try:
            changed = await store.change_one(
                conn, key.tenant_id, sync_id, action, datetime.now(UTC), side
            )
        except ValueError as exc:
            raise Conflict(str(exc), code="invalid_state") from None
        if changed is None:
            raise NotFound(f"no sync status {sync_id}")
        row, _ = changed
        await audit(
            conn,
            actor=actor(key),
            actor_key_id=key.id,
            tenant_id=key.tenant_id,
            action=f"sync.{action}",
            object_type="data_sync_status",
            object_id=str(sync_id),
            after={"status": row["status"], "side": side.value if side else None},
        )
    return row_json(row)


@endpoint(OPERATORS)
async def retry_status(request: web.Request, key: ApiKey) -> Any:
    return await _change(request, key, "retry")


@endpoint(OPERATORS)
async def resolve_status(request: web.Request, key: ApiKey) -> Any:
    body = await read_json_object(request)
    check_fields(body, {"side"}, {"side"})
    side = Side(_enum(body, "side", frozenset(s.value for s in Side), ""))
    return await _change(request, key, "resolve", side)
