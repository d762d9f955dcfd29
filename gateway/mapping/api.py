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
import orjson
from aiohttp import web

from gateway.auth.keys import ApiKey, Role
from gateway.crypto import SecretBox
from gateway.errors import ClientError, Invalid, NotFound, PayloadTooLarge, ServiceUnavailable
from gateway.mapping import importing, store
from gateway.mapping.flow import Mappings
from gateway.mapping.store import Actor, Direction, MappingConflict, SyncStatus
from gateway.names import is_name
from gateway.pointers import MAX_ID_LENGTH
from gateway.web.http import (
    ANY_ADMIN_ROLE,
    PREFIX,
    actor,
    check_fields,
    endpoint,
    field,
    parse_uuid,
    query_str,
    query_uuid,
    read_json_object,
)
from gateway.web.pagination import TimeKeyset, newest_first
from gateway.web.responses import json_response
from gateway.web.sql import Where

POOL = web.AppKey("mapping_pool", asyncpg.Pool)
BOX = web.AppKey("mapping_secrets", SecretBox)
MAPPINGS = web.AppKey("mapping_service", Mappings)
WRITERS = (Role.ADMIN, Role.SERVICE)  # internal services may record mappings too
BASE = f"{PREFIX}/mappings"
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
NEW_FIELDS = {
    "entity_type",
    "internal_id",
    "external_system",
    "external_id",
    "direction",
    "sync_status",
    "configuration",
}


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


def _name(body: dict[str, Any], name: str) -> str:
    value = field(body, name, str, nullable=False)
    if not is_name(value):
        raise Invalid(
            f"field {name!r}: lowercase letters, digits and '_' (at most 63)", code="invalid_field"
        )
    return str(value)


def _external_id(body: dict[str, Any]) -> str:
    value = field(body, "external_id", str, nullable=False)
    if not 1 <= len(value) <= MAX_ID_LENGTH:
        raise Invalid(
            f"field 'external_id' must be 1 to {MAX_ID_LENGTH} characters", code="invalid_field"
        )
    return str(value)


def _internal_id(body: dict[str, Any]) -> uuid.UUID:
    value = field(body, "internal_id", str, nullable=False)
    try:
        return uuid.UUID(value)
    except ValueError:
        raise Invalid("field 'internal_id' must be a UUID", code="invalid_field") from None


def _enum(body: dict[str, Any], name: str, kind: Any, default: Any) -> Any:
    value = field(body, name, str)
    if value is None:
        return default
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise Invalid(f"field {name!r} must be one of {allowed}", code="invalid_field") from None


KEEP = object()  # PATCH: leave the stored credentials as they are


def _configuration(body: dict[str, Any], box: SecretBox) -> tuple[dict[str, Any], Any]:
    """The configuration without credentials, and what to store as credentials: a
    SecretBox token, None (no credentials), or KEEP (absent, or the "[ENCRYPTED]"
    placeholder an earlier answer showed: the stored ones stay)."""
    config = field(body, "configuration", dict)
    if config is None:
        return {}, KEEP
    raw = orjson.dumps(config)
    if b"\\u0000" in raw or len(raw) > 65536:
        raise Invalid("field 'configuration' is too large or holds NUL", code="invalid_field")
    config = dict(config)
    if "credentials" not in config or config["credentials"] == store.ENCRYPTED:
        config.pop("credentials", None)
        return config, KEEP
    secret = config.pop("credentials")
    return config, None if secret is None else box.encrypt(orjson.dumps(secret).decode())


# -- endpoints ------------------------------------------------------------------------------


@endpoint(WRITERS, status=201)
async def create_mapping(request: web.Request, key: ApiKey) -> Any:
    body = await read_json_object(request)
    check_fields(body, NEW_FIELDS, ("entity_type", "internal_id", "external_system", "external_id"))
    config, credentials = _configuration(body, request.app[BOX])
    credentials = None if credentials is KEEP else credentials
    new = store.NewMapping(
        entity_type=_name(body, "entity_type"),
        internal_id=_internal_id(body),
        external_system=_name(body, "external_system"),
        external_id=_external_id(body),
        direction=_enum(body, "direction", Direction, Direction.BIDIRECTIONAL),
        sync_status=_enum(body, "sync_status", SyncStatus, SyncStatus.SYNCED),
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


@endpoint(ANY_ADMIN_ROLE)
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
    body = await read_json_object(request)
    check_fields(body, store.UPDATABLE)
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


def _changes(body: dict[str, Any], box: SecretBox) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if "external_id" in body:
        changes["external_id"] = _external_id(body)
    if "internal_id" in body:
        changes["internal_id"] = _internal_id(body)
    for name, kind in (("direction", Direction), ("sync_status", SyncStatus)):
        if name in body:
            changes[name] = _enum(body, name, kind, None)
            if changes[name] is None:
                raise Invalid(f"field {name!r} must not be null", code="invalid_field")
    if "configuration" in body:
        config, credentials = _configuration(body, box)
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


@endpoint(ANY_ADMIN_ROLE)
async def list_mappings(request: web.Request, key: ApiKey) -> Any:
    keyset = newest_first(request)
    w = _filters(request, key.tenant_id, keyset)
    async with request.app[POOL].acquire() as conn:
        found = await store.list_page(conn, w.sql, w.args, keyset.fetch)
    return keyset.page(found, store.Mapping.public, lambda m: (m.created_at, m.id))


def _filters(request: web.Request, tenant_id: uuid.UUID, keyset: TimeKeyset) -> Where:
    w = Where()
    w.add("tenant_id = {}", tenant_id)
    for name in ("entity_type", "external_system", "external_id", "direction", "sync_status"):
        value = query_str(request, name, MAX_ID_LENGTH)
        if value is not None:
            w.add(f"{name} = {{}}", value)
    internal = query_uuid(request, "internal_id")
    if internal is not None:
        w.add("internal_id = {}", internal)
    deleted = request.query.get("include_deleted", "false")
    if deleted not in ("true", "false"):
        raise ClientError("include_deleted must be true or false", code="bad_query")
    if deleted == "false":
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
    data = await _read_limited(request)
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


async def _read_limited(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > IMPORT_MAX_BYTES:
        raise PayloadTooLarge(f"an import body is at most {IMPORT_MAX_BYTES} bytes")
    data = bytearray()
    async for chunk in request.content.iter_chunked(1 << 20):
        data += chunk
        if len(data) > IMPORT_MAX_BYTES:
            raise PayloadTooLarge(f"an import body is at most {IMPORT_MAX_BYTES} bytes")
    return bytes(data)


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
