"""All SQL of outbound webhooks: subscriptions, events, deliveries, claims and completions.

Driver errors are wrapped here: callers see ``WebhookStoreError`` subclasses (or the
records), never asyncpg exceptions, except connection-level ones the delivery loop retries.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gateway.audit import Actor as Actor  # re-exported: callers name store.Actor
from gateway.audit import audit, audit_change, audited_update
from gateway.errors import StoreError
from gateway.webhooks.model import (
    DELIVERY_COLUMNS,
    SUBSCRIPTION_COLUMNS,
    Attempt,
    Claimed,
    Delivery,
    DeliveryStatus,
    Event,
    EventSource,
    Subscription,
)


class WebhookStoreError(StoreError):
    """A webhook operation was refused by the store."""


class NotFoundError(WebhookStoreError):
    pass


class ConflictError(WebhookStoreError):
    pass


class InvalidValueError(WebhookStoreError):
    """PostgreSQL refused a value (a CHECK or a type): the caller's input is wrong."""


# Columns the API may write (values validated and secrets encrypted by the caller).
WRITABLE = frozenset(
    {
        "name",
        "url",
        "event_types",
        "filter",
        "auth_type",
        "auth_secret",
        "auth_header_names",
        "secret",
        "max_attempts",
        "retry_schedule",
        "backoff_initial",
        "backoff_multiplier",
        "backoff_max",
        "attempt_timeout",
        "max_concurrency",
        "payload_fields",
        "payload_template",
        "external_system",
        "active",
        "ordering",
        "coalesce_updates",
        "suppress_own_changes",
        "rate_limit",
        "signature_scheme",
    }
)
OPEN_STATUSES = ("pending", "delivering")
SUBSCRIPTION_OBJECT = "webhook_subscription"  # object_type in the audit trail


def _columns(values: dict[str, Any]) -> list[str]:
    unknown = set(values) - WRITABLE
    if unknown:
        raise ValueError(f"not writable: {sorted(unknown)}")
    return sorted(values)


async def create_subscription(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, values: dict[str, Any], actor: Actor
) -> Subscription:
    cols = _columns(values)
    marks = ", ".join(f"${i + 2}" for i in range(len(cols)))
    async with conn.transaction():
        try:
            row = await conn.fetchrow(
                f"""INSERT INTO webhook_subscriptions (tenant_id, {", ".join(cols)})
                    VALUES ($1, {marks}) RETURNING {SUBSCRIPTION_COLUMNS}""",
                tenant_id,
                *(values[c] for c in cols),
            )
        except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError) as exc:
            raise InvalidValueError(_constraint_message(exc)) from None
        sub = Subscription.from_row(row)
        await audit_change(
            conn,
            actor,
            tenant_id,
            "webhook_subscription.create",
            SUBSCRIPTION_OBJECT,
            sub.id,
            None,
            sub,
        )
    return sub


def _constraint_message(exc: asyncpg.PostgresError) -> str:
    name = getattr(exc, "constraint_name", None)
    return f"a value is not acceptable ({name})" if name else "a value is not acceptable"


async def list_subscriptions(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> list[Subscription]:
    rows = await conn.fetch(
        f"""SELECT {SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions
            WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY created_at, id""",
        tenant_id,
    )
    return [Subscription.from_row(r) for r in rows]


async def get_subscription(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, sub_id: uuid.UUID, *, lock: bool = False
) -> Subscription:
    row = await conn.fetchrow(
        f"""SELECT {SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions
            WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL
            {"FOR UPDATE" if lock else ""}""",
        sub_id,
        tenant_id,
    )
    if row is None:
        raise NotFoundError(f"no subscription {sub_id}")
    return Subscription.from_row(row)


async def update_subscription(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    sub_id: uuid.UUID,
    values: dict[str, Any],
    actor: Actor,
    action: str = "webhook_subscription.update",
    extra_sql: str = "",
) -> Subscription:
    """Change columns; re-activating clears the reason and the failure clock."""
    cols = _columns(values)
    sets = [f"{c} = ${i + 3}" for i, c in enumerate(cols)]
    if values.get("active") is True:
        sets += ["disabled_reason = NULL", "disabled_at = NULL", "failing_since = NULL"]
        sets += ["paused_until = NULL"]  # an admin's re-enable ends an endpoint backoff
    elif values.get("active") is False:
        sets += ["disabled_reason = 'disabled by an admin'", "disabled_at = now()"]
    sets += ["updated_at = now()"] + ([extra_sql] if extra_sql else [])

    async def update() -> Subscription:
        try:
            row = await conn.fetchrow(
                f"""UPDATE webhook_subscriptions SET {", ".join(sets)}
                    WHERE id = $1 AND tenant_id = $2 RETURNING {SUBSCRIPTION_COLUMNS}""",
                sub_id,
                tenant_id,
                *(values[c] for c in cols),
            )
        except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError) as exc:
            raise InvalidValueError(_constraint_message(exc)) from None
        return Subscription.from_row(row)

    return await _audited(conn, tenant_id, sub_id, actor, action, update)


async def _audited(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    sub_id: uuid.UUID,
    actor: Actor,
    action: str,
    update: Callable[[], Awaitable[Subscription]],
) -> Subscription:
    """``update`` with the subscription locked, audited; NotFoundError when there is none."""
    after = await audited_update(
        conn,
        actor=actor,
        tenant_id=tenant_id,
        action=action,
        object_type=SUBSCRIPTION_OBJECT,
        object_id=sub_id,
        lock=lambda: get_subscription(conn, tenant_id, sub_id, lock=True),
        update=update,
    )
    if after is None:  # pragma: no cover - get_subscription raises NotFoundError first
        raise NotFoundError(f"no subscription {sub_id}")
    return after


async def rotate_secret(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    sub_id: uuid.UUID,
    new_secret: str,
    grace_seconds: float,
    actor: Actor,
) -> Subscription:
    """The current secret keeps signing (second signature) for ``grace_seconds``."""
    keep = (
        "previous_secret = CASE WHEN $4::float8 > 0 THEN secret END, "
        "previous_secret_expires_at = CASE WHEN $4::float8 > 0 "
        "THEN now() + make_interval(secs => $4::float8) END"
    )

    async def update() -> Subscription:
        row = await conn.fetchrow(
            f"""UPDATE webhook_subscriptions SET {keep}, secret = $3, updated_at = now()
                WHERE id = $1 AND tenant_id = $2 RETURNING {SUBSCRIPTION_COLUMNS}""",
            sub_id,
            tenant_id,
            new_secret,
            grace_seconds,
        )
        return Subscription.from_row(row)

    action = "webhook_subscription.rotate_secret"
    return await _audited(conn, tenant_id, sub_id, actor, action, update)


async def delete_subscription(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, sub_id: uuid.UUID, actor: Actor
) -> None:
    """Soft delete; its unfinished deliveries are cancelled.

    Locks are taken in the order ``complete`` takes them (deliveries, then the
    subscription), so a delete and the delivery loop never deadlock. A wrong tenant
    raises in get_subscription and rolls the cancellation back."""

    async def lock() -> Subscription:
        await conn.execute(
            """UPDATE webhook_deliveries SET status = 'cancelled', lease_owner = NULL,
                   lease_expires_at = NULL, updated_at = now()
               WHERE subscription_id = $1 AND status IN ('pending', 'delivering')""",
            sub_id,
        )
        return await get_subscription(conn, tenant_id, sub_id, lock=True)

    async def update() -> None:
        await conn.execute(
            """UPDATE webhook_subscriptions SET deleted_at = now(), active = false,
                   disabled_reason = 'deleted', disabled_at = now(), updated_at = now()
               WHERE id = $1""",
            sub_id,
        )

    await audited_update(
        conn,
        actor=actor,
        tenant_id=tenant_id,
        action="webhook_subscription.delete",
        object_type=SUBSCRIPTION_OBJECT,
        object_id=sub_id,
        lock=lock,
        update=update,
    )


# -- ed25519 signing keys (v1a) --------------------------------------------------------------


async def ensure_signing_key(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, private_token: str, public_key: str
) -> str:
    """The tenant's public key; the given pair is stored if the tenant has none yet."""
    await conn.execute(
        """INSERT INTO webhook_signing_keys (tenant_id, private_key, public_key)
           VALUES ($1, $2, $3) ON CONFLICT (tenant_id) DO NOTHING""",
        tenant_id,
        private_token,
        public_key,
    )
    return await public_signing_key(conn, tenant_id) or public_key


async def public_signing_key(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> str | None:
    value = await conn.fetchval(
        "SELECT public_key FROM webhook_signing_keys WHERE tenant_id = $1", tenant_id
    )
    return str(value) if value is not None else None


VERIFY_EVENT_TYPE = "webhook.test"


async def verification_target(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, sub_id: uuid.UUID
) -> Claimed:
    """What a verify-on-subscribe attempt needs: the (not yet committed) subscription and a
    synthetic ``webhook.test`` event of its own id, never stored."""
    event_id = uuid.uuid4()
    row = await conn.fetchrow(
        """SELECT $3::uuid AS id, s.tenant_id, $3::uuid AS event_id, s.id AS subscription_id,
                  'msg_' || replace($3::text, '-', '') AS webhook_id, 0 AS attempt_count,
                  'verify' AS lease_owner, 0 AS coalesced_count, $4::text AS event_type,
                  jsonb_build_object('message', 'verification of a new or changed subscription',
                                     'subscription_id', s.id) AS payload,
                  now() AS event_created_at, s.url, s.auth_type, s.auth_secret, s.secret,
                  NULL::text AS previous_secret, 1 AS max_attempts, s.retry_schedule,
                  s.backoff_initial, s.backoff_multiplier, s.backoff_max, s.attempt_timeout,
                  NULL::jsonb AS payload_fields, NULL::jsonb AS payload_template,
                  NULL::text AS external_system, s.signature_scheme,
                  k.private_key AS signing_key
           FROM webhook_subscriptions s
           LEFT JOIN webhook_signing_keys k
               ON k.tenant_id = s.tenant_id AND s.signature_scheme = 'v1a'
           WHERE s.id = $1 AND s.tenant_id = $2""",
        sub_id,
        tenant_id,
        event_id,
        VERIFY_EVENT_TYPE,
    )
    if row is None:  # pragma: no cover - the caller just wrote it
        raise NotFoundError(f"no subscription {sub_id}")
    return Claimed.from_row(row)


# -- events ------------------------------------------------------------------------------

EVENT_COLUMNS = "id, event_type, payload, idempotency_key, source, created_at, origin_system"


async def publish_event(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    event_type: str,
    payload: Any,
    *,
    idempotency_key: str | None = None,
    source: EventSource = EventSource.API,
    subscription_id: uuid.UUID | None = None,
    origin_system: str | None = None,
) -> tuple[Event, bool, int]:
    """Insert an event (the trigger fans it out); return it, whether it is new, and how
    many deliveries it has. A repeated idempotency key returns the first event."""
    # Autocommit (no transaction block): one round trip on the usual path; the delivery
    # count is read after the commit, when the trigger's rows are visible.
    try:
        row = await conn.fetchrow(
            f"""INSERT INTO webhook_events (tenant_id, event_type, payload, idempotency_key,
                    source, subscription_id, origin_system)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
                RETURNING {EVENT_COLUMNS}""",
            tenant_id,
            event_type,
            payload,
            idempotency_key,
            source.value,
            subscription_id,
            origin_system,
        )
    except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError) as exc:
        raise InvalidValueError(_constraint_message(exc)) from None
    created = row is not None
    if row is None:
        row = await _same_key_event(conn, tenant_id, event_type, payload, idempotency_key)
    count = await conn.fetchval(
        "SELECT count(*) FROM webhook_deliveries WHERE event_id = $1", row["id"]
    )
    return Event.from_row(row), created, int(count)


async def _same_key_event(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, event_type: str, payload: Any, key: str | None
) -> asyncpg.Record:
    row = await conn.fetchrow(
        f"""SELECT {EVENT_COLUMNS}, (event_type = $3 AND payload = $4::jsonb) AS same
            FROM webhook_events WHERE tenant_id = $1 AND idempotency_key = $2""",
        tenant_id,
        key,
        event_type,
        payload,
    )
    if row is None:  # pragma: no cover - the conflict proves it exists
        raise ConflictError("idempotency key conflict")
    if not row["same"]:
        raise ConflictError(
            "this idempotency key was used for a different event (type or payload differ)"
        )
    return row


# -- deliveries and attempts ---------------------------------------------------------------


async def list_deliveries(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    filters: dict[str, Any],
    limit: int,
    before: tuple[datetime, uuid.UUID] | None,
) -> list[Delivery]:
    """Newest first; filters: subscription_id, event_id, status."""
    where: list[str] = ["d.tenant_id = $1"]
    args: list[Any] = [tenant_id]
    for name in ("subscription_id", "event_id", "status"):
        if filters.get(name) is not None:
            args.append(filters[name])
            where.append(f"d.{name} = ${len(args)}")
    if before is not None:
        args += list(before)
        where.append(f"(d.created_at, d.id) < (${len(args) - 1}, ${len(args)})")
    rows = await conn.fetch(
        f"""SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d
            JOIN webhook_events e ON e.id = d.event_id
            WHERE {" AND ".join(where)} ORDER BY d.created_at DESC, d.id DESC
            LIMIT {int(limit)}""",
        *args,
    )
    return [Delivery.from_row(r) for r in rows]


async def get_delivery(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, delivery_id: uuid.UUID
) -> Delivery:
    row = await conn.fetchrow(
        f"""SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d
            JOIN webhook_events e ON e.id = d.event_id
            WHERE d.id = $1 AND d.tenant_id = $2""",
        delivery_id,
        tenant_id,
    )
    if row is None:
        raise NotFoundError(f"no delivery {delivery_id}")
    return Delivery.from_row(row)


async def list_attempts(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, delivery_id: uuid.UUID
) -> list[Attempt]:
    await get_delivery(conn, tenant_id, delivery_id)  # 404 for another tenant's
    rows = await conn.fetch(
        """SELECT id, attempt_number, result, status_code, duration_ms, error,
                  response_excerpt, attempted_at
           FROM webhook_attempts WHERE delivery_id = $1 ORDER BY id""",
        delivery_id,
    )
    return [Attempt.from_row(r) for r in rows]


REPLAY_SET = (
    "status = 'pending', attempt_count = 0, next_attempt_at = now(), "
    "replay_count = replay_count + 1, updated_at = now()"
)


async def replay_delivery(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, delivery_id: uuid.UUID, actor: Actor
) -> Delivery:
    """Send a finished (delivered or failed) delivery again, with the same webhook-id."""
    async with conn.transaction():
        current = await get_delivery(conn, tenant_id, delivery_id)
        if current.status not in (DeliveryStatus.DELIVERED, DeliveryStatus.FAILED):
            raise ConflictError(f"delivery is {current.status.value}; only finished ones replay")
        await _require_active(conn, current.subscription_id)
        await conn.execute(
            f"UPDATE webhook_deliveries SET {REPLAY_SET} WHERE id = $1 AND status = $2",
            delivery_id,
            current.status.value,
        )
        await _audit_replay(conn, actor, tenant_id, "webhook_delivery", delivery_id, 1)
        return await get_delivery(conn, tenant_id, delivery_id)


async def _audit_replay(
    conn: asyncpg.Connection,
    actor: Actor,
    tenant_id: uuid.UUID,
    object_type: str,
    object_id: uuid.UUID,
    count: int,
) -> None:
    await audit(
        conn,
        actor=actor.name,
        actor_key_id=actor.key_id,
        tenant_id=tenant_id,
        action=f"{object_type}.replay",
        object_type=object_type,
        object_id=str(object_id),
        after={"replayed": count},
    )


async def _require_active(conn: asyncpg.Connection, sub_id: uuid.UUID) -> None:
    active = await conn.fetchval(
        "SELECT active FROM webhook_subscriptions WHERE id = $1 AND deleted_at IS NULL", sub_id
    )
    if not active:
        raise ConflictError("the subscription is disabled or deleted; enable it first")


async def replay_failed(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    sub_id: uuid.UUID,
    start: datetime,
    end: datetime,
    actor: Actor,
    limit: int,
) -> tuple[int, bool]:
    """Replay the oldest ``limit`` failed deliveries of a subscription created in
    [start, end); how many, and whether more are left in the window."""
    async with conn.transaction():
        sub = await get_subscription(conn, tenant_id, sub_id)
        if not sub.active:
            raise ConflictError("the subscription is disabled; enable it first")
        ids = await conn.fetch(
            """SELECT id FROM webhook_deliveries
                WHERE subscription_id = $1 AND status = 'failed'
                  AND created_at >= $2 AND created_at < $3
                ORDER BY created_at, id LIMIT $4
                FOR UPDATE""",
            sub_id,
            start,
            end,
            limit + 1,
        )
        chosen = [r["id"] for r in ids[:limit]]
        result = await conn.execute(
            f"UPDATE webhook_deliveries SET {REPLAY_SET} WHERE id = ANY($1::uuid[])",
            chosen,
        )
        count = int(result.split()[-1])
        await _audit_replay(conn, actor, tenant_id, "webhook_subscription", sub_id, count)
    return count, len(ids) > limit


# -- the delivery loop ---------------------------------------------------------------------

CLAIM_SQL = """
WITH limited AS (
    -- rate-limited subscriptions: their token buckets, locked so two processes never
    -- spend the same tokens (one that is locked is skipped this round)
    SELECT s.id, least(greatest(s.rate_limit, 1.0),
                       coalesce(s.rate_tokens, greatest(s.rate_limit, 1.0))
                       + s.rate_limit * extract(epoch FROM now()
                                                 - coalesce(s.rate_checked_at, now())))
               AS tokens
    FROM webhook_subscriptions s
    WHERE s.rate_limit IS NOT NULL AND s.active AND s.deleted_at IS NULL
      AND (s.paused_until IS NULL OR s.paused_until <= now())
    FOR NO KEY UPDATE SKIP LOCKED
), room AS (
    SELECT s.id, least(s.max_concurrency - (
               SELECT count(*) FROM webhook_deliveries x
               WHERE x.subscription_id = s.id AND x.status = 'delivering'
                 AND x.next_attempt_at > now()),
               CASE WHEN s.rate_limit IS NULL THEN s.max_concurrency
                    ELSE floor(l.tokens)::int END) AS free,
           (SELECT min(y.next_attempt_at) FROM webhook_deliveries y
            WHERE y.subscription_id = s.id AND y.status IN ('pending', 'delivering')
              AND NOT y.held AND y.next_attempt_at <= now()) AS oldest
    FROM webhook_subscriptions s LEFT JOIN limited l ON l.id = s.id
    WHERE s.active AND s.deleted_at IS NULL
      AND (s.paused_until IS NULL OR s.paused_until <= now())
      AND (s.rate_limit IS NULL OR l.id IS NOT NULL)
), picked AS (
    SELECT p.id, r.id AS subscription_id
    FROM (SELECT * FROM room WHERE free > 0 AND oldest IS NOT NULL
          ORDER BY oldest LIMIT $2) r
    CROSS JOIN LATERAL (
        SELECT d.id FROM webhook_deliveries d
        WHERE d.subscription_id = r.id AND d.status IN ('pending', 'delivering')
          AND NOT d.held AND d.next_attempt_at <= now()
        ORDER BY d.next_attempt_at
        LIMIT r.free
        FOR UPDATE SKIP LOCKED) p
    LIMIT $2
), spent AS (
    UPDATE webhook_subscriptions s
    SET rate_tokens = l.tokens - (SELECT count(*) FROM picked p WHERE p.subscription_id = l.id),
        rate_checked_at = now()
    FROM limited l WHERE s.id = l.id
)
UPDATE webhook_deliveries d
SET status = 'delivering', lease_owner = $1,
    lease_expires_at = now() + make_interval(secs => s.attempt_timeout + $3),
    next_attempt_at = now() + make_interval(secs => s.attempt_timeout + $3),
    updated_at = now()
FROM picked p, webhook_events e, webhook_subscriptions s
LEFT JOIN webhook_signing_keys k
    ON k.tenant_id = s.tenant_id AND s.signature_scheme = 'v1a'
WHERE d.id = p.id AND e.id = d.event_id AND s.id = d.subscription_id
RETURNING d.id, d.tenant_id, d.event_id, d.subscription_id, d.webhook_id, d.attempt_count,
    d.lease_owner, d.coalesced_count, e.event_type, e.payload,
    e.created_at AS event_created_at, s.url, s.auth_type, s.auth_secret, s.secret,
    CASE WHEN s.previous_secret_expires_at > now() THEN s.previous_secret END
        AS previous_secret,
    s.max_attempts, s.retry_schedule, s.backoff_initial, s.backoff_multiplier, s.backoff_max,
    s.attempt_timeout, s.payload_fields, s.payload_template, s.external_system,
    s.signature_scheme, k.private_key AS signing_key
"""

# Ordered deliveries whose older one finished while they were being fanned out (the
# release trigger ran before they were visible) are released here, every few seconds.
RELEASE_STRANDED_SQL = """
UPDATE webhook_deliveries d SET held = false, updated_at = now()
FROM (SELECT DISTINCT ON (subscription_id, entity_key) id, held
      FROM webhook_deliveries
      WHERE status IN ('pending', 'delivering') AND entity_key IS NOT NULL
      ORDER BY subscription_id, entity_key, seq) head
WHERE d.id = head.id AND head.held AND d.held AND d.status = 'pending'
"""


async def release_stranded(conn: asyncpg.Connection) -> int:
    """Release the oldest open delivery of each entity when it is still held (one pass
    over the open ordered deliveries, in the entity index's order)."""
    result = await conn.execute(RELEASE_STRANDED_SQL)
    return int(result.split()[-1])


async def claim(
    conn: asyncpg.Connection, owner: str, limit: int, lease_margin: float
) -> list[Claimed]:
    """Lease up to ``limit`` due deliveries, at most ``max_concurrency`` in flight per
    subscription; an expired lease counts as due (its process died)."""
    rows = await conn.fetch(CLAIM_SQL, owner, limit, lease_margin)
    return [Claimed.from_row(r) for r in rows]


@dataclass(frozen=True, slots=True)
class Completion:
    """The result of one attempt, to be written with others in one statement."""

    delivery_id: uuid.UUID
    lease_owner: str
    status: DeliveryStatus
    delay: float
    attempt_number: int
    result: str
    status_code: int | None
    duration_ms: float
    error: str | None
    excerpt: str | None


COMPLETE_SQL = """
WITH r AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::float8[], $5::int[],
                         $6::text[], $7::int[], $8::float8[], $9::text[], $10::text[])
        AS r(id, owner, status, delay, attempt_number, result, status_code, duration_ms,
             error, excerpt)
), attempts AS (
    INSERT INTO webhook_attempts (delivery_id, attempt_number, result, status_code,
                                  duration_ms, error, response_excerpt)
    SELECT id, attempt_number, result, status_code, duration_ms, error, excerpt FROM r
)
UPDATE webhook_deliveries d SET
    status = r.status,
    attempt_count = CASE WHEN r.result = 'released' THEN d.attempt_count
                         ELSE r.attempt_number END,
    next_attempt_at = now() + make_interval(secs => r.delay),
    lease_owner = NULL, lease_expires_at = NULL,
    last_status = coalesce(r.status_code, d.last_status),
    last_error = CASE WHEN r.result = 'released' THEN d.last_error ELSE r.error END,
    delivered_at = CASE WHEN r.status = 'delivered' THEN now() ELSE d.delivered_at END,
    updated_at = now()
FROM r WHERE d.id = r.id AND d.lease_owner = r.owner AND d.status = 'delivering'
"""

SUBSCRIPTION_EFFECT_SQL = """
UPDATE webhook_subscriptions s SET
    failing_since = CASE WHEN x.effect = 'succeeded' THEN NULL
                         ELSE coalesce(s.failing_since, now()) END,
    active = CASE WHEN x.effect = 'gone' THEN false
                  WHEN x.effect = 'failed' AND s.failing_since < now() - make_interval(secs => $3)
                  THEN false ELSE s.active END,
    disabled_reason = CASE
        WHEN x.effect = 'gone' THEN 'the endpoint answered 410 Gone'
        WHEN x.effect = 'failed' AND s.failing_since < now() - make_interval(secs => $3)
        THEN 'every attempt failed since ' || s.failing_since::text
        ELSE s.disabled_reason END,
    disabled_at = CASE WHEN x.effect = 'gone'
        OR (x.effect = 'failed' AND s.failing_since < now() - make_interval(secs => $3))
        THEN now() ELSE s.disabled_at END,
    updated_at = now()
FROM unnest($1::uuid[], $2::text[]) AS x(id, effect)
WHERE s.id = x.id AND s.deleted_at IS NULL AND (
    (x.effect = 'succeeded' AND s.failing_since IS NOT NULL)
    OR (x.effect = 'failed' AND s.active AND (s.failing_since IS NULL
        OR s.failing_since < now() - make_interval(secs => $3)))
    OR (x.effect = 'gone' AND s.active))
"""


PAUSE_SQL = """
UPDATE webhook_subscriptions s
SET paused_until = greatest(coalesce(s.paused_until, now()),
                            now() + make_interval(secs => x.secs))
FROM unnest($1::uuid[], $2::float8[]) AS x(id, secs)
WHERE s.id = x.id AND s.deleted_at IS NULL
"""


async def complete(
    conn: asyncpg.Connection,
    done: Sequence[Completion],
    effects: dict[uuid.UUID, str],
    disable_after: float,
    pauses: dict[uuid.UUID, float] | None = None,
) -> None:
    """Record attempts and move deliveries on, all in one transaction; ``pauses``: seconds
    each subscription's endpoint backs off as a whole (429, 502, 503, 504)."""
    columns = list(zip(*(_completion_tuple(c) for c in done), strict=True))
    subs = sorted(effects)  # a fixed order: two processes never deadlock on subscriptions
    paused = sorted(pauses or {})
    async with conn.transaction():
        await conn.execute(COMPLETE_SQL, *columns)
        if subs:
            await conn.execute(
                SUBSCRIPTION_EFFECT_SQL, subs, [effects[s] for s in subs], disable_after
            )
        if paused:
            assert pauses is not None
            await conn.execute(PAUSE_SQL, paused, [pauses[s] for s in paused])


def _completion_tuple(c: Completion) -> tuple[Any, ...]:
    return (
        c.delivery_id,
        c.lease_owner,
        c.status.value,
        c.delay,
        c.attempt_number,
        c.result,
        c.status_code,
        c.duration_ms,
        c.error,
        c.excerpt,
    )


async def stats(conn: asyncpg.Connection) -> tuple[int, float, int]:
    """Unfinished deliveries, the oldest one's age in seconds, disabled subscriptions."""
    row = await conn.fetchrow(
        """SELECT count(*) AS pending,
                  coalesce(extract(epoch FROM now() - min(created_at)), 0) AS oldest
           FROM webhook_deliveries WHERE status IN ('pending', 'delivering')"""
    )
    disabled = await conn.fetchval(
        "SELECT count(*) FROM webhook_subscriptions WHERE NOT active AND deleted_at IS NULL"
    )
    return int(row["pending"]), float(row["oldest"]), int(disabled)


PRUNE_LOCK_KEY = 0x6761_7465_0005  # "gate" + 5: one process prunes webhook rows at a time

PRUNE_DELIVERIES_SQL = """
WITH old AS (
    SELECT id FROM webhook_deliveries
    WHERE status IN ('delivered', 'failed', 'cancelled')
      AND updated_at < now() - make_interval(days => $1)
    LIMIT $2
), attempts AS (
    DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM old)
)
DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM old)
"""
PRUNE_EVENTS_SQL = """
DELETE FROM webhook_events WHERE id IN (
    SELECT e.id FROM webhook_events e
    WHERE e.created_at < now() - make_interval(days => $1)
      AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id)
    LIMIT $2)
"""


async def prune(conn: asyncpg.Connection, retention_days: int, batch: int) -> tuple[int, int]:
    """Delete finished deliveries (and their attempts) last changed more than
    ``retention_days`` ago, then events left without deliveries; at most ``batch`` of each.
    Returns (deliveries, events) deleted, or (0, 0) when another process is pruning."""
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", PRUNE_LOCK_KEY):
            return 0, 0
        deliveries = await conn.execute(PRUNE_DELIVERIES_SQL, retention_days, batch)
        events = await conn.execute(PRUNE_EVENTS_SQL, retention_days, batch)
    return int(deliveries.split()[-1]), int(events.split()[-1])


# -- the event-type catalogue ------------------------------------------------------------------

EVENT_TYPE_COLUMNS = "name, description, schema, created_at, updated_at"


async def list_event_types(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            f"""SELECT {EVENT_TYPE_COLUMNS} FROM webhook_event_types
                WHERE tenant_id = $1 ORDER BY name""",
            tenant_id,
        )
    )


async def put_event_type(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    name: str,
    description: str,
    schema: dict[str, Any],
    actor: Actor,
) -> tuple[asyncpg.Record, bool]:
    """Declare or replace an event type; (the row, whether it is new)."""
    async with conn.transaction():
        try:
            row = await conn.fetchrow(
                f"""INSERT INTO webhook_event_types (tenant_id, name, description, schema)
                    VALUES ($1, $2, $3, $4)
                    ON CONFLICT (tenant_id, name) DO UPDATE
                    SET description = EXCLUDED.description, schema = EXCLUDED.schema,
                        updated_at = now()
                    RETURNING {EVENT_TYPE_COLUMNS}, (xmax = 0) AS created""",
                tenant_id,
                name,
                description,
                schema,
            )
        except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError) as exc:
            raise InvalidValueError(_constraint_message(exc)) from None
        await audit(
            conn,
            actor=actor.name,
            actor_key_id=actor.key_id,
            tenant_id=tenant_id,
            action="webhook_event_type.put",
            object_type="webhook_event_type",
            object_id=name,
            after={"description": description},
        )
    return row, bool(row["created"])


async def delete_event_type(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, name: str, actor: Actor
) -> None:
    async with conn.transaction():
        result = await conn.execute(
            "DELETE FROM webhook_event_types WHERE tenant_id = $1 AND name = $2", tenant_id, name
        )
        if result.split()[-1] == "0":
            raise NotFoundError(f"no event type {name!r}")
        await audit(
            conn,
            actor=actor.name,
            actor_key_id=actor.key_id,
            tenant_id=tenant_id,
            action="webhook_event_type.delete",
            object_type="webhook_event_type",
            object_id=name,
        )


async def event_type_schema(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, name: str
) -> tuple[bool, dict[str, Any] | None]:
    """(whether the tenant has a catalogue at all, the schema of ``name`` or None)."""
    row = await conn.fetchrow(
        """SELECT EXISTS (SELECT 1 FROM webhook_event_types WHERE tenant_id = $1) AS any,
                  (SELECT schema FROM webhook_event_types
                   WHERE tenant_id = $1 AND name = $2) AS schema""",
        tenant_id,
        name,
    )
    return bool(row["any"]), row["schema"]


async def event_type_names(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> list[str]:
    rows = await conn.fetch(
        "SELECT name FROM webhook_event_types WHERE tenant_id = $1 ORDER BY name", tenant_id
    )
    return [r["name"] for r in rows]
