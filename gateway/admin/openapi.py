"""The OpenAPI 3 document of the admin API (served at /admin/v1/openapi.json).

tests/integration/test_admin_api.py checks that these paths and methods are exactly the
routes the application serves.
"""

from __future__ import annotations

from typing import Any

UUID = {"type": "string", "format": "uuid"}
TIME = {"type": "string", "format": "date-time"}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
ERROR = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "string"},
        "message": {"type": "string"},
        "request_id": {"type": "string"},
    },
}
TENANT = {
    "type": "object",
    "required": ["id", "name", "created_at"],
    "properties": {"id": UUID, "name": {"type": "string"}, "created_at": TIME},
}
KEY = {
    "type": "object",
    "required": ["id", "tenant_id", "role", "token_prefix", "created_at"],
    "properties": {
        "id": UUID,
        "tenant_id": UUID,
        "name": {"type": "string"},
        "role": {"type": "string", "enum": ["partner", "service", "viewer", "admin"]},
        "external_system": {"type": ["string", "null"]},
        "token_prefix": {"type": "string"},
        "rate_limit_per_minute": {"type": ["integer", "null"]},
        "expires_at": NULLABLE_TIME,
        "revoked_at": NULLABLE_TIME,
        "created_at": TIME,
    },
}
NEW_KEY = {
    "type": "object",
    "additionalProperties": False,
    "required": ["role"],
    "properties": {
        "name": {"type": "string", "maxLength": 200},
        "role": {"type": "string", "enum": ["partner", "service", "viewer", "admin"]},
        "external_system": {"type": ["string", "null"], "pattern": "^[a-z][a-z0-9_]{0,62}$"},
        "rate_limit_per_minute": {"type": ["integer", "null"], "minimum": 1, "maximum": 1000000},
        "expires_in_days": {"type": ["integer", "null"], "minimum": 1, "maximum": 3650},
    },
}
LOG_SUMMARY = {
    "type": "object",
    "required": ["id", "created_at", "request_id", "method", "path", "status"],
    "properties": {
        "id": UUID,
        "created_at": TIME,
        "request_id": {"type": "string"},
        "route": {"type": ["string", "null"]},
        "upstream": {"type": ["string", "null"]},
        "method": {"type": "string"},
        "path": {"type": "string"},
        "query": {"type": "string"},
        "status": {"type": "integer"},
        "duration_ms": {"type": "number"},
        "upstream_ms": {"type": ["number", "null"]},
        "error_code": {"type": ["string", "null"]},
        "error_message": {"type": ["string", "null"]},
        "client_ip": {"type": ["string", "null"]},
        "user_agent": {"type": ["string", "null"]},
        "external_system": {"type": ["string", "null"]},
        "api_key_id": {"type": ["string", "null"]},
    },
}
LOG_DETAIL = {
    "allOf": [
        LOG_SUMMARY,
        {
            "type": "object",
            "properties": {
                "request_headers": {
                    "type": "array",
                    "items": {"type": "array", "items": {"type": "string"}},
                },
                "response_headers": {"type": ["array", "null"]},
                "request_body": {},
                "response_body": {},
                "request_body_format": {"type": "string"},
                "response_body_format": {"type": "string"},
                "request_body_size": {"type": "integer"},
                "response_body_size": {"type": "integer"},
                "request_body_truncated": {"type": "boolean"},
                "response_body_truncated": {"type": "boolean"},
                "translated": {
                    "type": ["object", "null"],
                    "description": "ID translation: ids rewritten per field (null: none)",
                },
            },
        },
    ],
}
AUDIT = {
    "type": "object",
    "required": ["id", "at", "actor", "action", "object_type"],
    "properties": {
        "id": {"type": "integer"},
        "at": TIME,
        "actor": {"type": "string"},
        "action": {"type": "string"},
        "object_type": {"type": "string"},
        "object_id": {"type": ["string", "null"]},
        "before": {},
        "after": {},
    },
}


NAME = {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"}
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


def _mapping_paths() -> dict[str, Any]:
    one = {"200": _json(MAPPING), **_errors(404)}
    return {
        "/admin/v1/mappings": {
            "get": {
                "summary": "The tenant's ID mappings, newest first (admin, viewer, service)",
                "parameters": [
                    _q("entity_type", {"type": "string"}, "e.g. reservation"),
                    _q("external_system", {"type": "string"}, "e.g. booking_engine"),
                    _q("external_id", {"type": "string"}, "partner's id"),
                    _q("internal_id", UUID, "PMS id"),
                    _q("direction", DIRECTION, "direction"),
                    _q("sync_status", SYNC_STATUS, "sync status"),
                    _q(
                        "include_deleted",
                        {"type": "string", "enum": ["true", "false"]},
                        "also soft-deleted rows (default false)",
                    ),
                    LIMIT,
                    CURSOR,
                ],
                "responses": {"200": _json(_page(MAPPING)), **_errors(400)},
            },
            "post": {
                "summary": "Create a mapping (admin, service)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": NEW_MAPPING}},
                },
                "responses": {
                    "201": _json(MAPPING, "Created"),
                    "409": _json(MAPPING_CONFLICT, "An id is already mapped (row named)"),
                    **_errors(400, 413, 422),
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
                "responses": {"200": _json(IMPORT_REPORT), **_errors(400, 413, 422)},
            }
        },
        "/admin/v1/mappings/{mapping_id}": {
            "parameters": [_path("mapping_id")],
            "get": {"summary": "One mapping (admin, viewer, service)", "responses": one},
            "patch": {
                "summary": "Change a live mapping (admin, service)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": MAPPING_CHANGE}},
                },
                "responses": {
                    **one,
                    "409": _json(MAPPING_CONFLICT, "An id is already mapped (row named)"),
                    **_errors(400, 404, 413, 422),
                },
            },
            "delete": {"summary": "Soft-delete a mapping (admin, service)", "responses": one},
        },
    }


def _page(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items"],
        "properties": {
            "items": {"type": "array", "items": item},
            "next_cursor": {"type": ["string", "null"]},
        },
    }


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "Bad input",
        401: "Missing, unknown, revoked or expired key",
        403: "Role not allowed",
        404: "Not found (or another tenant's)",
        409: "Conflict",
        413: "Body too large",
        422: "Invalid content",
    }
    return {str(s): _json(ERROR, text[s]) for s in (401, 403, *statuses)}


def _q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": UUID}


LIMIT = _q("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "page size (default 50)")
CURSOR = _q("cursor", {"type": "string"}, "next_cursor of the previous page")


def document() -> dict[str, Any]:
    """The whole document: these paths plus those of the capability packages."""
    from gateway.sync.openapi import paths as sync_paths  # imports this module's helpers

    doc = _document()
    doc["paths"].update(sync_paths())
    return doc


def _document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Integration Hub gateway — admin API",
            "version": "1.0.0",
            "description": "Tenant-scoped administration. Authenticate with an API key "
            "(Authorization: Bearer <token> or X-Api-Key).",
        },
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
            }
        },
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": {
            "/admin/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": _json({"type": "object"})},
                }
            },
            "/admin/v1/tenant": {
                "get": {
                    "summary": "The caller's tenant (admin, viewer, service)",
                    "responses": {"200": _json(TENANT), **_errors(404)},
                },
                "patch": {
                    "summary": "Rename the tenant (admin)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["name"],
                                    "properties": {
                                        "name": {"type": "string", "minLength": 1, "maxLength": 200}
                                    },
                                }
                            }
                        },
                    },
                    "responses": {"200": _json(TENANT), **_errors(400, 409, 413, 422)},
                },
            },
            "/admin/v1/keys": {
                "get": {
                    "summary": "The tenant's API keys (admin)",
                    "responses": {"200": _json(_page(KEY))},
                },
                "post": {
                    "summary": "Create a key; the token is in this answer only (admin)",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": NEW_KEY}},
                    },
                    "responses": {
                        "201": _json(
                            {
                                "allOf": [
                                    KEY,
                                    {
                                        "type": "object",
                                        "required": ["token"],
                                        "properties": {"token": {"type": "string"}},
                                    },
                                ]
                            },
                            "Created",
                        ),
                        **_errors(400, 413, 422),
                    },
                },
            },
            "/admin/v1/keys/{key_id}": {
                "parameters": [_path("key_id")],
                "get": {
                    "summary": "One key (admin)",
                    "responses": {"200": _json(KEY), **_errors(404)},
                },
                "delete": {
                    "summary": "Revoke a key (admin)",
                    "responses": {"200": _json(KEY), **_errors(404)},
                },
            },
            "/admin/v1/logs": {
                "get": {
                    "summary": "Search api_logs, newest first (admin, viewer)",
                    "parameters": [
                        _q("from", TIME, "start (default: 24 h before 'to')"),
                        _q(
                            "to",
                            TIME,
                            "end, exclusive (default: now); at most 31 days after 'from'",
                        ),
                        _q("route", {"type": "string"}, "route name"),
                        _q("method", {"type": "string"}, "HTTP method"),
                        _q("status", {"type": "integer", "minimum": 100, "maximum": 599}, "status"),
                        _q(
                            "status_class",
                            {"type": "string", "enum": list(("1xx", "2xx", "3xx", "4xx", "5xx"))},
                            "status class",
                        ),
                        _q("path_prefix", {"type": "string"}, "path starts with"),
                        _q("request_id", {"type": "string"}, "X-Request-Id"),
                        _q("external_system", {"type": "string"}, "caller's external system"),
                        _q("key_id", UUID, "caller's key"),
                        _q(
                            "request_body_contains",
                            {"type": "string"},
                            "JSON the request body contains (jsonb @>)",
                        ),
                        _q(
                            "response_body_contains",
                            {"type": "string"},
                            "JSON the response body contains",
                        ),
                        LIMIT,
                        CURSOR,
                    ],
                    "responses": {"200": _json(_page(LOG_SUMMARY)), **_errors(400)},
                }
            },
            "/admin/v1/logs/{log_id}": {
                "parameters": [_path("log_id")],
                "get": {
                    "summary": "One log entry with headers and bodies (admin, viewer)",
                    "responses": {"200": _json(LOG_DETAIL), **_errors(404)},
                },
            },
            "/admin/v1/audit": {
                "get": {
                    "summary": "The tenant's audit trail, newest first (admin)",
                    "parameters": [
                        _q("action", {"type": "string"}, "e.g. key.create"),
                        _q("object_type", {"type": "string"}, "e.g. api_key"),
                        LIMIT,
                        CURSOR,
                    ],
                    "responses": {"200": _json(_page(AUDIT)), **_errors(400)},
                }
            },
            **_mapping_paths(),
            **_webhook_paths(),
        },
    }


def _webhook_paths() -> dict[str, Any]:
    from gateway.webhooks.openapi import paths  # imports this module's helpers

    return paths()
