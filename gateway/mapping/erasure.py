"""Who a data subject is, in every id system (gateway/erasure asks before erasing): given
an entity type and an id — internal UUID, or a partner's external id, of one named system
or of any — the internal ids and every external id mapped to them, live or soft-deleted."""

from __future__ import annotations

import uuid

import asyncpg


async def subject_ids(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    entity_type: str,
    entity_id: str,
    external_system: str | None = None,
) -> tuple[str, ...]:
    """Every id of the subject as text: the id given, its internal UUID(s) and all their
    external ids in integration_mappings of this tenant and entity type."""
    internal: set[uuid.UUID] = set()
    if external_system is None:
        try:
            internal.add(uuid.UUID(entity_id))
        except ValueError:
            pass
    rows = await conn.fetch(
        """SELECT DISTINCT internal_id FROM integration_mappings
           WHERE tenant_id = $1 AND entity_type = $2 AND external_id = $3
             AND ($4::text IS NULL OR external_system = $4)""",
        tenant_id,
        entity_type,
        entity_id,
        external_system,
    )
    internal.update(r["internal_id"] for r in rows)
    externals = await conn.fetch(
        """SELECT DISTINCT external_id FROM integration_mappings
           WHERE tenant_id = $1 AND entity_type = $2 AND internal_id = ANY ($3::uuid[])""",
        tenant_id,
        entity_type,
        list(internal),
    )
    ids = {entity_id, *(str(i) for i in internal), *(r["external_id"] for r in externals)}
    return tuple(sorted(ids))
