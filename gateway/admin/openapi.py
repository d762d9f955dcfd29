"""OpenAPI paths of the tenant, key and audit endpoints (gateway/admin/api.py)."""

from __future__ import annotations

from typing import Any

from gateway.names import NAME_RE
from gateway.web.openapi import (
    CURSOR,
    LIMIT,
    NULLABLE_TIME,
    ROLE,
    TIME,
    UUID,
    answer,
    page_of,
    path_param,
    query_param,
    refusals,
)

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
        "role": ROLE,
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
        "role": ROLE,
        "external_system": {"type": ["string", "null"], "pattern": NAME_RE.pattern},
        "rate_limit_per_minute": {"type": ["integer", "null"], "minimum": 1, "maximum": 1000000},
        "expires_in_days": {"type": ["integer", "null"], "minimum": 1, "maximum": 3650},
    },
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


def paths() -> dict[str, Any]:
    return {
        "/admin/v1/tenant": {
            "get": {
                "summary": "The caller's tenant (admin, viewer, service)",
                "responses": {"200": answer(TENANT), **refusals(404)},
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
                "responses": {"200": answer(TENANT), **refusals(400, 409, 413, 422)},
            },
        },
        "/admin/v1/keys": {
            "get": {
                "summary": "The tenant's API keys (admin)",
                "responses": {"200": answer(page_of(KEY))},
            },
            "post": {
                "summary": "Create a key; the token is in this answer only (admin)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": NEW_KEY}},
                },
                "responses": {
                    "201": answer(
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
                    **refusals(400, 413, 422),
                },
            },
        },
        "/admin/v1/keys/{key_id}": {
            "parameters": [path_param("key_id")],
            "get": {
                "summary": "One key (admin)",
                "responses": {"200": answer(KEY), **refusals(404)},
            },
            "delete": {
                "summary": "Revoke a key (admin)",
                "responses": {"200": answer(KEY), **refusals(404)},
            },
        },
        "/admin/v1/audit": {
            "get": {
                "summary": "The tenant's audit trail, newest first (admin)",
                "parameters": [
                    query_param("action", {"type": "string"}, "e.g. key.create"),
                    query_param("object_type", {"type": "string"}, "e.g. api_key"),
                    LIMIT,
                    CURSOR,
                ],
                "responses": {"200": answer(page_of(AUDIT)), **refusals(400)},
            }
        },
    }
