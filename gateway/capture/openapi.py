"""OpenAPI paths of the api_logs search endpoints (gateway/capture/api.py)."""

from __future__ import annotations

from typing import Any

from gateway.web.openapi_legacy import (
    CURSOR,
    LIMIT,
    TIME,
    UUID,
    answer,
    page_of,
    path_param,
    query_param,
    refusals,
)

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

STATUS = {"type": "integer", "minimum": 100, "maximum": 599}


def paths() -> dict[str, Any]:
    return {
        "/admin/v1/logs": {
            "get": {
                "summary": "Search api_logs, newest first (admin, viewer)",
                "parameters": [
                    query_param("from", TIME, "start (default: 24 h before 'to')"),
                    query_param(
                        "to",
                        TIME,
                        "end, exclusive (default: now); at most 31 days after 'from'",
                    ),
                    query_param("route", {"type": "string"}, "route name"),
                    query_param("method", {"type": "string"}, "HTTP method"),
                    query_param(
                        "status", {"type": "integer", "minimum": 100, "maximum": 599}, "status"
                    ),
                    query_param(
                        "status_class",
                        {"type": "string", "enum": list(("1xx", "2xx", "3xx", "4xx", "5xx"))},
                        "status class",
                    ),
                    query_param("path_prefix", {"type": "string"}, "path starts with"),
                    query_param("request_id", {"type": "string"}, "X-Request-Id"),
                    query_param("external_system", {"type": "string"}, "caller's external system"),
                    query_param("key_id", UUID, "caller's key"),
                    query_param(
                        "request_body_contains",
                        {"type": "string"},
                        "JSON the request body contains (jsonb @>)",
                    ),
                    query_param(
                        "response_body_contains",
                        {"type": "string"},
                        "JSON the response body contains",
                    ),
                    LIMIT,
                    CURSOR,
                ],
                "responses": {"200": answer(page_of(LOG_SUMMARY)), **refusals(400)},
            }
        },
        "/admin/v1/logs/{log_id}": {
            "parameters": [path_param("log_id")],
            "get": {
                "summary": "One log entry with headers and bodies (admin, viewer)",
                "responses": {"200": answer(LOG_DETAIL), **refusals(404)},
            },
        },
    }
