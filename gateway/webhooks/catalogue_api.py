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

from gateway.auth.keys import ApiKey, Role
from gateway.web.http import endpoint, read_json_object
from gateway.web.openapi_legacy import answer, refusals
from gateway.webhooks import api, catalogue, inputs, store

TYPES = f"{api.PREFIX}/webhooks/event-types"
PUBLIC_KEY = f"{api.PREFIX}/webhooks/public-key"


def setup(app: web.Application) -> None:
    """Register the routes (after gateway.webhooks.api.setup, whose pool they use)."""
    r = app.router
    r.add_get(TYPES, list_event_types)
    r.add_get(TYPES + "/openapi.json", event_types_document)
    r.add_put(TYPES + "/{name}", put_event_type)
    r.add_delete(TYPES + "/{name}", delete_event_type)
    r.add_get(PUBLIC_KEY, public_key)


async def _catalogue(request: web.Request, key: ApiKey) -> catalogue.EventTypeList:
    async with request.app[api.POOL].acquire() as conn:
        rows = await store.list_event_types(conn, key.tenant_id)
    return catalogue.listing(rows)


@endpoint(api.READERS)
async def list_event_types(request: web.Request, key: ApiKey) -> Any:
    return msgspec.to_builtins(await _catalogue(request, key))


@endpoint(api.READERS)
async def event_types_document(request: web.Request, key: ApiKey) -> Any:
    title = "Integration Hub gateway webhooks"
    return catalogue.webhooks_document(await _catalogue(request, key), title)


@endpoint([Role.ADMIN])
async def put_event_type(request: web.Request, key: ApiKey) -> Any:
    name = inputs.event_type(request.match_info["name"], "name")
    if name in catalogue.BUILTIN_TYPES or name.startswith("webhook."):
        raise inputs.bad("name", "webhook.* event types are the gateway's own")
    declared = catalogue.read_event_type(await read_json_object(request))
    async with api.store_connection(request) as conn:
        row, created = await store.put_event_type(
            conn,
            key.tenant_id,
            name,
            declared.description,
            declared.schema,
            api.actor_of(key),
        )
    item = catalogue.EventType(
        row["name"],
        row["description"],
        row["schema"],
        created_at=row["created_at"].isoformat(),
        updated_at=row["updated_at"].isoformat(),
    )
    status = 201 if created else 200
    return web.Response(
        body=msgspec.json.encode(item), status=status, content_type="application/json"
    )


@endpoint([Role.ADMIN])
async def delete_event_type(request: web.Request, key: ApiKey) -> Any:
    name = inputs.event_type(request.match_info["name"], "name")
    async with api.store_connection(request) as conn:
        await store.delete_event_type(conn, key.tenant_id, name, api.actor_of(key))
    return {"name": name, "deleted": True}


@endpoint(api.READERS)
async def public_key(request: web.Request, key: ApiKey) -> Any:
    async with request.app[api.POOL].acquire() as conn:
        value = await store.public_signing_key(conn, key.tenant_id)
    return msgspec.to_builtins(catalogue.PublicKey("ed25519", value))


def paths() -> dict[str, Any]:
    """OpenAPI paths of these endpoints, their schemas generated from the Structs."""
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    listing = answer(catalogue.schema_of(catalogue.EventTypeList))
    one = answer(catalogue.schema_of(catalogue.EventType))
    body = {
        "required": True,
        "content": {"application/json": {"schema": catalogue.schema_of(catalogue.EventTypeIn)}},
    }
    return {
        TYPES: {
            "get": {
                "summary": "The event-type catalogue (declared and built-in types)",
                "responses": {"200": listing, **refusals()},
            }
        },
        TYPES + "/openapi.json": {
            "get": {
                "summary": "The catalogue as an OpenAPI 3.1 document of webhooks",
                "responses": {"200": answer({"type": "object"}), **refusals()},
            }
        },
        TYPES + "/{name}": {
            "parameters": [name],
            "put": {
                "summary": "Declare or replace an event type (JSON Schema + description)",
                "requestBody": body,
                # 201 as 200 (the EventType): one inline schema, as client generators name
                # one model per inline schema and refuse the same name twice
                "responses": {
                    "200": one,
                    "201": answer({"type": "object"}, "Declared: the EventType, as for 200"),
                    **refusals(422),
                },
            },
            "delete": {
                "summary": "Remove an event type from the catalogue",
                "responses": {"200": answer({"type": "object"}), **refusals(404)},
            },
        },
        PUBLIC_KEY: {
            "get": {
                "summary": "The tenant's ed25519 public key (Standard Webhooks v1a)",
                "responses": {
                    "200": answer(catalogue.schema_of(catalogue.PublicKey)),
                    **refusals(),
                },
            }
        },
    }
