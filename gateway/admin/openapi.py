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
            **_webhook_paths(),
        },
    }


def _webhook_paths() -> dict[str, Any]:
    from gateway.webhooks.openapi import paths  # imports this module's helpers

    return paths()
