"""Events from proxied traffic: a route's `emit` rules (routes.yaml) publish the answer's
JSON body as an event of the caller's tenant when method and status match.

The insert is awaited before the answer goes back (a partner that saw 201 can count on the
event), bounded by the request path's database deadline (GATEWAY_DB_REQUEST_TIMEOUT, also
when the database hangs); a failure is logged and counted
(``gateway_webhook_events_emitted_total{result="error"}``), never turned into an error for
the partner. Only buffered answers (up to GATEWAY_STREAM_THRESHOLD_BYTES) emit.
"""

from __future__ import annotations

import logging
import uuid

import asyncpg
import orjson

from gateway import metrics
from gateway.db.pool import REQUEST_DEADLINE, bounded
from gateway.routes import Route
from gateway.webhooks import store
from gateway.webhooks.model import EventSource

log = logging.getLogger(__name__)


class RouteEmitter:
    def __init__(self, pool: asyncpg.Pool, deadline: float = REQUEST_DEADLINE) -> None:
        self.pool = pool
        self.deadline = deadline  # seconds the answer may wait for the event to be stored

    async def answered(
        self,
        route: Route,
        method: str,
        status: int,
        tenant_id: str | None,
        body: bytes,
        origin_system: str | None = None,
    ) -> None:
        """Publish the events ``route`` declares for this answer, if any; ``origin_system``
        (the calling key's external system) keeps the event from that system's own
        subscriptions (echo suppression)."""
        rules = [r for r in route.emit if r.matches(method, status)]
        if not rules:
            return
        payload = _json_object(body)
        if payload is None or tenant_id is None:
            metrics.WEBHOOK_EVENTS_EMITTED.labels(route.name, "skipped").inc(len(rules))
            return
        for rule in rules:
            await self._publish(
                route.name, uuid.UUID(tenant_id), rule.event_type, payload, origin_system
            )

    async def _publish(
        self,
        route: str,
        tenant_id: uuid.UUID,
        event_type: str,
        payload: dict[str, object],
        origin_system: str | None,
    ) -> None:
        try:
            async with bounded(self.pool, self.deadline) as conn:
                await store.publish_event(
                    conn,
                    tenant_id,
                    event_type,
                    payload,
                    source=EventSource.ROUTE,
                    origin_system=origin_system,
                )
        except (
            OSError,
            TimeoutError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            store.WebhookStoreError,
        ) as exc:
            metrics.WEBHOOK_EVENTS_EMITTED.labels(route, "error").inc()
            log.warning("route %s: event %s not stored: %s", route, event_type, type(exc).__name__)
            return
        metrics.WEBHOOK_EVENTS_EMITTED.labels(route, "emitted").inc()


def _json_object(body: bytes) -> dict[str, object] | None:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
