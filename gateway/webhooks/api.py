"""Admin API for webhooks (under /admin/v1): subscriptions, events, deliveries, replay.

Roles: admin manages subscriptions and replays; admin and viewer read; service (and
admin) publish events. Signing secrets appear in the answers of creation and rotation
only; auth values never.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp import web

from gateway.auth.keys import ApiKey, Role
from gateway.crypto import SecretBox
from gateway.errors import ClientError, Conflict, Invalid, NotFound
from gateway.settings import Settings
from gateway.web.http import (
    check_fields,
    endpoint,
    field,
    parse_uuid,
    query_str,
    query_uuid,
    read_json_object,
)
from gateway.web.pagination import newest_first
from gateway.web.responses import json_response
from gateway.webhooks import catalogue, inputs, options, store
from gateway.webhooks.model import Delivery, DeliveryStatus, EventSource, SignatureScheme
from gateway.webhooks.payload import new_signing_key
from gateway.webhooks.ssrf import AddressPolicy, check_endpoint, check_url_shape
from gateway.webhooks.verify import verify_endpoint

PREFIX = "/admin/v1"
SUBS = f"{PREFIX}/webhooks/subscriptions"
DELIVERIES = f"{PREFIX}/webhooks/deliveries"
POOL = web.AppKey("webhooks_pool", asyncpg.Pool)
BOX = web.AppKey("webhooks_box", SecretBox)
CONFIG = web.AppKey("webhooks_settings", Settings)
READERS = (Role.ADMIN, Role.VIEWER)
PUBLISHERS = (Role.SERVICE, Role.ADMIN)
MAX_REPLAY_WINDOW = timedelta(days=31)  # one bulk replay spans at most this much
TEST_EVENT_TYPE = "webhook.test"


def setup(app: web.Application, pool_key: Any, box_key: Any, settings_key: Any) -> None:
    """Register the webhook admin routes; the pool comes from the app's cleanup_ctx."""
    r = app.router
    r.add_get(SUBS, list_subscriptions)
    r.add_post(SUBS, create_subscription)
    r.add_get(SUBS + "/{subscription_id}", get_subscription)
    r.add_patch(SUBS + "/{subscription_id}", patch_subscription)
    r.add_delete(SUBS + "/{subscription_id}", delete_subscription)
    r.add_post(SUBS + "/{subscription_id}/rotate-secret", rotate_secret)
    r.add_post(SUBS + "/{subscription_id}/test", send_test_event)
    r.add_post(SUBS + "/{subscription_id}/replay", replay_failed)
    r.add_post(f"{PREFIX}/events", publish_event)
    r.add_get(DELIVERIES, list_deliveries)
    r.add_get(DELIVERIES + "/{delivery_id}", get_delivery)
    r.add_get(DELIVERIES + "/{delivery_id}/attempts", list_attempts)
    r.add_post(DELIVERIES + "/{delivery_id}/replay", replay_delivery)
    app[BOX] = app[box_key]
    app[CONFIG] = app[settings_key]

    async def bind(app: web.Application) -> Any:
        app[POOL] = app[pool_key]
        yield

    app.cleanup_ctx.append(bind)


def _actor(key: ApiKey) -> store.Actor:
    return store.Actor(f"key:{key.id}", key.id)


actor_of = _actor  # for gateway/webhooks/catalogue_api.py


@asynccontextmanager
async def _store(request: web.Request) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection; what the store refuses inside the block is answered as
    404 not_found, 409 conflict or 422 invalid_field."""
    try:
        async with request.app[POOL].acquire() as conn:
            yield conn
    except store.NotFoundError as exc:
        raise NotFound(str(exc)) from None
    except store.ConflictError as exc:
        raise Conflict(str(exc)) from None
    except store.WebhookStoreError as exc:
        raise Invalid(str(exc), code="invalid_field") from None


store_connection = _store  # for gateway/webhooks/catalogue_api.py


async def _known_types(conn: asyncpg.Connection, key: ApiKey, values: dict[str, Any]) -> None:
    """Once a tenant has a catalogue, subscriptions name only its types (or built-ins)."""
    if "event_types" not in values:
        return
    declared = await store.event_type_names(conn, key.tenant_id)
    unknown = catalogue.unknown_patterns(values["event_types"], declared) if declared else []
    if unknown:
        raise Invalid(
            f"field 'event_types': {', '.join(unknown)} match no type of the event-type "
            "catalogue (GET /admin/v1/webhooks/event-types)",
            code="unknown_event_type",
        )


async def _checked_url(request: web.Request, raw: str) -> str:
    s = request.app[CONFIG]
    policy = AddressPolicy(s.webhook_allow_private, s.webhook_allowed_networks)
    try:
        url = check_url_shape(raw, s.webhook_allow_http)
        await check_endpoint(url, policy)
    except ValueError as exc:
        raise Invalid(str(exc), code="invalid_url") from None
    return raw


async def _subscription_values(request: web.Request, creating: bool) -> tuple[dict[str, Any], bool]:
    """Column values, and whether the endpoint must be verified before saving."""
    body = await read_json_object(request)
    values = inputs.subscription(body, request.app[BOX], creating=creating)
    values.update(options.subscription_options(body))
    if "url" in values:
        values["url"] = await _checked_url(request, values["url"])
    if creating:
        values["secret"] = inputs.check_secret(body["secret"]) if body.get("secret") else None
    return values, options.wants_verify(body)


async def _signing_key(request: web.Request, conn: asyncpg.Connection, key: ApiKey) -> None:
    """A v1a subscription needs the tenant's ed25519 key: made on first use."""
    private, public = new_signing_key()
    await store.ensure_signing_key(conn, key.tenant_id, request.app[BOX].encrypt(private), public)


# -- subscriptions -------------------------------------------------------------------------


@endpoint(READERS)
async def list_subscriptions(request: web.Request, key: ApiKey) -> Any:
    async with request.app[POOL].acquire() as conn:
        subs = await store.list_subscriptions(conn, key.tenant_id)
    return {"items": [s.public() for s in subs]}


@endpoint([Role.ADMIN], status=201)
async def create_subscription(request: web.Request, key: ApiKey) -> Any:
    values, verify = await _subscription_values(request, creating=True)
    secret = values.pop("secret") or inputs.new_secret()
    values["secret"] = request.app[BOX].encrypt(secret)
    async with _store(request) as conn:
        await _known_types(conn, key, values)
        if values.get("signature_scheme") == SignatureScheme.V1A.value:
            await _signing_key(request, conn, key)
        async with conn.transaction():
            sub = await store.create_subscription(conn, key.tenant_id, values, _actor(key))
            if verify:  # refused: the transaction rolls back, nothing is saved
                await _verify(request, conn, sub.id, key)
    return {**sub.public(), "secret": secret}


async def _verify(request: web.Request, conn: asyncpg.Connection, sub_id: Any, key: ApiKey) -> None:
    """Send a signed ``webhook.test`` event now; anything but 2xx refuses the change."""
    claimed = await store.verification_target(conn, key.tenant_id, sub_id)
    s = request.app[CONFIG]
    policy = AddressPolicy(s.webhook_allow_private, s.webhook_allowed_networks)
    problem = await verify_endpoint(claimed, request.app[BOX], policy)
    if problem is not None:
        raise Invalid(
            f"the endpoint did not accept a signed test event: {problem}",
            code="endpoint_not_verified",
        )


@endpoint(READERS)
async def get_subscription(request: web.Request, key: ApiKey) -> Any:
    sub_id = parse_uuid(request.match_info["subscription_id"], "subscription")
    async with _store(request) as conn:
        sub = await store.get_subscription(conn, key.tenant_id, sub_id)
    return sub.public()


@endpoint([Role.ADMIN])
async def patch_subscription(request: web.Request, key: ApiKey) -> Any:
    sub_id = parse_uuid(request.match_info["subscription_id"], "subscription")
    values, verify = await _subscription_values(request, creating=False)
    if not values:
        raise Invalid("nothing to change", code="missing_field")
    async with _store(request) as conn:
        await _known_types(conn, key, values)
        if values.get("signature_scheme") == SignatureScheme.V1A.value:
            await _signing_key(request, conn, key)
        async with conn.transaction():
            sub = await store.update_subscription(conn, key.tenant_id, sub_id, values, _actor(key))
            if verify:
                await _verify(request, conn, sub.id, key)
    return sub.public()


@endpoint([Role.ADMIN])
async def delete_subscription(request: web.Request, key: ApiKey) -> Any:
    sub_id = parse_uuid(request.match_info["subscription_id"], "subscription")
    async with _store(request) as conn:
        await store.delete_subscription(conn, key.tenant_id, sub_id, _actor(key))
    return {"id": str(sub_id), "deleted": True}


@endpoint([Role.ADMIN])
async def rotate_secret(request: web.Request, key: ApiKey) -> Any:
    """New signing secret (shown once); the old one also signs for ``grace_seconds``."""
    sub_id = parse_uuid(request.match_info["subscription_id"], "subscription")
    body = await read_json_object(request) if request.body_exists else {}
    check_fields(body, {"secret", "grace_seconds"})
    secret = inputs.check_secret(body["secret"]) if body.get("secret") else inputs.new_secret()
    grace = body.get("grace_seconds")
    grace = inputs.DEFAULT_GRACE if grace is None else grace
    grace = float(inputs.number(grace, "grace_seconds", 0, inputs.MAX_GRACE))
    async with _store(request) as conn:
        sub = await store.rotate_secret(
            conn, key.tenant_id, sub_id, request.app[BOX].encrypt(secret), grace, _actor(key)
        )
    return {**sub.public(), "secret": secret}


@endpoint([Role.ADMIN], status=202)
async def send_test_event(request: web.Request, key: ApiKey) -> Any:
    """A ``webhook.test`` event delivered to this subscription only."""
    sub_id = parse_uuid(request.match_info["subscription_id"], "subscription")
    async with _store(request) as conn:
        sub = await store.get_subscription(conn, key.tenant_id, sub_id)
        if not sub.active:
            raise store.ConflictError("the subscription is disabled; enable it first")
        payload = {"message": "test event from the Integration Hub gateway"}
        event, _, count = await store.publish_event(
            conn,
            key.tenant_id,
            TEST_EVENT_TYPE,
            payload,
            source=EventSource.TEST,
            subscription_id=sub_id,
        )
    return {"event": event.public(), "deliveries": count}


@endpoint([Role.ADMIN], status=202)
async def replay_failed(request: web.Request, key: ApiKey) -> Any:
    """Replay the subscription's failed deliveries created in [from, to)."""
    sub_id = parse_uuid(request.match_info["subscription_id"], "subscription")
    body = await read_json_object(request)
    check_fields(body, {"from", "to"}, {"from"})
    start = _time_field(body, "from")
    end = _time_field(body, "to") or datetime.now(UTC)
    if start is None:
        raise Invalid("field 'from' must not be null", code="invalid_field")
    if start >= end or end - start > MAX_REPLAY_WINDOW:
        raise ClientError(
            f"'from' must be before 'to', at most {MAX_REPLAY_WINDOW.days} days apart",
            code="bad_time_range",
        )
    async with _store(request) as conn:
        count = await store.replay_failed(conn, key.tenant_id, sub_id, start, end, _actor(key))
    return {"replayed": count}


def _time_field(body: dict[str, Any], name: str) -> datetime | None:
    raw = field(body, name, str)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise inputs.bad(name, "must be an ISO 8601 time such as 2026-11-24T10:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# -- events ----------------------------------------------------------------------------------


@endpoint(PUBLISHERS, status=201)
async def publish_event(request: web.Request, key: ApiKey) -> Any:
    """Publish an event; a repeated idempotency key answers 200 with the first event."""
    body = await read_json_object(request)
    check_fields(body, {"type", "payload", "idempotency_key", "origin_system"}, {"type", "payload"})
    event_type = inputs.event_type(body["type"])
    payload = body["payload"]
    if not isinstance(payload, dict):
        raise inputs.bad("payload", "must be a JSON object")
    inputs.json_value(payload, "payload")
    idem = inputs.text(body, "idempotency_key", inputs.MAX_NAME)
    origin = inputs.external_system(body.get("origin_system"), "origin_system")
    async with _store(request) as conn:
        await _check_payload(conn, key, event_type, payload)
        event, created, count = await store.publish_event(
            conn, key.tenant_id, event_type, payload, idempotency_key=idem, origin_system=origin
        )
    answer = {"event": event.public(), "deliveries": count, "duplicate": not created}
    return answer if created else json_response(answer, status=200)


async def _check_payload(
    conn: asyncpg.Connection, key: ApiKey, event_type: str, payload: dict[str, Any]
) -> None:
    """With a catalogue, a published event must be of a declared type and match its schema."""
    if event_type in catalogue.BUILTIN_TYPES:
        raise inputs.bad("type", "webhook.* event types are published by the gateway only")
    has_catalogue, schema = await store.event_type_schema(conn, key.tenant_id, event_type)
    if schema is not None:
        catalogue.validate_payload(event_type, schema, payload)
    elif has_catalogue:
        raise Invalid(
            f"event type {event_type!r} is not in the event-type catalogue",
            code="unknown_event_type",
        )


# -- deliveries --------------------------------------------------------------------------------


@endpoint(READERS)
async def list_deliveries(request: web.Request, key: ApiKey) -> Any:
    keyset = newest_first(request)
    status = query_str(request, "status")
    if status is not None and status not in {s.value for s in DeliveryStatus}:
        raise ClientError(
            "status must be one of " + ", ".join(s.value for s in DeliveryStatus),
            code="bad_query",
        )
    filters = {
        "subscription_id": query_uuid(request, "subscription_id"),
        "event_id": query_uuid(request, "event_id"),
        "status": status,
    }
    before = keyset.after()
    async with request.app[POOL].acquire() as conn:
        found = await store.list_deliveries(conn, key.tenant_id, filters, keyset.fetch, before)
    return keyset.page(found, Delivery.public, lambda d: (d.created_at, d.id))


@endpoint(READERS)
async def get_delivery(request: web.Request, key: ApiKey) -> Any:
    delivery_id = parse_uuid(request.match_info["delivery_id"], "delivery")
    async with _store(request) as conn:
        delivery = await store.get_delivery(conn, key.tenant_id, delivery_id)
    return delivery.public()


@endpoint(READERS)
async def list_attempts(request: web.Request, key: ApiKey) -> Any:
    delivery_id = parse_uuid(request.match_info["delivery_id"], "delivery")
    async with _store(request) as conn:
        attempts = await store.list_attempts(conn, key.tenant_id, delivery_id)
    return {"items": [a.public() for a in attempts]}


@endpoint([Role.ADMIN], status=202)
async def replay_delivery(request: web.Request, key: ApiKey) -> Any:
    delivery_id = parse_uuid(request.match_info["delivery_id"], "delivery")
    async with _store(request) as conn:
        delivery = await store.replay_delivery(conn, key.tenant_id, delivery_id, _actor(key))
    return delivery.public()
