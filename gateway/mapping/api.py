"""Admin API for integration_mappings under /admin/v1/mappings (documented in
gateway.admin.openapi). Same conventions as gateway.admin.api: roles, tenant scoping,
JSON errors with a stable code, audit rows for every change.

``configuration.credentials`` (any JSON value) is encrypted with the SecretBox on the way in
and shown as "[ENCRYPTED]" on the way out.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from aiohttp import web

from gateway.auth.keys import ApiKey
from gateway.crypto import SecretBox
from gateway.db.pool import json_dumps
from gateway.errors import ClientError, Invalid, NotFound, PayloadTooLarge, ServiceUnavailable
from gateway.mapping import importing, store
from gateway.mapping.flow import Mappings
from gateway.mapping.shapes import BASE, WRITERS, MappingChange, MappingQuery, NewMapping
from gateway.mapping.store import Actor, MappingConflict
from gateway.web.contract import (
    ANY_ROLE,
    decode,
    plain,
    read_body,
    read_bytes,
    read_json_bytes,
    read_query,
)
from gateway.web.http import actor, endpoint, parse_uuid
from gateway.web.pagination import Keyset, TimeKeyset, decode_time_cursor
from gateway.web.responses import json_response
from gateway.web.sql import Where

POOL = web.AppKey("mapping_pool", asyncpg.Pool)
BOX = web.AppKey("mapping_secrets", SecretBox)
MAPPINGS = web.AppKey("mapping_service", Mappings)
IMPORT_MAX_BYTES = 64 * 1024 * 1024  # one bulk import body
IMPORT_MAX_ROWS = 1_000_000
CSV_TYPES = frozenset({"text/csv"})
JSONL_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/json-lines",
    }
)


def setup(app: web.Application, pool_key: Any, box_key: Any, mappings_key: Any) -> None:
    """Register the mapping endpoints; pool, SecretBox and cache come from the app."""
    r = app.router
    r.add_get(BASE, list_mappings)
    r.add_post(BASE, create_mapping)
    r.add_post(f"{BASE}/import", import_mappings)
    r.add_get(f"{BASE}/{{mapping_id}}", get_mapping)
    r.add_patch(f"{BASE}/{{mapping_id}}", update_mapping)
    r.add_delete(f"{BASE}/{{mapping_id}}", delete_mapping)

    async def bind(app: web.Application) -> Any:
        app[POOL], app[BOX], app[MAPPINGS] = app[pool_key], app[box_key], app[mappings_key]
        yield

    app.cleanup_ctx.append(bind)


def _actor(key: ApiKey) -> Actor:
    return Actor(actor(key), key.id)


def conflict_response(exc: MappingConflict) -> web.Response:
    payload = {
        "code": "mapping_conflict",
        "message": str(exc),
        "conflicting": exc.existing.public() if exc.existing else None,
    }
    return json_response(payload, 409)


# -- input ------------------------------------------------------------------------------

KEEP = object()  # PATCH: leave the stored credentials as they are


def _configuration(config: dict[str, Any], box: SecretBox) -> tuple[dict[str, Any], Any]:
    """The configuration without credentials, and what to store as credentials: a
    SecretBox token, None (no credentials), or KEEP (absent, or the "[ENCRYPTED]"
    placeholder an earlier answer showed: the stored ones stay)."""
    config = dict(config)
    if "credentials" not in config or config["credentials"] == store.ENCRYPTED:
        config.pop("credentials", None)
        return config, KEEP
    secret = config.pop("credentials")
    return config, None if secret is None else box.encrypt(json_dumps(secret).decode())


def parse_new_mapping(data: bytes) -> NewMapping:
    """A POST /mappings body, checked (bench/admin_validation.py times this)."""
    return decode(data, NewMapping)


# -- endpoints ------------------------------------------------------------------------------


@endpoint(WRITERS, status=201)
async def create_mapping(request: web.Request, key: ApiKey) -> Any:
    body = parse_new_mapping(await read_json_bytes(request))
    config, credentials = _configuration(body.configuration, request.app[BOX])
    credentials = None if credentials is KEEP else credentials
    new = store.NewMapping(
        entity_type=body.entity_type,
        internal_id=body.internal_id,
        external_system=body.external_system,
        external_id=body.external_id,
        direction=body.direction,
        sync_status=body.sync_status,
        configuration=config,
        credentials=credentials,
    )
    async with request.app[POOL].acquire() as conn:
        try:
            made = await store.create(conn, key.tenant_id, new, _actor(key))
        except MappingConflict as exc:
            return conflict_response(exc)
    request.app[MAPPINGS].forget([made.cache_row()])
    return made.public()


@endpoint(ANY_ROLE)
async def get_mapping(request: web.Request, key: ApiKey) -> Any:
    mapping_id = parse_uuid(request.match_info["mapping_id"], "mapping")
    async with request.app[POOL].acquire() as conn:
        found = await store.get(conn, key.tenant_id, mapping_id)
    if found is None:
        raise NotFound(f"no mapping {mapping_id}")
    return found.public()


@endpoint(WRITERS)
async def update_mapping(request: web.Request, key: ApiKey) -> Any:
    mapping_id = parse_uuid(request.match_info["mapping_id"], "mapping")
    body = await read_body(request, MappingChange)
    changes = _changes(body, request.app[BOX])
    async with request.app[POOL].acquire() as conn:
        before = await store.get(conn, key.tenant_id, mapping_id)
        try:
            after = await store.update(conn, key.tenant_id, mapping_id, changes, _actor(key))
        except MappingConflict as exc:
            return conflict_response(exc)
    if after is None or before is None:
        raise NotFound(f"no live mapping {mapping_id}")
    request.app[MAPPINGS].forget([before.cache_row(), after.cache_row()])
    return after.public()


def _changes(body: MappingChange, box: SecretBox) -> dict[str, Any]:
    changes = plain(body)
    if "configuration" in changes:
        config, credentials = _configuration(changes["configuration"], box)
        changes["configuration"] = config
        if credentials is not KEEP:
            changes["credentials"] = credentials
    return changes


@endpoint(WRITERS)
async def delete_mapping(request: web.Request, key: ApiKey) -> Any:
    mapping_id = parse_uuid(request.match_info["mapping_id"], "mapping")
    async with request.app[POOL].acquire() as conn:
        gone = await store.soft_delete(conn, key.tenant_id, mapping_id, _actor(key))
    if gone is None:
        raise NotFound(f"no live mapping {mapping_id}")
    request.app[MAPPINGS].forget([gone.cache_row()])
    return gone.public()


@endpoint(ANY_ROLE)
async def list_mappings(request: web.Request, key: ApiKey) -> Any:
    query = read_query(request, MappingQuery)
    keyset = Keyset.of(query.limit, query.cursor, decode_time_cursor)
    w = _filters(query, key.tenant_id, keyset)
    async with request.app[POOL].acquire() as conn:
        found = await store.list_page(conn, w.sql, w.args, keyset.fetch)
    return keyset.page(found, store.Mapping.public, lambda m: (m.created_at, m.id))


def _filters(query: MappingQuery, tenant_id: uuid.UUID, keyset: TimeKeyset) -> Where:
    w = Where()
    w.add("tenant_id = {}", tenant_id)
    for name in ("entity_type", "external_system", "external_id", "direction", "sync_status"):
        value = getattr(query, name)
        if value is not None:
            w.add(f"{name} = {{}}", str(value))
    if query.internal_id is not None:
        w.add("internal_id = {}", query.internal_id)
    if not query.include_deleted:
        w.add("deleted_at IS NULL")
    before = keyset.after()
    if before is not None:
        w.add("(created_at, id) < ({}::timestamptz, {}::uuid)", *before)
    return w


# -- bulk import ------------------------------------------------------------------------------


@endpoint(WRITERS)
async def import_mappings(request: web.Request, key: ApiKey) -> Any:
    """CSV or JSON lines → staged with COPY → merged; a report, never an overwrite."""
    media = request.content_type.lower()
    if media not in CSV_TYPES | JSONL_TYPES:
        raise ClientError(
            "send text/csv or application/x-ndjson (JSON lines)", code="unsupported_media_type"
        )
    data = await read_bytes(request, IMPORT_MAX_BYTES)
    if media in CSV_TYPES and not data.strip():
        raise Invalid("a CSV import starts with its header line", code="invalid_import")
    try:
        parsed = importing.parse(data, "text/csv" if media in CSV_TYPES else "jsonl")
    except importing.ImportFormatError as exc:
        raise Invalid(str(exc), code="invalid_import") from None
    if len(parsed.rows) + parsed.error_count > IMPORT_MAX_ROWS:
        raise PayloadTooLarge(f"an import holds at most {IMPORT_MAX_ROWS} rows")
    settled = importing.settle_duplicates(parsed.rows)
    records = [row.record() for row in settled.unique]
    counts = {
        "received": len(parsed.rows) + parsed.error_count,
        "invalid": parsed.error_count,
        "unchanged": settled.repeats,
        "conflicting": len(settled.conflicts),
    }
    async with request.app[POOL].acquire() as conn:
        try:
            merged = await store.merge_import(conn, key.tenant_id, records, _actor(key), counts)
        except store.MappingStoreError as exc:
            raise ServiceUnavailable(str(exc), code="import_failed") from None
    request.app[MAPPINGS].cache.invalidate_tenants([str(key.tenant_id)])
    return _report(parsed, settled, merged)


def _report(
    parsed: importing.Parsed, settled: importing.Settled, merged: store.MergeResult
) -> dict[str, Any]:
    conflicts = settled.conflicts + merged.conflicts
    return {
        "received": len(parsed.rows) + parsed.error_count,
        "created": merged.created,
        "unchanged": merged.unchanged + settled.repeats,
        "conflicting": len(conflicts),
        "invalid": parsed.error_count,
        "conflicts": sorted(conflicts, key=lambda c: c.get("line", 0))[: importing.MAX_LISTED],
        "errors": parsed.errors,
    }
