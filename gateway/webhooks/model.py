"""Records and statuses of outbound webhooks (mirrored by CHECKs in sql/004_webhooks.sql)."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg


class AuthType(enum.StrEnum):
    NONE = "none"
    BEARER = "bearer"
    BASIC = "basic"
    HEADERS = "headers"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for its next attempt
    DELIVERING = "delivering"  # claimed by a process (leased)
    DELIVERED = "delivered"  # a 2xx answer was received
    FAILED = "failed"  # dead: attempts exhausted or 410; replayable
    CANCELLED = "cancelled"  # its subscription was deleted
    COALESCED = "coalesced"  # replaced by a newer event of the same type and entity


class AttemptResult(enum.StrEnum):
    DELIVERED = "delivered"  # 2xx
    HTTP_ERROR = "http_error"  # any other status
    TIMEOUT = "timeout"  # no answer within the attempt timeout
    CONNECT_ERROR = "connect_error"  # DNS, refused, reset, TLS
    REFUSED = "refused"  # SSRF guard: the address is not allowed
    RELEASED = "released"  # the process shut down mid-attempt; the delivery was handed back


class EventSource(enum.StrEnum):
    OUTBOX = "outbox"  # inserted by an internal service
    API = "api"  # POST /admin/v1/events
    ROUTE = "route"  # emitted from a proxied answer (routes.yaml `emit`)
    TEST = "test"  # a test event sent to one subscription
    SYSTEM = "system"  # an operational event (webhook.*) the gateway published itself


class Ordering(enum.StrEnum):
    NONE = "none"  # deliveries in parallel, up to max_concurrency
    ENTITY = "entity"  # one at a time per entity, in event order; entities in parallel


class SignatureScheme(enum.StrEnum):
    V1 = "v1"  # HMAC-SHA256 with the subscription's whsec_ secret
    V1A = "v1a"  # ed25519 with the tenant's key; the public key is served


def _iso(d: datetime | None) -> str | None:
    return d.isoformat() if d else None


SUBSCRIPTION_COLUMNS = (
    "id, tenant_id, name, url, event_types, filter, auth_type, auth_header_names, "
    "previous_secret_expires_at, max_attempts, retry_schedule, backoff_initial, "
    "backoff_multiplier, backoff_max, attempt_timeout, max_concurrency, payload_fields, "
    "payload_template, external_system, active, disabled_reason, disabled_at, failing_since, "
    "created_at, updated_at, ordering, coalesce_updates, suppress_own_changes, rate_limit, "
    "paused_until, signature_scheme"
)


@dataclass(frozen=True, slots=True)
class Subscription:
    """A subscription as the API shows it: no secret, no auth value."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    url: str
    event_types: tuple[str, ...]
    filter: dict[str, Any] | None
    auth_type: AuthType
    auth_header_names: tuple[str, ...]
    previous_secret_expires_at: datetime | None
    max_attempts: int
    retry_schedule: tuple[float, ...] | None
    backoff: tuple[float, float, float] | None  # initial, multiplier, max
    attempt_timeout: float
    max_concurrency: int
    payload_fields: dict[str, str] | None
    payload_template: Any
    external_system: str | None
    active: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime
    ordering: Ordering = Ordering.NONE
    coalesce_updates: bool = False
    suppress_own_changes: bool | None = None  # None: true when external_system is set
    rate_limit: float | None = None  # deliveries per second
    paused_until: datetime | None = None  # endpoint-level backoff
    signature_scheme: SignatureScheme = SignatureScheme.V1

    @classmethod
    def from_row(cls, r: asyncpg.Record) -> Subscription:
        schedule, backoff = _retry_columns(r)
        return cls(
            r["id"],
            r["tenant_id"],
            r["name"],
            r["url"],
            tuple(r["event_types"]),
            r["filter"],
            AuthType(r["auth_type"]),
            tuple(r["auth_header_names"]),
            r["previous_secret_expires_at"],
            r["max_attempts"],
            schedule,
            backoff,
            r["attempt_timeout"],
            r["max_concurrency"],
            r["payload_fields"],
            r["payload_template"],
            r["external_system"],
            r["active"],
            r["disabled_reason"],
            r["disabled_at"],
            r["failing_since"],
            r["created_at"],
            r["updated_at"],
            Ordering(r["ordering"]),
            r["coalesce_updates"],
            r["suppress_own_changes"],
            r["rate_limit"],
            r["paused_until"],
            SignatureScheme(r["signature_scheme"]),
        )

    def public(self) -> dict[str, Any]:
        auth: dict[str, Any] = {"type": self.auth_type.value}
        if self.auth_type is AuthType.HEADERS:
            auth["header_names"] = list(self.auth_header_names)
        policy: dict[str, Any] = {
            "max_attempts": self.max_attempts,
            "timeout": self.attempt_timeout,
            "schedule": list(self.retry_schedule) if self.retry_schedule is not None else None,
            "backoff": None,
        }
        if self.backoff is not None:
            initial, multiplier, maximum = self.backoff
            policy["backoff"] = {"initial": initial, "multiplier": multiplier, "max": maximum}
        return {
            "id": str(self.id),
            "name": self.name,
            "url": self.url,
            "event_types": list(self.event_types),
            "filter": self.filter,
            "auth": auth,
            "retry_policy": policy,
            "max_concurrency": self.max_concurrency,
            "payload": {"fields": self.payload_fields, "template": self.payload_template},
            "external_system": self.external_system,
            "active": self.active,
            "disabled_reason": self.disabled_reason,
            "disabled_at": _iso(self.disabled_at),
            "failing_since": _iso(self.failing_since),
            "previous_secret_expires_at": _iso(self.previous_secret_expires_at),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "ordering": self.ordering.value,
            "coalesce": self.coalesce_updates,
            "suppress_own_changes": (
                self.suppress_own_changes
                if self.suppress_own_changes is not None
                else self.external_system is not None
            ),
            "rate_limit": self.rate_limit,
            "paused_until": _iso(self.paused_until),
            "signature": self.signature_scheme.value,
        }


@dataclass(frozen=True, slots=True)
class Event:
    id: uuid.UUID
    event_type: str
    payload: Any
    idempotency_key: str | None
    source: EventSource
    created_at: datetime
    origin_system: str | None = None  # the external system whose change caused it

    @classmethod
    def from_row(cls, r: asyncpg.Record) -> Event:
        return cls(
            r["id"],
            r["event_type"],
            r["payload"],
            r["idempotency_key"],
            EventSource(r["source"]),
            r["created_at"],
            r["origin_system"],
        )

    def public(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "type": self.event_type,
            "payload": self.payload,
            "idempotency_key": self.idempotency_key,
            "source": self.source.value,
            "origin_system": self.origin_system,
            "created_at": self.created_at.isoformat(),
        }


DELIVERY_COLUMNS = (
    "d.id, d.event_id, d.subscription_id, d.webhook_id, d.status, d.attempt_count, "
    "d.next_attempt_at, d.last_status, d.last_error, d.delivered_at, d.replay_count, "
    "d.created_at, d.updated_at, e.event_type, d.entity_key, d.seq, d.held, d.coalesced_count"
)


@dataclass(frozen=True, slots=True)
class Delivery:
    id: uuid.UUID
    event_id: uuid.UUID
    subscription_id: uuid.UUID
    webhook_id: str
    event_type: str
    status: DeliveryStatus
    attempt_count: int
    next_attempt_at: datetime
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None
    replay_count: int
    created_at: datetime
    updated_at: datetime
    entity_key: str | None = None  # 'reservation:<id>' (ordered or coalescing subscriptions)
    seq: int | None = None  # its place among the entity's deliveries (ordered subscriptions)
    held: bool = False  # an older delivery of its entity is still open
    coalesced_count: int = 0  # deliveries this one replaced

    @classmethod
    def from_row(cls, r: asyncpg.Record) -> Delivery:
        return cls(
            r["id"],
            r["event_id"],
            r["subscription_id"],
            r["webhook_id"],
            r["event_type"],
            DeliveryStatus(r["status"]),
            r["attempt_count"],
            r["next_attempt_at"],
            r["last_status"],
            r["last_error"],
            r["delivered_at"],
            r["replay_count"],
            r["created_at"],
            r["updated_at"],
            r["entity_key"],
            r["seq"],
            r["held"],
            r["coalesced_count"],
        )

    def public(self) -> dict[str, Any]:
        waiting = self.status in (DeliveryStatus.PENDING, DeliveryStatus.DELIVERING)
        return {
            "id": str(self.id),
            "event_id": str(self.event_id),
            "subscription_id": str(self.subscription_id),
            "webhook_id": self.webhook_id,
            "event_type": self.event_type,
            "status": self.status.value,
            "attempt_count": self.attempt_count,
            "next_attempt_at": self.next_attempt_at.isoformat() if waiting else None,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "delivered_at": _iso(self.delivered_at),
            "replay_count": self.replay_count,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "entity": self.entity_key,
            "sequence": self.seq,
            "held": self.held,
            "replaced": self.coalesced_count,
        }


@dataclass(frozen=True, slots=True)
class Attempt:
    id: int
    attempt_number: int
    result: AttemptResult
    status_code: int | None
    duration_ms: float
    error: str | None
    response_excerpt: str | None
    attempted_at: datetime

    @classmethod
    def from_row(cls, r: asyncpg.Record) -> Attempt:
        return cls(
            r["id"],
            r["attempt_number"],
            AttemptResult(r["result"]),
            r["status_code"],
            r["duration_ms"],
            r["error"],
            r["response_excerpt"],
            r["attempted_at"],
        )

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "attempt_number": self.attempt_number,
            "result": self.result.value,
            "status_code": self.status_code,
            "duration_ms": self.duration_ms,
            "error": self.error,
            "response_excerpt": self.response_excerpt,
            "attempted_at": self.attempted_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery this process holds the lease on, with what the attempt needs."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    event_id: uuid.UUID
    subscription_id: uuid.UUID
    webhook_id: str
    attempt_number: int  # of the attempt about to be made (1-based, since the last replay)
    lease_owner: str
    event_type: str
    payload: Any
    event_created_at: datetime
    url: str
    auth_type: AuthType
    auth_secret: str | None  # SecretBox token
    secret: str  # SecretBox token
    previous_secret: str | None  # SecretBox token, still valid
    max_attempts: int
    retry_schedule: tuple[float, ...] | None
    backoff: tuple[float, float, float] | None
    attempt_timeout: float
    payload_fields: dict[str, str] | None
    payload_template: Any
    external_system: str | None
    coalesced_count: int = 0  # deliveries this one replaced (latest-state coalescing)
    signature_scheme: SignatureScheme = SignatureScheme.V1
    signing_key: str | None = None  # SecretBox token of the tenant's whsk_ key (v1a)

    @classmethod
    def from_row(cls, r: asyncpg.Record) -> Claimed:
        schedule, backoff = _retry_columns(r)
        return cls(
            r["id"],
            r["tenant_id"],
            r["event_id"],
            r["subscription_id"],
            r["webhook_id"],
            r["attempt_count"] + 1,
            r["lease_owner"],
            r["event_type"],
            r["payload"],
            r["event_created_at"],
            r["url"],
            AuthType(r["auth_type"]),
            r["auth_secret"],
            r["secret"],
            r["previous_secret"],
            r["max_attempts"],
            schedule,
            backoff,
            r["attempt_timeout"],
            r["payload_fields"],
            r["payload_template"],
            r["external_system"],
            r["coalesced_count"],
            SignatureScheme(r["signature_scheme"]),
            r["signing_key"],
        )


def _retry_columns(
    r: asyncpg.Record,
) -> tuple[tuple[float, ...] | None, tuple[float, float, float] | None]:
    """A subscription's retry schedule and backoff as its columns hold them."""
    schedule = r["retry_schedule"]
    backoff = None
    if r["backoff_initial"] is not None:
        backoff = (r["backoff_initial"], r["backoff_multiplier"], r["backoff_max"])
    return (tuple(schedule) if schedule is not None else None), backoff
