"""OpenAPI building blocks of the features not yet declared with gateway.web.contract
(hand-written schema dicts). Removed once every feature declares Operations."""

from __future__ import annotations

from typing import Any

import msgspec

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
    text[429] = "The key's rate limit is exhausted (Retry-After)"
    text[503] = "Database unavailable"
    codes = sorted({401, 403, 429, 503, *statuses})
    return {str(s): answer(ERROR, text[s]) for s in codes}


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


_REF = "#/components/schemas/{name}"


def inline_schema(struct: type) -> dict[str, Any]:
    """A msgspec Struct's JSON schema with its references inlined: a hand-written path
    carries no components, and client generators resolve no ``$defs``."""
    (top,), components = msgspec.json.schema_components([struct], ref_template=_REF)
    inlined: dict[str, Any] = _inline(top, components)
    return inlined


def _inline(node: Any, components: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            return _inline(components[ref.rsplit("/", 1)[1]], components)
        return {k: _inline(v, components) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, components) for v in node]
    return node
