"""Admin API for data_sync_status under /admin/v1/sync: reports (one or a batch), reads,
summary, the incremental change feed, retry and conflict resolution.

Partner keys may report and read the feed for their own external system only; internal
services report for any system of their tenant.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from gateway.audit import audit
from gateway.auth.keys import ApiKey, Role
from gateway.errors import ClientError, Conflict, Invalid, NotFound
from gateway.sync import store
from gateway.sync.model import EntityKey, Outcome, Report, Side, Status
from gateway.sync.recorder import count_outcomes
from gateway.sync.shapes import (
    FEED_CURSOR,
    FEED_READERS,
    MAX_BATCH_BYTES,
    OPERATORS,
    PREFIX,
    READERS,
    REPORTERS,
    FeedQuery,
    PartnerBatch,
    PartnerFeedQuery,
    PartnerReport,
    ReportBatch,
    Resolution,
    StatusQuery,
    SyncReport,
)
from gateway.web.contract import decode, read_body, read_json_bytes, read_query
from gateway.web.http import POOL, actor, endpoint, parse_uuid
from gateway.web.pagination import (
    Keyset,
    TimeKeyset,
    decode_cursor,
    decode_time_cursor,
    encode_cursor,
)
from gateway.web.sql import Where


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


def parse_report(body: SyncReport, key: ApiKey, where: str = "") -> Report:
    """One checked report as the store's Report; ``where`` prefixes messages."""
    return Report(
        key=EntityKey(body.entity_type, body.entity_id, _system(body, key, where), body.direction),
        status=Status(body.status),
        side=body.side or (Side.EXTERNAL if key.role is Role.PARTNER else Side.INTERNAL),
        version=None if body.version is None else int(body.version),
        error=body.error,
    )


def _system(body: SyncReport, key: ApiKey, where: str) -> str:
    if key.role is not Role.PARTNER:
        return body.external_system
    if body.external_system not in ("", key.external_system):
        raise Invalid(
            f"{where}a partner key reports for its own external system only",
            code="invalid_field",
        )
    assert key.external_system is not None
    return key.external_system


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
    shape = PartnerReport if key.role is Role.PARTNER else SyncReport
    report = parse_report(await read_body(request, shape), key)
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
    data = await read_json_bytes(request, MAX_BATCH_BYTES)
    items: Sequence[SyncReport]
    if key.role is Role.PARTNER:
        items = decode(data, PartnerBatch).reports
    else:
        items = decode(data, ReportBatch).reports
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


def _filters(query: StatusQuery, tenant_id: uuid.UUID, keyset: TimeKeyset) -> Where:
    w = Where()
    w.add("tenant_id = {}", tenant_id)
    w.add("deleted_at IS NULL")
    for name in ("direction", "status", "entity_type", "external_system", "entity_id"):
        value = getattr(query, name)
        if value is not None:
            w.add(f"{name} = {{}}", value)
    if query.older_than_seconds is not None:
        since = datetime.now(UTC) - timedelta(seconds=query.older_than_seconds)
        w.add("unsynced_since <= {}", since)
    if query.due:
        w.add("next_retry_at <= {}", datetime.now(UTC))
    before = keyset.after()
    if before is not None:
        w.add("(created_at, id) < ({}, {})", *before)
    return w


@endpoint(READERS)
async def list_status(request: web.Request, key: ApiKey) -> Any:
    query = read_query(request, StatusQuery)
    keyset = Keyset.of(query.limit, query.cursor, decode_time_cursor)
    w = _filters(query, key.tenant_id, keyset)
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
    query = read_query(request, PartnerFeedQuery if key.role is Role.PARTNER else FeedQuery)
    keyset = Keyset.of(query.limit, query.cursor, _feed_cursor)
    system = query.external_system
    if key.role is Role.PARTNER:
        if system not in ("", key.external_system):
            raise ClientError("a partner key reads its own external system only", code="bad_query")
        system = key.external_system or ""
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
    xid, kind, row_id = decode_cursor(raw, _FEED_CURSOR)
    return int(xid), kind, uuid.UUID(row_id)


_FEED_CURSOR = re.compile(FEED_CURSOR)


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
    body = await read_body(request, Resolution)
    return await _change(request, key, "resolve", body.side)
