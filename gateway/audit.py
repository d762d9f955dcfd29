"""The audit trail (table ``audit_log``): one row per change made through the admin API or
the CLI — who, tenant, action, object, before and after (secrets already masked). Every
store that changes something appends here in the same transaction."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import asyncpg


@dataclass(frozen=True, slots=True)
class Actor:
    """Who changed something, as the audit trail names it."""

    name: str  # 'key:<uuid>' or 'cli'
    key_id: uuid.UUID | None


class Audited(Protocol):
    """An object the audit trail can show: its ``public()`` form has no secrets."""

    def public(self) -> dict[str, Any]: ...


After = TypeVar("After", bound=Audited | None)


async def audited_update(
    conn: asyncpg.Connection,
    *,
    actor: Actor,
    tenant_id: uuid.UUID,
    action: str,
    object_type: str,
    object_id: uuid.UUID,
    lock: Callable[[], Awaitable[Audited | None]],
    update: Callable[[], Awaitable[After]],
) -> After | None:
    """Change one row in one transaction: ``lock`` reads it ``FOR UPDATE`` (None: there is
    no such row, and nothing is done), ``update`` changes it and returns the new state
    (None: the row is gone, as after a delete), and the audit row records both.
    Returns what ``update`` returned, or None when ``lock`` found nothing."""
    async with conn.transaction():
        before = await lock()
        if before is None:
            return None
        after = await update()
        await audit_change(conn, actor, tenant_id, action, object_type, object_id, before, after)
    return after


async def audit_change(
    conn: asyncpg.Connection,
    actor: Actor,
    tenant_id: uuid.UUID,
    action: str,
    object_type: str,
    object_id: uuid.UUID,
    before: Audited | None,
    after: Audited | None,
) -> None:
    """Audit a change to an object with a ``public()`` form (secrets already masked)."""
    await audit(
        conn,
        actor=actor.name,
        actor_key_id=actor.key_id,
        tenant_id=tenant_id,
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        before=before.public() if before else None,
        after=after.public() if after else None,
    )


async def audit(
    conn: asyncpg.Connection,
    *,
    actor: str,
    actor_key_id: uuid.UUID | None,
    tenant_id: uuid.UUID | None,
    action: str,
    object_type: str,
    object_id: str | None,
    before: Any = None,
    after: Any = None,
) -> None:
    """Append one audit row. Callers pass values already stripped of secrets."""
    await conn.execute(
        """INSERT INTO audit_log (tenant_id, actor, actor_key_id, action, object_type,
               object_id, before, after) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        tenant_id,
        actor,
        actor_key_id,
        action,
        object_type,
        object_id,
        before,
        after,
    )
