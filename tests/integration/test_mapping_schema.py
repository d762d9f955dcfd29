"""integration_mappings in the database itself: live-row uniqueness, CHECKs, and what the
NOTIFY trigger says for changes made by plain SQL."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import orjson
import pytest

from gateway.auth import keys

INSERT = """INSERT INTO integration_mappings
    (tenant_id, entity_type, internal_id, external_system, external_id)
    SELECT $1, 'room', gen_random_uuid(), 'be', 'X' || i FROM generate_series(1, $2) i"""


async def notifications(conn: asyncpg.Connection) -> asyncio.Queue[dict[str, object]]:
    queue: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    await conn.add_listener(
        "integration_mappings", lambda *args: queue.put_nowait(orjson.loads(args[3]))
    )
    return queue


async def test_trigger_names_rows_then_tenants_then_everything(
    db: asyncpg.Connection, database_url: str
) -> None:
    tenant = await keys.create_tenant(db, "Hotel Alpha", "test")
    listener = await asyncpg.connect(database_url)
    try:
        queue = await notifications(listener)
        await db.execute(INSERT, tenant.id, 2)
        got = await asyncio.wait_for(queue.get(), 5)
        rows = got["rows"]
        assert isinstance(rows, list) and len(rows) == 2
        assert rows[0][:3] == [str(tenant.id), "be", "room"]
        await db.execute(
            "UPDATE integration_mappings SET external_id = 'Y' WHERE external_id = 'X1'"
        )
        got = await asyncio.wait_for(queue.get(), 5)
        rows = got["rows"]
        assert isinstance(rows, list)
        assert sorted(r[4] for r in rows) == ["X1", "Y"]  # old and new versions
        await db.execute(INSERT.replace("'X' || i", "'Z' || i"), tenant.id, 500)
        got = await asyncio.wait_for(queue.get(), 5)
        assert got == {"tenants": [str(tenant.id)]}
        await db.execute("TRUNCATE integration_mappings")
        assert await asyncio.wait_for(queue.get(), 5) == {"all": True}
    finally:
        await listener.close()


async def test_one_live_mapping_per_id_and_checks(db: asyncpg.Connection) -> None:
    tenant = await keys.create_tenant(db, "Hotel Alpha", "test")
    await db.execute(INSERT, tenant.id, 1)
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute(INSERT, tenant.id, 1)  # X1 again, another internal id
    internal = await db.fetchval("SELECT internal_id FROM integration_mappings")
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute(
            """INSERT INTO integration_mappings (tenant_id, entity_type, internal_id,
                   external_system, external_id) VALUES ($1, 'room', $2, 'be', 'other')""",
            tenant.id,
            internal,
        )
    await db.execute("UPDATE integration_mappings SET deleted_at = now()")
    await db.execute(INSERT, tenant.id, 1)  # free again once the first is soft-deleted
    good = {"entity_type": "room", "external_id": "c", "direction": "inbound"}
    for column, value in (
        ("entity_type", "Room"),
        ("direction", "sideways"),
        ("sync_status", "done"),
        ("external_id", ""),
    ):
        row = {**good, "sync_status": "synced", column: value}
        with pytest.raises(asyncpg.CheckViolationError):
            await db.execute(
                """INSERT INTO integration_mappings (tenant_id, internal_id, external_system,
                       entity_type, external_id, direction, sync_status)
                   VALUES ($1, $2, 'be', $3, $4, $5, $6)""",
                tenant.id,
                uuid.uuid4(),
                row["entity_type"],
                row["external_id"],
                row["direction"],
                row["sync_status"],
            )
