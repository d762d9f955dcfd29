"""The admin REST API of the tenant itself under /admin/v1: tenant, keys, audit trail.

Every query is scoped to the caller's tenant; a key of tenant A can never name an object
of tenant B (such ids answer 404, exactly like ids that do not exist).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from aiohttp import web

from gateway.admin.shapes import ADMIN, AuditQuery, NewKey, TenantChange
from gateway.auth import keys
from gateway.auth.keys import ApiKey
from gateway.errors import Conflict, Invalid, NotFound
from gateway.web import openapi
from gateway.web.contract import ANY_ROLE, read_body, read_query
from gateway.web.http import AUTHENTICATOR, POOL, PREFIX, actor, endpoint, logged, parse_uuid
from gateway.web.pagination import SERIAL_CURSOR, Keyset, decode_cursor
from gateway.web.sql import Where


def setup(app: web.Application) -> None:
    """Register the tenant, key and audit endpoints (the pool: ``web.http.bind``)."""
    r = app.router
    r.add_get(f"{PREFIX}/openapi.json", logged(openapi.serve))
    r.add_get(f"{PREFIX}/tenant", get_tenant)
    r.add_patch(f"{PREFIX}/tenant", patch_tenant)
    r.add_get(f"{PREFIX}/keys", list_keys)
    r.add_post(f"{PREFIX}/keys", create_key)
    r.add_get(f"{PREFIX}/keys/{{key_id}}", get_key)
    r.add_delete(f"{PREFIX}/keys/{{key_id}}", revoke_key)
    r.add_get(f"{PREFIX}/audit", list_audit)


# -- tenant ------------------------------------------------------------------------------


@endpoint(ANY_ROLE)
async def get_tenant(request: web.Request, key: ApiKey) -> Any:
    async with request.app[POOL].acquire() as conn:
        tenant = await keys.find_tenant(conn, str(key.tenant_id))
    if tenant is None:
        raise NotFound("tenant not found")
    return tenant.public()


@endpoint(ADMIN)
async def patch_tenant(request: web.Request, key: ApiKey) -> Any:
    body = await read_body(request, TenantChange)
    async with request.app[POOL].acquire() as conn:
        try:
            tenant = await keys.rename_tenant(conn, key.tenant_id, body.name, actor(key), key.id)
        except keys.KeyStoreError as exc:
            raise Conflict(str(exc)) from None
    return tenant.public()


# -- keys --------------------------------------------------------------------------------


@endpoint(ADMIN)
async def list_keys(request: web.Request, key: ApiKey) -> Any:
    async with request.app[POOL].acquire() as conn:
        found = await keys.list_keys(conn, key.tenant_id)
    return {"items": [k.public() for k in found]}


@endpoint(ADMIN, status=201)
async def create_key(request: web.Request, key: ApiKey) -> Any:
    body = await read_body(request, NewKey)
    days = body.expires_in_days
    async with request.app[POOL].acquire() as conn:
        try:
            made, token = await keys.create_key(
                conn,
                key.tenant_id,
                body.role,
                actor=actor(key),
                actor_key_id=key.id,
                name=body.name,
                external_system=body.external_system,
                rate_limit_per_minute=None
                if body.rate_limit_per_minute is None
                else int(body.rate_limit_per_minute),
                expires_in=timedelta(days=days) if days else None,
            )
        except keys.KeyStoreError as exc:
            raise Invalid(str(exc), code="invalid_field") from None
    return {**made.public(), "token": token}


@endpoint(ADMIN)
async def get_key(request: web.Request, key: ApiKey) -> Any:
    key_id = parse_uuid(request.match_info["key_id"], "key")
    async with request.app[POOL].acquire() as conn:
        found = await keys.get_key(conn, key.tenant_id, key_id)
    if found is None:
        raise NotFound(f"no key {key_id}")
    return found.public()


@endpoint(ADMIN)
async def revoke_key(request: web.Request, key: ApiKey) -> Any:
    key_id = parse_uuid(request.match_info["key_id"], "key")
    if key_id == key.id:  # the last admin key must not lock its tenant out by mistake
        raise Conflict("a key cannot revoke itself: use another admin key", code="self_revocation")
    async with request.app[POOL].acquire() as conn:
        revoked = await keys.revoke_key(
            conn, key.tenant_id, key_id, actor=actor(key), actor_key_id=key.id
        )
    if revoked is None:
        raise NotFound(f"no key {key_id}")
    request.app[AUTHENTICATOR].forget(key_id)
    return revoked.public()


# -- audit -------------------------------------------------------------------------------


@endpoint(ADMIN)
async def list_audit(request: web.Request, key: ApiKey) -> Any:
    query = read_query(request, AuditQuery)
    keyset = Keyset.of(query.limit, query.cursor, _audit_cursor)
    w = Where()
    w.add("tenant_id = {}", key.tenant_id)
    if query.action is not None:
        w.add("action = {}", query.action)
    if query.object_type is not None:
        w.add("object_type = {}", query.object_type)
    before = keyset.after()
    if before is not None:
        w.add("id < {}", before)
    async with request.app[POOL].acquire() as conn:
        rows = await conn.fetch(
            f"""SELECT id, at, actor, action, object_type, object_id, before, after
                FROM audit_log WHERE {w.sql} ORDER BY id DESC LIMIT {keyset.fetch}""",
            *w.args,
        )
    return keyset.page(rows, _audit_json, lambda r: (r["id"],))


def _audit_cursor(raw: str) -> int:
    """The id the audit page starts after (audit rows are listed by id, newest first)."""
    (text,) = decode_cursor(raw, _SERIAL)
    return int(text)


_SERIAL = re.compile(SERIAL_CURSOR)


def _audit_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {**dict(row), "at": row["at"].isoformat()}
