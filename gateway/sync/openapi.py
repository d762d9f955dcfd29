"""OpenAPI paths of the sync status endpoints (assembled by gateway.app)."""

from __future__ import annotations

from typing import Any

from gateway.web.openapi_legacy import (
    CURSOR,
    LIMIT,
    NAME,
    NULLABLE_TIME,
    TIME,
    UUID,
    answer,
    query_param,
    refusals,
)

DIRECTION = {"type": "string", "enum": ["inbound", "outbound", "bidirectional"]}
STATUS = {
    "type": "string",
    "enum": ["pending", "in_progress", "succeeded", "failed", "conflict"],
}
SIDE = {"type": "string", "enum": ["internal", "external"]}
REPORT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["entity_type", "entity_id", "direction", "status"],
    "properties": {
        "entity_type": NAME,
        "entity_id": UUID,
        "external_system": {
            **NAME,
            "description": "required for service and admin keys; a partner key's own system",
        },
        "direction": DIRECTION,
        "status": {"type": "string", "enum": ["pending", "in_progress", "succeeded", "failed"]},
        "version": {
            "type": ["integer", "null"],
            "minimum": 0,
            "maximum": 2**63 - 1,
            "description": "entity version the report is about (optimistic concurrency)",
        },
        "side": {**SIDE, "description": "who changed the entity (default: the caller's side)"},
        "error": {"type": ["string", "null"], "maxLength": 2000},
    },
}
SYNC_STATUS = {
    "type": "object",
    "required": ["id", "entity_type", "entity_id", "external_system", "direction", "status"],
    "properties": {
        "id": UUID,
        "tenant_id": UUID,
        "entity_type": {"type": "string"},
        "entity_id": UUID,
        "external_system": {"type": "string"},
        "direction": DIRECTION,
        "status": STATUS,
        "version": {"type": ["integer", "null"]},
        "pending_side": {"type": ["string", "null"]},
        "pending_version": {"type": ["integer", "null"]},
        "conflict": {"type": ["object", "null"]},
        "last_attempt_at": NULLABLE_TIME,
        "last_success_at": NULLABLE_TIME,
        "unsynced_since": NULLABLE_TIME,
        "error_message": {"type": ["string", "null"]},
        "retry_count": {"type": "integer"},
        "next_retry_at": NULLABLE_TIME,
        "created_at": TIME,
        "updated_at": TIME,
    },
}
CHANGE = {
    "allOf": [
        {"type": "object", "required": ["id", "entity_type", "entity_id", "external_system"]},
        {
            "type": "object",
            "properties": {
                "kind": {
                    "type": "string",
                    "enum": ["sync_status", "mapping"],
                    "description": "a sync status row, or an integration mapping (then "
                    "entity_id is its internal id and external_id, sync_status are set)",
                },
                "change": {"type": "string", "description": "id of the change (transaction)"},
                "deleted": {"type": "boolean"},
            },
        },
    ]
}
OUTCOMES = {
    "type": "object",
    "properties": {
        k: {"type": "integer"} for k in ("created", "updated", "unchanged", "stale", "conflict")
    },
}
SUMMARY = {
    "type": "object",
    "properties": {
        "external_system": {"type": "string"},
        **{
            k: {"type": "integer"}
            for k in ("pending", "in_progress", "succeeded", "failed", "conflict")
        },
        "oldest_pending": NULLABLE_TIME,
        "oldest_failed": NULLABLE_TIME,
        "last_success": NULLABLE_TIME,
    },
}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _page(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items"],
        "properties": {
            "items": {"type": "array", "items": item},
            "next_cursor": {"type": ["string", "null"]},
        },
    }


SYNC_ID = {"name": "sync_id", "in": "path", "required": True, "schema": UUID}


def paths() -> dict[str, Any]:
    return {
        "/admin/v1/sync/reports": {
            "post": {
                "summary": "Report one sync attempt or outcome (service, partner, admin)",
                "requestBody": _body(REPORT),
                "responses": {
                    "200": answer(
                        {
                            "type": "object",
                            "properties": {"outcome": {"type": "string"}, "status": SYNC_STATUS},
                        }
                    ),
                    **refusals(400, 409, 413, 422),
                },
            }
        },
        "/admin/v1/sync/reports/batch": {
            "post": {
                "summary": "Report many entities at once (batch sync); stale and conflicting "
                "reports are listed, the others applied (service, partner, admin)",
                "requestBody": _body(
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["reports"],
                        "properties": {
                            "reports": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": 20000,
                                "items": REPORT,
                            }
                        },
                    }
                ),
                "responses": {
                    "200": answer(
                        {
                            "type": "object",
                            "properties": {
                                "received": {"type": "integer"},
                                "outcomes": OUTCOMES,
                                "refused": {"type": "array", "items": {"type": "object"}},
                            },
                        }
                    ),
                    **refusals(400, 413, 422),
                },
            }
        },
        "/admin/v1/sync/status": {
            "get": {
                "summary": "Sync status of entities, newest first (admin, viewer, service)",
                "parameters": [
                    query_param("entity_type", {"type": "string"}, "entity type"),
                    query_param("entity_id", UUID, "internal entity id"),
                    query_param("external_system", {"type": "string"}, "external system"),
                    query_param("direction", DIRECTION, "direction"),
                    query_param("status", STATUS, "status"),
                    query_param(
                        "older_than_seconds",
                        {"type": "integer", "minimum": 0, "maximum": 315360000},
                        "out of sync for at least this long",
                    ),
                    query_param("due", {"type": "string", "enum": ["true"]}, "retry is due now"),
                    LIMIT,
                    CURSOR,
                ],
                "responses": {"200": answer(_page(SYNC_STATUS)), **refusals(400)},
            }
        },
        "/admin/v1/sync/status/{sync_id}": {
            "parameters": [SYNC_ID],
            "get": {
                "summary": "One entity's sync status (admin, viewer, service)",
                "responses": {"200": answer(SYNC_STATUS), **refusals(404)},
            },
        },
        "/admin/v1/sync/status/{sync_id}/retry": {
            "parameters": [SYNC_ID],
            "post": {
                "summary": "Make a failed sync due now (admin, service)",
                "responses": {"200": answer(SYNC_STATUS), **refusals(404, 409)},
            },
        },
        "/admin/v1/sync/status/{sync_id}/resolve": {
            "parameters": [SYNC_ID],
            "post": {
                "summary": "Resolve a conflict by choosing a side (admin, service)",
                "requestBody": _body(
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["side"],
                        "properties": {"side": SIDE},
                    }
                ),
                "responses": {
                    "200": answer(SYNC_STATUS),
                    **refusals(400, 404, 409, 413, 422),
                },
            },
        },
        "/admin/v1/sync/summary": {
            "get": {
                "summary": "Per external system: counts by status, oldest pending and failed, "
                "last success (admin, viewer, service)",
                "responses": {"200": answer(_page(SUMMARY))},
            }
        },
        "/admin/v1/sync/changes": {
            "get": {
                "summary": "Incremental feed: entities whose sync status or mappings changed "
                "since the cursor, oldest change first; keep next_cursor for the next poll",
                "parameters": [
                    query_param(
                        "external_system", {"type": "string"}, "required except for partners"
                    ),
                    query_param(
                        "limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size"
                    ),
                    CURSOR,
                ],
                "responses": {"200": answer(_page(CHANGE)), **refusals(400)},
            }
        },
    }
