"""Migrations and api_logs partition maintenance against a real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import asyncpg

from gateway.capture import partitions
from gateway.db import migrations
from tests.conftest import with_database


async def test_migrations_apply_to_an_empty_database_twice(pg_server_dsn: str) -> None:
    admin = await asyncpg.connect(pg_server_dsn)
    await admin.execute("DROP DATABASE IF EXISTS gw_migrate_twice")
    await admin.execute("CREATE DATABASE gw_migrate_twice")
    try:
        conn = await asyncpg.connect(with_database(pg_server_dsn, "gw_migrate_twice"))
        try:
            assert await migrations.current_version(conn) == 0
            first = await migrations.migrate(conn)
            assert first == [m.version for m in migrations.load_migrations()]
            assert await migrations.migrate(conn) == []
            assert await migrations.current_version(conn) == migrations.latest_version()
            kind = await conn.fetchval(
                "SELECT relkind::text FROM pg_class WHERE relname = 'api_logs'"
            )
            assert kind == "p"  # partitioned table
        finally:
            await conn.close()
    finally:
        await admin.execute("DROP DATABASE gw_migrate_twice WITH (FORCE)")
        await admin.close()


async def insert_row(conn: asyncpg.Connection, at: datetime) -> None:
    await conn.execute(
        """INSERT INTO api_logs (id, created_at, request_id, method, path, request_headers,
               request_body_format, request_body_size, response_body_format,
               response_body_size, status, duration_ms)
           VALUES (gen_random_uuid(), $1, 'r', 'GET', '/', '[]', 'empty', 0, 'empty', 0, 200, 1)""",
        at,
    )


async def test_partitions_created_ahead_and_dropped_after_retention(db: asyncpg.Connection) -> None:
    today = date(2026, 3, 10)
    result = await partitions.run_maintenance(db, today, ahead=2, retention_days=5)
    assert result.ran
    have = await partitions.existing_partitions(db)
    expected = {today + timedelta(days=d) for d in range(-1, 3)}
    assert expected <= set(have)

    old_day = today - timedelta(days=9)
    await partitions.create_partition(db, old_day)
    await insert_row(db, datetime(old_day.year, old_day.month, old_day.day, 12, tzinfo=UTC))
    await insert_row(db, datetime(2026, 3, 10, 23, 59, 59, tzinfo=UTC))
    # Day boundaries are UTC: 23:59:59 belongs to the 10th, never the 11th.
    assert await db.fetchval("SELECT count(*) FROM api_logs_p20260310") == 1

    result = await partitions.run_maintenance(db, today, ahead=2, retention_days=5)
    assert result.dropped == (partitions.partition_name(old_day),)
    assert old_day not in await partitions.existing_partitions(db)
    assert await db.fetchval("SELECT count(*) FROM api_logs") == 1


async def test_concurrent_maintenance_runs_once(db: asyncpg.Connection, database_url: str) -> None:
    other = await asyncpg.connect(database_url)
    try:
        async with other.transaction():
            await other.execute("SELECT pg_advisory_xact_lock($1)", partitions.MAINTENANCE_LOCK_KEY)
            result = await partitions.run_maintenance(db, date(2026, 1, 1), 1, 30)
            assert result.ran is False
    finally:
        await other.close()


async def test_rotate_re_encrypts_registered_columns(db: asyncpg.Connection) -> None:
    from cryptography.fernet import Fernet

    from gateway.crypto import SecretBox, rotate_all

    old, new = Fernet.generate_key(), Fernet.generate_key()
    await db.execute("CREATE TABLE scratch_secrets (id int PRIMARY KEY, secret text)")
    await db.executemany(
        "INSERT INTO scratch_secrets VALUES ($1, $2)",
        [(1, SecretBox([old]).encrypt("a")), (2, SecretBox([old]).encrypt("b")), (3, None)],
    )
    n = await rotate_all(db, SecretBox([new, old]), [("scratch_secrets", "id", "secret")])
    assert n == 2
    rows = await db.fetch("SELECT secret FROM scratch_secrets WHERE secret IS NOT NULL ORDER BY id")
    assert [SecretBox([new]).decrypt(r["secret"]) for r in rows] == ["a", "b"]
