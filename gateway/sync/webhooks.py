"""Webhook deliveries to a subscription tied to an external system are outbound syncs of
the event's entity: each attempt's outcome goes to data_sync_status (batched)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from gateway.names import is_name
from gateway.sync.model import Direction, EntityKey, Report, Side, Status
from gateway.sync.recorder import SyncRecorder


def delivery_report(
    tenant_id: uuid.UUID,
    external_system: str,
    event_type: str,
    payload: Any,
    delivered: bool,
    error: str | None,
) -> Report | None:
    """The entity is the event type's first part and the payload's top-level ``id``."""
    entity_type = event_type.split(".", 1)[0]
    raw = payload.get("id") if isinstance(payload, dict) else None
    if not is_name(entity_type) or not isinstance(raw, str):
        return None
    try:
        entity_id = uuid.UUID(raw)
    except ValueError:
        return None
    key = EntityKey(entity_type, entity_id, external_system, Direction.OUTBOUND)
    status = Status.SUCCEEDED if delivered else Status.FAILED
    return Report(key, status, Side.INTERNAL, error=None if delivered else error)


def delivery_reporter(recorder: SyncRecorder) -> Callable[..., Any]:
    """The webhook delivery loop's ``report`` hook, writing through the sync recorder."""

    async def report(
        *,
        tenant_id: uuid.UUID,
        external_system: str,
        event_type: str,
        payload: Any,
        delivered: bool,
        error: str | None,
    ) -> None:
        found = delivery_report(tenant_id, external_system, event_type, payload, delivered, error)
        if found is not None:
            recorder.submit(tenant_id, found)

    return report
