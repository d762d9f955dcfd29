"""Admin API of the event-type catalogue and the ed25519 public key (under /admin/v1):

    GET    /webhooks/event-types                 the catalogue (declared + built-in types)
    GET    /webhooks/event-types/openapi.json    the same as an OpenAPI 3.1 ``webhooks`` doc
    PUT    /webhooks/event-types/{name}          declare or replace one (admin)
    DELETE /webhooks/event-types/{name}          remove one (admin)
    GET    /webhooks/public-key                  the tenant's v1a public key

Shapes are the msgspec Structs of gateway/webhooks/catalogue.py; SQL is in store.py.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from gateway.auth.keys import ApiKey
from gateway.errors import Invalid, NotFound
from gateway.names import is_event_type
from gateway.web.contract import read_body
from gateway.web.http import endpoint
from gateway.webhooks import api, catalogue, store
from gateway.webhooks.shapes import (
    ADMIN,
    PUBLIC_KEY,
    READERS,
    TYPES,
    EventTypeIn,
    OwnEventType,
    PublicKey,
    gateway_type,
)


def setup(app: web.Application) -> None:
    """Register the routes (after gateway.webhooks.api.setup, whose pool they use)."""
    r = app.router
    r.add_get(TYPES, list_event_types)
    r.add_get(TYPES + "/openapi.json", event_types_document)
    r.add_put(TYPES + "/{name}", put_event_type)
    r.add_delete(TYPES + "/{name}", delete_event_type)
    r.add_get(PUBLIC_KEY, public_key)


async def _catalogue(request: web.Request, key: ApiKey) -> Any:
    async with request.app[api.POOL].acquire() as conn:
        rows = await store.list_event_types(conn, key.tenant_id)
    return catalogue.listing(rows)


def _name(request: web.Request, shape: Any) -> str:
    """The {name} of the path as ``shape`` (an event type), or 422 naming it."""
    try:
        name: str = msgspec.convert(request.match_info["name"], shape)
    except msgspec.ValidationError as exc:
        raise Invalid(f"path parameter 'name': {exc}", code="invalid_field") from None
    return name


@endpoint(READERS)
async def list_event_types(request: web.Request, key: ApiKey) -> Any:
    return msgspec.to_builtins(await _catalogue(request, key))


@endpoint(READERS)
async def event_types_document(request: web.Request, key: ApiKey) -> Any:
    title = "Integration Hub gateway webhooks"
    return catalogue.webhooks_document(await _catalogue(request, key), title)


@endpoint(ADMIN)
async def put_event_type(request: web.Request, key: ApiKey) -> Any:
    name = _name(request, OwnEventType)
    if gateway_type(name):
        raise Invalid(
            "path parameter 'name': webhook.* event types are the gateway's own",
            code="invalid_field",
        )
    declared = await read_body(request, EventTypeIn)
    catalogue.check_schema(declared)
    async with api.store_connection(request) as conn:
        row, created = await store.put_event_type(
            conn,
            key.tenant_id,
            name,
            declared.description,
            declared.schema,
            api.actor_of(key),
        )
    return web.Response(
        body=msgspec.json.encode(catalogue.declared(row)),
        status=201 if created else 200,
        content_type="application/json",
    )


@endpoint(ADMIN)
async def delete_event_type(request: web.Request, key: ApiKey) -> Any:
    name = request.match_info["name"]
    if not is_event_type(name):  # no such type can have been declared
        raise NotFound(f"no event type {name[:200]!r} in the catalogue")
    async with api.store_connection(request) as conn:
        await store.delete_event_type(conn, key.tenant_id, name, api.actor_of(key))
    return {"name": name, "deleted": True}


@endpoint(READERS)
async def public_key(request: web.Request, key: ApiKey) -> Any:
    async with request.app[api.POOL].acquire() as conn:
        value = await store.public_signing_key(conn, key.tenant_id)
    return msgspec.to_builtins(PublicKey(algorithm="ed25519", public_key=value))
