"""OpenAPI paths of the ID mapping endpoints (gateway/mapping/api.py)."""

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
    page_of,
    path_param,
    query_param,
    refusals,
)

DIRECTION = {"type": "string", "enum": ["inbound", "outbound", "bidirectional"]}
SYNC_STATUS = {"type": "string", "enum": ["pending", "synced", "failed", "disabled"]}
EXTERNAL_ID = {"type": "string", "minLength": 1, "maxLength": 256}
MAPPING = {
    "type": "object",
    "required": ["id", "entity_type", "internal_id", "external_system", "external_id"],
    "properties": {
        "id": UUID,
        "tenant_id": UUID,
        "entity_type": {"type": "string"},
        "internal_id": UUID,
        "external_system": {"type": "string"},
        "external_id": {"type": "string"},
        "direction": DIRECTION,
        "sync_status": SYNC_STATUS,
        "configuration": {
            "type": "object",
            "description": 'credentials, when set, are shown as "[ENCRYPTED]"',
        },
        "origin": {"type": "string", "enum": ["api", "import", "auto", "sql"]},
        "created_at": TIME,
        "updated_at": TIME,
        "deleted_at": NULLABLE_TIME,
    },
}
MAPPING_WRITE = {
    "direction": DIRECTION,
    "sync_status": SYNC_STATUS,
    "configuration": {
        "type": "object",
        "description": "free JSON; its 'credentials' value is stored encrypted",
    },
}
NEW_MAPPING = {
    "type": "object",
    "additionalProperties": False,
    "required": ["entity_type", "internal_id", "external_system", "external_id"],
    "properties": {
        "entity_type": NAME,
        "internal_id": UUID,
        "external_system": NAME,
        "external_id": EXTERNAL_ID,
        **MAPPING_WRITE,
    },
}
MAPPING_CHANGE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"internal_id": UUID, "external_id": EXTERNAL_ID, **MAPPING_WRITE},
}
MAPPING_CONFLICT = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "string", "enum": ["mapping_conflict"]},
        "message": {"type": "string"},
        "conflicting": {"anyOf": [MAPPING, {"type": "null"}]},
    },
}
IMPORT_REPORT = {
    "type": "object",
    "required": ["received", "created", "unchanged", "conflicting", "invalid", "conflicts"],
    "properties": {
        "received": {"type": "integer"},
        "created": {"type": "integer"},
        "unchanged": {"type": "integer"},
        "conflicting": {"type": "integer"},
        "invalid": {"type": "integer"},
        "conflicts": {
            "type": "array",
            "description": "first 1000: the row, the reason, and the conflicting mapping "
            "(or earlier line of the same import)",
            "items": {"type": "object"},
        },
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"line": {"type": "integer"}, "message": {"type": "string"}},
            },
        },
    },
}


def paths() -> dict[str, Any]:
    one = {"200": answer(MAPPING), **refusals(404)}
    return {
        "/admin/v1/mappings": {
            "get": {
                "summary": "The tenant's ID mappings, newest first (admin, viewer, service)",
                "parameters": [
                    query_param("entity_type", {"type": "string"}, "e.g. reservation"),
                    query_param("external_system", {"type": "string"}, "e.g. booking_engine"),
                    query_param("external_id", {"type": "string"}, "partner's id"),
                    query_param("internal_id", UUID, "PMS id"),
                    query_param("direction", DIRECTION, "direction"),
                    query_param("sync_status", SYNC_STATUS, "sync status"),
                    query_param(
                        "include_deleted",
                        {"type": "string", "enum": ["true", "false"]},
                        "also soft-deleted rows (default false)",
                    ),
                    LIMIT,
                    CURSOR,
                ],
                "responses": {"200": answer(page_of(MAPPING)), **refusals(400)},
            },
            "post": {
                "summary": "Create a mapping (admin, service)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": NEW_MAPPING}},
                },
                "responses": {
                    "201": answer(MAPPING, "Created"),
                    "409": answer(MAPPING_CONFLICT, "An id is already mapped (row named)"),
                    **refusals(400, 413, 422),
                },
            },
        },
        "/admin/v1/mappings/import": {
            "post": {
                "summary": "Bulk import (admin, service): CSV with a header line, or JSON "
                "lines; columns entity_type, internal_id, external_system, external_id, "
                "optional direction, sync_status. Idempotent; never overwrites.",
                "requestBody": {
                    "required": True,
                    "content": {
                        "text/csv": {"schema": {"type": "string"}},
                        "application/x-ndjson": {"schema": {"type": "string"}},
                    },
                },
                "responses": {"200": answer(IMPORT_REPORT), **refusals(400, 413, 422)},
            }
        },
        "/admin/v1/mappings/{mapping_id}": {
            "parameters": [path_param("mapping_id")],
            "get": {"summary": "One mapping (admin, viewer, service)", "responses": one},
            "patch": {
                "summary": "Change a live mapping (admin, service)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": MAPPING_CHANGE}},
                },
                "responses": {
                    **one,
                    "409": answer(MAPPING_CONFLICT, "An id is already mapped (row named)"),
                    **refusals(400, 404, 413, 422),
                },
            },
            "delete": {"summary": "Soft-delete a mapping (admin, service)", "responses": one},
        },
    }
