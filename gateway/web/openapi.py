"""Building blocks of the admin API's OpenAPI 3 document (served at
/admin/v1/openapi.json): shared schemas and helpers, and :func:`document`, which the app
calls with the paths each package declares for its own endpoints.

tests/integration/test_admin_api.py checks that the document's paths and methods are
exactly the routes the application serves.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from gateway.auth.keys import Role
from gateway.names import NAME_RE
from gateway.web.pagination import DEFAULT_LIMIT, MAX_LIMIT

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
NAME = {"type": "string", "pattern": NAME_RE.pattern}  # systems, entity types
ROLE = {"type": "string", "enum": [r.value for r in Role]}
DOCUMENT = web.AppKey("openapi_document", dict)


def page_of(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items"],
        "properties": {
            "items": {"type": "array", "items": item},
            "next_cursor": {"type": ["string", "null"]},
        },
    }


def answer(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def refusals(*statuses: int) -> dict[str, Any]:
    text = {
        400: "Bad input",
        401: "Missing, unknown, revoked or expired key",
        403: "Role not allowed",
        404: "Not found (or another tenant's)",
        409: "Conflict",
        413: "Body too large",
        422: "Invalid content",
    }
    return {str(s): answer(ERROR, text[s]) for s in (401, 403, *statuses)}


def query_param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": UUID}


LIMIT = query_param(
    "limit",
    {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
    f"page size (default {DEFAULT_LIMIT})",
)
CURSOR = query_param("cursor", {"type": "string"}, "next_cursor of the previous page")


def document(*parts: dict[str, Any]) -> dict[str, Any]:
    """The whole document: the common frame plus each package's paths."""
    paths: dict[str, Any] = {
        "/admin/v1/openapi.json": {
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {"200": answer({"type": "object"})},
            }
        },
    }
    for part in parts:
        paths.update(part)
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
        "paths": paths,
    }


async def serve(request: web.Request) -> web.Response:
    """GET /admin/v1/openapi.json: the document the app assembled at start."""
    body = orjson.dumps(request.app[DOCUMENT])
    return web.Response(body=body, content_type="application/json")
