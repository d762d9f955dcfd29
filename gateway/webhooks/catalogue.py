"""The event-type catalogue: each event type a tenant publishes, declared with a JSON Schema
and a description. Publishing validates payloads against it (422 naming the path of the
first violation); subscriptions to undeclared types are refused once a tenant has a
catalogue; the catalogue is served as JSON and as an OpenAPI 3.1 document whose
``webhooks`` receivers can generate types from.

The shapes of the catalogue and public-key endpoints are the msgspec Structs of
gateway/webhooks/shapes.py (requests decoded and refused by msgspec, answers encoded from
them, the OpenAPI document made from the same classes). Payload schemas are checked and
applied by ``jsonschema`` (Draft 2020-12 unless a schema names its own ``$schema``).
"""

from __future__ import annotations

import functools
from typing import Any

import jsonschema
import msgspec
from jsonschema.exceptions import SchemaError, ValidationError
from jsonschema.validators import validator_for
from referencing.exceptions import Unresolvable

from gateway.db.pool import json_dumps
from gateway.errors import Invalid
from gateway.webhooks.shapes import EventTypeIn, EventTypeList, EventTypeShown

# Event types the gateway itself publishes; always known, never declared by tenants.
BUILTIN_TYPES: dict[str, str] = {
    "webhook.test": "A test event sent to one subscription (test endpoint, verify on subscribe)",
    "webhook.delivery.failed": "A delivery exhausted its attempts (or met 410 Gone)",
    "webhook.subscription.disabled": "The gateway disabled a subscription (410 or failing)",
    "webhook.endpoint.failing": "A subscription's endpoint started failing",
}
VALIDATOR_CACHE = 1024  # compiled validators kept per process (keyed by schema text)


def check_schema(declared: EventTypeIn) -> None:
    """422 invalid_schema naming where a declared schema is not a valid JSON Schema."""
    try:
        _validator(json_dumps(declared.schema).decode())
    except SchemaError as exc:
        where = _path(exc.path)
        raise Invalid(
            f"field 'schema' is not a valid JSON Schema at {where}: {exc.message[:300]}",
            code="invalid_schema",
        ) from None


@functools.lru_cache(maxsize=VALIDATOR_CACHE)
def _validator(schema_text: str) -> jsonschema.protocols.Validator:
    schema = msgspec.json.decode(schema_text)
    cls = validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def validate_payload(event_type: str, schema: dict[str, Any], payload: Any) -> None:
    """422 ``schema_violation`` with the JSON path of the first violation."""
    validator = _validator(json_dumps(schema).decode())
    try:
        error: ValidationError | None = min(
            validator.iter_errors(payload), key=_error_order, default=None
        )
    except (Unresolvable, RecursionError) as exc:
        # e.g. a $ref to a document the gateway does not fetch: the schema's fault
        raise Invalid(
            f"the schema of {event_type!r} cannot be applied: {str(exc)[:300]}",
            code="invalid_schema",
        ) from None
    if error is not None:
        where = _path(error.absolute_path)
        raise SchemaViolation(
            f"payload does not match the schema of {event_type!r} at {where}: "
            f"{error.message[:300]}",
            path=where,
        )


def _error_order(error: ValidationError) -> tuple[int, list[str]]:
    """The first violation: the shallowest, then in document order."""
    return len(error.absolute_path), [str(p) for p in error.absolute_path]


def _path(parts: Any) -> str:
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


class SchemaViolation(Invalid):
    code = "schema_violation"

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path

    def details(self) -> dict[str, Any]:
        return {"path": self.path}


def unknown_patterns(patterns: list[str], declared: list[str]) -> list[str]:
    """The subscription patterns that match no declared (or built-in) event type."""
    known = [*declared, *BUILTIN_TYPES]
    out = []
    for pattern in patterns:
        if pattern == "*":
            continue
        if pattern.endswith(".*"):
            prefix = pattern[:-1]
            if not any(name.startswith(prefix) for name in known):
                out.append(pattern)
        elif pattern not in known:
            out.append(pattern)
    return out


def declared(row: Any) -> EventTypeShown:
    """A declared event type's answer, from its row."""
    return EventTypeShown(
        name=row["name"],
        description=row["description"],
        schema=row["schema"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def listing(rows: list[Any]) -> EventTypeList:
    items = [declared(r) for r in rows]
    items += [
        EventTypeShown(name=name, description=text, schema={"type": "object"}, builtin=True)
        for name, text in BUILTIN_TYPES.items()
    ]
    return EventTypeList(items=items)


def webhooks_document(catalogue: EventTypeList, title: str) -> dict[str, Any]:
    """An OpenAPI 3.1 document whose ``webhooks`` are the tenant's event types: the body a
    receiver gets (the Standard Webhooks envelope) with ``data`` of the declared schema."""
    hooks: dict[str, Any] = {}
    for item in catalogue.items:
        envelope = {
            "type": "object",
            "required": ["type", "timestamp", "data"],
            "properties": {
                "type": {"const": item.name},
                "timestamp": {"type": "string", "format": "date-time"},
                "data": item.schema,
                "replaced": {"type": "integer", "minimum": 1},
            },
        }
        hooks[item.name] = {
            "post": {
                "summary": item.description,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": envelope}},
                },
                "responses": {"2XX": {"description": "accepted"}},
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1"},
        "webhooks": hooks,
    }
