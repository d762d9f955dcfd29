"""OpenAPI paths of the webhook admin endpoints (assembled by gateway.app)."""

from __future__ import annotations

from typing import Any

from gateway.names import EVENT_TYPE_RE, MAX_EVENT_TYPE, NAME_RE
from gateway.web.openapi_legacy import (
    CURSOR,
    LIMIT,
    NULLABLE_TIME,
    TIME,
    UUID,
    answer,
    path_param,
    query_param,
    refusals,
)
from gateway.webhooks.inputs import PATTERN_RE, SECRET_RE

NUMBER = {"type": "number"}
ORIGIN_SYSTEM = {"type": ["string", "null"], "pattern": NAME_RE.pattern}  # echo suppression
NULLABLE_STRING = {"type": ["string", "null"]}
EVENT_TYPE = {"type": "string", "pattern": EVENT_TYPE_RE.pattern, "maxLength": MAX_EVENT_TYPE}
PATTERN = {"type": "string", "pattern": PATTERN_RE.pattern}
STATUSES = ["pending", "delivering", "delivered", "failed", "cancelled", "coalesced"]
AUTH_IN = {
    "oneOf": [
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["type"],
            "properties": {"type": {"const": "none"}},
        },
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["type", "token"],
            "properties": {"type": {"const": "bearer"}, "token": {"type": "string"}},
        },
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["type", "username", "password"],
            "properties": {
                "type": {"const": "basic"},
                "username": {"type": "string"},
                "password": {"type": "string"},
            },
        },
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["type", "headers"],
            "properties": {
                "type": {"const": "headers"},
                "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
    ]
}
RETRY_POLICY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "max_attempts": {"type": "integer", "minimum": 1, "maximum": 50},
        "timeout": {"type": "number", "minimum": 0.1, "maximum": 300},
        "schedule": {
            "type": ["array", "null"],
            "items": {"type": "number", "minimum": 0, "maximum": 604800},
            "minItems": 1,
            "maxItems": 50,
        },
        "backoff": {
            "type": ["object", "null"],
            "additionalProperties": False,
            "required": ["initial"],
            "properties": {"initial": NUMBER, "multiplier": NUMBER, "max": NUMBER},
        },
    },
}
PAYLOAD = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "fields": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
        "template": {},
    },
}
SUBSCRIPTION_PROPS: dict[str, Any] = {
    "name": {"type": "string", "minLength": 1, "maxLength": 200},
    "url": {"type": "string", "format": "uri", "maxLength": 2048},
    "event_types": {"type": "array", "items": PATTERN, "minItems": 1, "maxItems": 100},
    "filter": {"type": ["object", "null"]},
    "auth": AUTH_IN,
    "retry_policy": RETRY_POLICY,
    "max_concurrency": {"type": "integer", "minimum": 1, "maximum": 1000},
    "payload": PAYLOAD,
    "external_system": {"type": ["string", "null"], "pattern": NAME_RE.pattern},
    "active": {"type": "boolean"},
    # issue 21 options (gateway/webhooks/options.py)
    "ordering": {"type": "string", "enum": ["none", "entity"]},
    "coalesce": {"type": "boolean"},
    "suppress_own_changes": {"type": ["boolean", "null"]},
    "rate_limit": {"type": ["number", "null"], "minimum": 0.01, "maximum": 10000},
    "signature": {"type": "string", "enum": ["v1", "v1a"]},
    "verify": {"type": "boolean"},
}
SECRET = {"type": "string", "pattern": SECRET_RE.pattern}
NEW_SUBSCRIPTION = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "url", "event_types"],
    "properties": {**SUBSCRIPTION_PROPS, "secret": SECRET},
}
SUBSCRIPTION_PATCH = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": SUBSCRIPTION_PROPS,
}
SUBSCRIPTION = {
    "type": "object",
    "required": ["id", "name", "url", "event_types", "auth", "active", "created_at"],
    "properties": {
        "id": UUID,
        "name": {"type": "string"},
        "url": {"type": "string"},
        "event_types": {"type": "array", "items": {"type": "string"}},
        "filter": {"type": ["object", "null"]},
        "auth": {"type": "object", "properties": {"type": {"type": "string"}}},
        "retry_policy": {"type": "object"},
        "max_concurrency": {"type": "integer"},
        "payload": {"type": "object"},
        "external_system": NULLABLE_STRING,
        "active": {"type": "boolean"},
        "disabled_reason": NULLABLE_STRING,
        "disabled_at": NULLABLE_TIME,
        "failing_since": NULLABLE_TIME,
        "previous_secret_expires_at": NULLABLE_TIME,
        "created_at": TIME,
        "updated_at": TIME,
    },
}
WITH_SECRET = {
    "allOf": [
        SUBSCRIPTION,
        {"type": "object", "required": ["secret"], "properties": {"secret": {"type": "string"}}},
    ]
}
EVENT = {
    "type": "object",
    "required": ["id", "type", "payload", "created_at"],
    "properties": {
        "id": UUID,
        "type": {"type": "string"},
        "payload": {"type": "object"},
        "idempotency_key": NULLABLE_STRING,
        "source": {"type": "string"},
        "created_at": TIME,
    },
}
PUBLISHED = {
    "type": "object",
    "required": ["event", "deliveries"],
    "properties": {
        "event": EVENT,
        "deliveries": {"type": "integer"},
        "duplicate": {"type": "boolean"},
    },
}
DELIVERY = {
    "type": "object",
    "required": ["id", "event_id", "subscription_id", "webhook_id", "status", "attempt_count"],
    "properties": {
        "id": UUID,
        "event_id": UUID,
        "subscription_id": UUID,
        "webhook_id": {"type": "string"},
        "event_type": {"type": "string"},
        "status": {"type": "string", "enum": STATUSES},
        "attempt_count": {"type": "integer"},
        "next_attempt_at": NULLABLE_TIME,
        "last_status": {"type": ["integer", "null"]},
        "last_error": NULLABLE_STRING,
        "delivered_at": NULLABLE_TIME,
        "replay_count": {"type": "integer"},
        "created_at": TIME,
        "updated_at": TIME,
    },
}
ATTEMPT = {
    "type": "object",
    "required": ["id", "attempt_number", "result", "duration_ms", "attempted_at"],
    "properties": {
        "id": {"type": "integer"},
        "attempt_number": {"type": "integer"},
        "result": {"type": "string"},
        "status_code": {"type": ["integer", "null"]},
        "duration_ms": NUMBER,
        "error": NULLABLE_STRING,
        "response_excerpt": NULLABLE_STRING,
        "attempted_at": TIME,
    },
}


def _body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _items(item: dict[str, Any], paged: bool = False) -> dict[str, Any]:
    props: dict[str, Any] = {"items": {"type": "array", "items": item}}
    if paged:
        props["next_cursor"] = NULLABLE_STRING
    return {"type": "object", "required": ["items"], "properties": props}


def _subscription_paths() -> dict[str, Any]:
    one = "/admin/v1/webhooks/subscriptions/{subscription_id}"
    return {
        "/admin/v1/webhooks/subscriptions": {
            "get": {
                "summary": "The tenant's webhook subscriptions (admin, viewer)",
                "responses": {"200": answer(_items(SUBSCRIPTION))},
            },
            "post": {
                "summary": "Create a subscription; the signing secret is in this answer only "
                "(admin)",
                "requestBody": _body(NEW_SUBSCRIPTION),
                "responses": {
                    "201": answer(WITH_SECRET, "Created"),
                    **refusals(400, 413, 422),
                },
            },
        },
        one: {
            "parameters": [path_param("subscription_id")],
            "get": {
                "summary": "One subscription (admin, viewer)",
                "responses": {"200": answer(SUBSCRIPTION), **refusals(404)},
            },
            "patch": {
                "summary": "Change a subscription; active=true re-enables it (admin)",
                "requestBody": _body(SUBSCRIPTION_PATCH),
                "responses": {
                    "200": answer(SUBSCRIPTION),
                    **refusals(400, 404, 413, 422),
                },
            },
            "delete": {
                "summary": "Delete (soft); unfinished deliveries are cancelled (admin)",
                "responses": {"200": answer({"type": "object"}), **refusals(404)},
            },
        },
        one + "/rotate-secret": {
            "parameters": [path_param("subscription_id")],
            "post": {
                "summary": "New signing secret (in this answer only); the old one keeps "
                "signing for grace_seconds (default 86400) (admin)",
                "requestBody": _body(
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "secret": SECRET,
                            "grace_seconds": {"type": "number", "minimum": 0, "maximum": 604800},
                        },
                    },
                    required=False,
                ),
                "responses": {"200": answer(WITH_SECRET), **refusals(400, 404, 413, 422)},
            },
        },
        one + "/test": {
            "parameters": [path_param("subscription_id")],
            "post": {
                "summary": "Send a webhook.test event to this subscription (admin)",
                "responses": {"202": answer(PUBLISHED, "Accepted"), **refusals(404, 409)},
            },
        },
        one + "/replay": {
            "parameters": [path_param("subscription_id")],
            "post": {
                "summary": "Replay the failed deliveries created in [from, to) (admin)",
                "requestBody": _body(
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["from"],
                        "properties": {"from": TIME, "to": TIME},
                    }
                ),
                "responses": {
                    "202": answer(
                        {"type": "object", "properties": {"replayed": {"type": "integer"}}},
                        "Accepted",
                    ),
                    **refusals(400, 404, 409, 413, 422),
                },
            },
        },
    }


def _delivery_paths() -> dict[str, Any]:
    one = "/admin/v1/webhooks/deliveries/{delivery_id}"
    return {
        "/admin/v1/events": {
            "post": {
                "summary": "Publish an event (service, admin); a repeated idempotency_key "
                "answers 200 with the first event",
                "requestBody": _body(
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["type", "payload"],
                        "properties": {
                            "type": EVENT_TYPE,
                            "payload": {"type": "object"},
                            "idempotency_key": {"type": "string", "minLength": 1, "maxLength": 200},
                            "origin_system": {
                                "type": ["string", "null"],
                                "pattern": NAME_RE.pattern,
                            },
                        },
                    }
                ),
                "responses": {
                    "201": answer(PUBLISHED, "Created"),
                    "200": answer(PUBLISHED, "Already published with this idempotency key"),
                    **refusals(400, 409, 413, 422),
                },
            }
        },
        "/admin/v1/webhooks/deliveries": {
            "get": {
                "summary": "Deliveries, newest first (admin, viewer)",
                "parameters": [
                    query_param("subscription_id", UUID, "one subscription"),
                    query_param("event_id", UUID, "one event"),
                    query_param("status", {"type": "string", "enum": STATUSES}, "status"),
                    LIMIT,
                    CURSOR,
                ],
                "responses": {
                    "200": answer(_items(DELIVERY, paged=True)),
                    **refusals(400),
                },
            }
        },
        one: {
            "parameters": [path_param("delivery_id")],
            "get": {
                "summary": "One delivery (admin, viewer)",
                "responses": {"200": answer(DELIVERY), **refusals(404)},
            },
        },
        one + "/attempts": {
            "parameters": [path_param("delivery_id")],
            "get": {
                "summary": "Every attempt of a delivery, oldest first (admin, viewer)",
                "responses": {"200": answer(_items(ATTEMPT)), **refusals(404)},
            },
        },
        one + "/replay": {
            "parameters": [path_param("delivery_id")],
            "post": {
                "summary": "Send a finished delivery again, same webhook-id (admin)",
                "responses": {"202": answer(DELIVERY, "Accepted"), **refusals(404, 409)},
            },
        },
    }


def paths() -> dict[str, Any]:
    return {**_subscription_paths(), **_delivery_paths()}
