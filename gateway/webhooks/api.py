"""Admin API for webhooks (under /admin/v1): subscriptions, events, deliveries, replay.

Roles: admin manages subscriptions and replays; admin and viewer read; service (and
admin) publish events. Signing secrets appear in the answers of creation and rotation
only; auth values never.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
import orjson
from aiohttp import web

from gateway.auth.keys import ApiKey
from gateway.crypto import SecretBox
from gateway.errors import Conflict, Invalid, NotFound
from gateway.settings import Settings
from gateway.web.contract import decode, in_utc, plain, read_body, read_json_bytes, read_query
from gateway.web.http import endpoint, parse_uuid
from gateway.web.pagination import Keyset, decode_time_cursor
from gateway.web.responses import json_response
from gateway.webhooks import catalogue, store
from gateway.webhooks.model import AuthType, Delivery, EventSource, SignatureScheme
from gateway.webhooks.payload import new_signing_key
from gateway.webhooks.shapes import (
    ADMIN,
    DEFAULT_GRACE,
    DELIVERIES,
    EVENTS,
    MAX_REPLAY,
    PUBLISHERS,
    READERS,
    SUBS,
    URL_RE,
    AuthBasic,
    AuthBearer,
    AuthHeaders,
    DeliveryQuery,
    NewEvent,
    NewSecret,
    NewSubscription,
    ReplayWindow,
    SubscriptionChange,
    SubscriptionFields,
    new_secret,
)
from gateway.webhooks.ssrf import AddressPolicy, check_endpoint, check_url_shape
from gateway.webhooks.verify import verify_endpoint

POOL = web.AppKey("webhooks_pool", asyncpg.Pool)
BOX = web.AppKey("webhooks_box", SecretBox)
CONFIG = web.AppKey("webhooks_settings", Settings)
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
    r.add_post(EVENTS, publish_event)
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
    """Once a tenant has a catalogue, subscriptions name only its types (or built-ins):
    409, as whether a type is known depends on the catalogue, not on the request."""
    if "event_types" not in values:
        return
    declared = await store.event_type_names(conn, key.tenant_id)
    unknown = catalogue.unknown_patterns(values["event_types"], declared) if declared else []
    if unknown:
        raise Conflict(
            f"field 'event_types': {', '.join(unknown)} match no type of the event-type "
            "catalogue (GET /admin/v1/webhooks/event-types)",
            code="unknown_event_type",
        )


async def _checked_url(request: web.Request, raw: str) -> str:
    """The endpoint URL, refused (422 invalid_url, naming why) when the SSRF guard or the
    documented shape (shapes.URL_PATTERN; http:// where the gateway allows it) refuses it."""
    s = request.app[CONFIG]
    policy = AddressPolicy(s.webhook_allow_private, s.webhook_allowed_networks)
    try:
        url = check_url_shape(raw, s.webhook_allow_http)
        await check_endpoint(url, policy)
    except ValueError as exc:
        raise Invalid(str(exc), code="invalid_url") from None
    documented = "https" + raw[4:] if s.webhook_allow_http and raw[:5].lower() == "http:" else raw
    if not URL_RE.match(documented):
        raise Invalid(
            "'url' must be an https:// URL: a host name, IPv4 or [IPv6] address, an optional "
            "port, path and query (no credentials, fragment, spaces or other characters a URL "
            "must percent-encode)",
            code="invalid_url",
        )
    return raw


def _auth_columns(auth: Any, box: SecretBox) -> dict[str, Any]:
    """The auth columns: type, encrypted value, header names (values never stored clear)."""
    value: dict[str, Any] | None
    names: list[str] = []
    if isinstance(auth, AuthBearer):
        kind, value = AuthType.BEARER, {"token": auth.token}
    elif isinstance(auth, AuthBasic):
        kind, value = AuthType.BASIC, {"username": auth.username, "password": auth.password}
    elif isinstance(auth, AuthHeaders):
        kind, value, names = AuthType.HEADERS, {"headers": auth.headers}, sorted(auth.headers)
    else:
        kind, value = AuthType.NONE, None
    secret = None if value is None else box.encrypt(orjson.dumps(value).decode())
    return {"auth_type": kind.value, "auth_secret": secret, "auth_header_names": names}


def _columns(body: SubscriptionFields, box: SecretBox) -> dict[str, Any]:
    """Column values of the fields given in a POST or PATCH body."""
    given = plain(body)
    out: dict[str, Any] = {}
    for name in ("name", "url", "filter", "max_concurrency", "external_system", "active"):
        if name in given:
            out[name] = given[name]
    if "event_types" in given:
        out["event_types"] = list(dict.fromkeys(given["event_types"]))
    if not isinstance(body.auth, msgspec.UnsetType):
        out.update(_auth_columns(body.auth, box))
    if not isinstance(body.retry_policy, msgspec.UnsetType):
        out.update(body.retry_policy.columns())
    if not isinstance(body.payload, msgspec.UnsetType):
        out["payload_fields"] = body.payload.fields
        out["payload_template"] = body.payload.template
    options = {
        "ordering": "ordering",
        "coalesce": "coalesce_updates",
        "suppress_own_changes": "suppress_own_changes",
        "signature": "signature_scheme",
    }
    for name, column in options.items():
        if name in given:
            value = given[name]
            out[column] = value.value if isinstance(value, enum.Enum) else value
    if "rate_limit" in given:
        out["rate_limit"] = None if given["rate_limit"] is None else float(given["rate_limit"])
    return out


def parse_subscription(data: bytes, box: SecretBox) -> tuple[NewSubscription, dict[str, Any]]:
    """A POST /webhooks/subscriptions body, checked, and its column values (the URL not yet
    through the SSRF guard); bench/admin_validation.py --body subscription times this."""
    body = decode(data, NewSubscription)
    return body, _columns(body, box)


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


@endpoint(ADMIN, status=201)
async def create_subscription(request: web.Request, key: ApiKey) -> Any:
    body, values = parse_subscription(await read_json_bytes(request), request.app[BOX])
    if isinstance(body.auth, msgspec.UnsetType):
        values.update(_auth_columns(None, request.app[BOX]))
    values["url"] = await _checked_url(request, body.url)
    secret = new_secret() if isinstance(body.secret, msgspec.UnsetType) else body.secret
    values["secret"] = request.app[BOX].encrypt(secret)
    async with _store(request) as conn:
        await _known_types(conn, key, values)
        if values.get("signature_scheme") == SignatureScheme.V1A.value:
            await _signing_key(request, conn, key)
        async with conn.transaction():
            sub = await store.create_subscription(conn, key.tenant_id, values, _actor(key))
            if body.verify is True:  # refused: the transaction rolls back, nothing is saved
                await _verify(request, conn, sub.id, key)
    return {**sub.public(), "secret": secret}


async def _verify(request: web.Request, conn: asyncpg.Connection, sub_id: Any, key: ApiKey) -> None:
    """Send a signed ``webhook.test`` event now; anything but 2xx refuses the change (409:
    the endpoint's answer, not the request, decides)."""
    claimed = await store.verification_target(conn, key.tenant_id, sub_id)
    s = request.app[CONFIG]
    policy = AddressPolicy(s.webhook_allow_private, s.webhook_allowed_networks)
    problem = await verify_endpoint(claimed, request.app[BOX], policy)
    if problem is not None:
        raise Conflict(
            f"the endpoint did not accept a signed test event: {problem}",
            code="endpoint_not_verified",
        )


@endpoint(READERS)
async def get_subscription(request: web.Request, key: ApiKey) -> Any:
    sub_id = parse_uuid(request.match_info["subscription_id"], "subscription")
    async with _store(request) as conn:
        sub = await store.get_subscription(conn, key.tenant_id, sub_id)
    return sub.public()


@endpoint(ADMIN)
async def patch_subscription(request: web.Request, key: ApiKey) -> Any:
    sub_id = parse_uuid(request.match_info["subscription_id"], "subscription")
    body = await read_body(request, SubscriptionChange)
    values = _columns(body, request.app[BOX])
    if not values and body.verify is msgspec.UNSET:
        raise Invalid("nothing to change", code="missing_field")
    if isinstance(body.url, str):
        values["url"] = await _checked_url(request, body.url)
    async with _store(request) as conn:
        await _known_types(conn, key, values)
        if values.get("signature_scheme") == SignatureScheme.V1A.value:
            await _signing_key(request, conn, key)
        async with conn.transaction():
            if values:
                sub = await store.update_subscription(
                    conn, key.tenant_id, sub_id, values, _actor(key)
                )
            else:
                sub = await store.get_subscription(conn, key.tenant_id, sub_id)
            if body.verify is True:
                await _verify(request, conn, sub.id, key)
    return sub.public()


@endpoint(ADMIN)
async def delete_subscription(request: web.Request, key: ApiKey) -> Any:
    sub_id = parse_uuid(request.match_info["subscription_id"], "subscription")
    async with _store(request) as conn:
        await store.delete_subscription(conn, key.tenant_id, sub_id, _actor(key))
    return {"id": str(sub_id), "deleted": True}


@endpoint(ADMIN)
async def rotate_secret(request: web.Request, key: ApiKey) -> Any:
    """New signing secret (shown once); the old one also signs for ``grace_seconds``."""
    sub_id = parse_uuid(request.match_info["subscription_id"], "subscription")
    data = await read_json_bytes(request)
    body = decode(data, NewSecret) if data.strip() else NewSecret()
    secret = new_secret() if isinstance(body.secret, msgspec.UnsetType) else body.secret
    grace = DEFAULT_GRACE if body.grace_seconds is None else float(body.grace_seconds)
    async with _store(request) as conn:
        sub = await store.rotate_secret(
            conn, key.tenant_id, sub_id, request.app[BOX].encrypt(secret), grace, _actor(key)
        )
    return {**sub.public(), "secret": secret}


@endpoint(ADMIN, status=202)
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


@endpoint(ADMIN, status=202)
async def replay_failed(request: web.Request, key: ApiKey) -> Any:
    """Replay the subscription's failed deliveries created in [from, to), oldest first,
    at most MAX_REPLAY a call (``more``: call again with the same window)."""
    sub_id = parse_uuid(request.match_info["subscription_id"], "subscription")
    body = await read_body(request, ReplayWindow)
    end = in_utc(body.end) if body.end else datetime.now(UTC)
    async with _store(request) as conn:
        count, more = await store.replay_failed(
            conn, key.tenant_id, sub_id, in_utc(body.start), end, _actor(key), MAX_REPLAY
        )
    return {"replayed": count, "more": more}


# -- events ----------------------------------------------------------------------------------


@endpoint(PUBLISHERS, status=201)
async def publish_event(request: web.Request, key: ApiKey) -> Any:
    """Publish an event; a repeated idempotency key answers 200 with the first event."""
    body = await read_body(request, NewEvent)
    async with _store(request) as conn:
        await _check_payload(conn, key, body.type, body.payload)
        event, created, count = await store.publish_event(
            conn,
            key.tenant_id,
            body.type,
            body.payload,
            idempotency_key=body.idempotency_key,
            origin_system=body.origin_system,
        )
    answer = {"event": event.public(), "deliveries": count, "duplicate": not created}
    return answer if created else json_response(answer, status=200)


async def _check_payload(
    conn: asyncpg.Connection, key: ApiKey, event_type: str, payload: dict[str, Any]
) -> None:
    """With a catalogue, a published event must be of a declared type (409 otherwise: it
    depends on the catalogue) and match its schema (422 schema_violation)."""
    has_catalogue, schema = await store.event_type_schema(conn, key.tenant_id, event_type)
    if schema is not None:
        catalogue.validate_payload(event_type, schema, payload)
    elif has_catalogue:
        raise Conflict(
            f"event type {event_type!r} is not in the event-type catalogue",
            code="unknown_event_type",
        )


# -- deliveries --------------------------------------------------------------------------------


@endpoint(READERS)
async def list_deliveries(request: web.Request, key: ApiKey) -> Any:
    query = read_query(request, DeliveryQuery)
    keyset = Keyset.of(query.limit, query.cursor, decode_time_cursor)
    filters = {
        "subscription_id": query.subscription_id,
        "event_id": query.event_id,
        "status": None if query.status is None else query.status.value,
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


@endpoint(ADMIN, status=202)
async def replay_delivery(request: web.Request, key: ApiKey) -> Any:
    delivery_id = parse_uuid(request.match_info["delivery_id"], "delivery")
    async with _store(request) as conn:
        delivery = await store.replay_delivery(conn, key.tenant_id, delivery_id, _actor(key))
    return delivery.public()
