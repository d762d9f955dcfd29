"""api_logs indexes (gateway/sql/008_api_logs_indexes.sql): the log search queries, as the
admin API builds them, still read through an index (EXPLAIN on a real PostgreSQL with a
day's partition of rows), the unused BRIN index is gone, and the migration works on a
table that already has partitions and rows."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import make_mocked_request

from gateway.capture import partitions
from gateway.capture.api import LOG_DETAIL, LOG_SUMMARY, _log_filters, _time_window
from gateway.capture.shapes import LogQuery
from gateway.db import migrations
from gateway.web.contract import read_query
from gateway.web.pagination import Keyset, decode_time_cursor
from tests.conftest import with_database

ROWS = 20_000  # rows of other tenants in today's partition
MINE = 200  # rows of the tenant that searches: rare, as one tenant of many is
TENANT = uuid.UUID(int=7)
KEY_ID = uuid.UUID(int=8)
INDEXED = {"Index Scan", "Index Only Scan", "Bitmap Index Scan"}
# Rows span two day partitions, a day ending here; every search asks for that day (the
# statement is the same as with the default window, the last 24 hours).
END = datetime(2026, 3, 10, 12, tzinfo=UTC)
WINDOW = "from=2026-03-09T12:00:00Z&to=2026-03-10T12:00:00Z"


def make_rows() -> list[dict[str, Any]]:
    rows = []
    step = timedelta(days=1) / (ROWS + MINE)
    for i in range(ROWS + MINE):
        mine = i % ((ROWS + MINE) // MINE) == 0
        at = END - step * (i + 1)
        rows.append(
            {
                "id": uuid.uuid4(),
                "created_at": at,
                "tenant_id": TENANT if mine else uuid.UUID(int=100 + i % 50),
                "api_key_id": KEY_ID if mine else None,
                "external_system": "booking_engine",
                "request_id": os.urandom(16).hex(),
                "route": "reservation" if i % 3 else "rates",
                "upstream": "pms",
                "method": "GET" if i % 4 else "POST",
                "path": f"/reservations/{i}",
                "request_headers": [["Accept", "application/json"]],
                "request_body_format": "empty",
                "request_body_size": 0,
                "response_body": {"id": i, "status": "confirmed" if i % 5 else "cancelled"},
                "response_body_format": "json",
                "response_body_size": 40,
                "status": 500 if i % 40 == 0 else 200,
                "duration_ms": 1.0,
            }
        )
    return rows


@pytest.fixture
async def filled(db: asyncpg.Connection) -> dict[str, Any]:
    """Two days' partitions holding other tenants' rows and a few of ours;
    statistics gathered. Returns one of our rows."""
    await partitions.ensure_partitions(db, [END.date() - timedelta(days=1), END.date()])
    rows = make_rows()
    columns = list(rows[0])
    await db.copy_records_to_table(
        "api_logs", records=[tuple(r.values()) for r in rows], columns=columns
    )
    await db.execute("ANALYZE api_logs")
    return next(r for r in rows if r["tenant_id"] == TENANT)


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


async def explain(db: asyncpg.Connection, sql: str, *args: Any) -> list[dict[str, Any]]:
    found = await db.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
    plans = orjson.loads(found) if isinstance(found, str | bytes) else found  # json codec
    return list(plan_nodes(plans[0]["Plan"]))


async def search_plan(db: asyncpg.Connection, query: str) -> list[dict[str, Any]]:
    """The plan of the SQL GET /admin/v1/logs?QUERY sends (gateway/capture/api.py)."""
    request = make_mocked_request("GET", f"/admin/v1/logs?{WINDOW}&{query}")
    parsed = read_query(request, LogQuery)
    keyset = Keyset.of(parsed.limit, parsed.cursor, decode_time_cursor)
    where = _log_filters(parsed, TENANT, _time_window(parsed), keyset)
    sql = (
        f"SELECT {LOG_SUMMARY} FROM api_logs WHERE {where.sql} "
        f"ORDER BY created_at DESC, id DESC LIMIT {keyset.fetch}"
    )
    return await explain(db, sql, *where.args)


def indexes_used(nodes: list[dict[str, Any]]) -> set[str]:
    return {n["Index Name"] for n in nodes if n["Node Type"] in INDEXED}


def assert_no_seq_scan(nodes: list[dict[str, Any]]) -> None:
    scans = [n.get("Relation Name") for n in nodes if n["Node Type"] == "Seq Scan"]
    assert not scans, f"sequential scans of {scans}"


async def test_search_by_tenant_and_time_uses_the_tenant_index(
    db: asyncpg.Connection, filled: dict[str, Any]
) -> None:
    nodes = await search_plan(db, "")
    assert_no_seq_scan(nodes)
    used = indexes_used(nodes)
    assert any("tenant_id_created_at" in name for name in used), used


async def test_search_by_request_id_uses_its_index(
    db: asyncpg.Connection, filled: dict[str, Any]
) -> None:
    nodes = await search_plan(db, f"request_id={filled['request_id']}")
    assert_no_seq_scan(nodes)
    assert any("request_id" in name for name in indexes_used(nodes)), indexes_used(nodes)


@pytest.mark.parametrize(
    "query",
    [
        "route=rates",
        "method=post",
        "status=500",
        "status_class=5xx",
        "path_prefix=/reservations/1",
        "external_system=booking_engine",
        f"key_id={KEY_ID}",
        "response_body_contains=%7B%22status%22%3A%22cancelled%22%7D",
    ],
)
async def test_every_search_filter_reads_through_an_index(
    db: asyncpg.Connection, filled: dict[str, Any], query: str
) -> None:
    nodes = await search_plan(db, query)
    assert_no_seq_scan(nodes)
    assert indexes_used(nodes), [n["Node Type"] for n in nodes]


async def test_one_log_by_id_uses_the_primary_key(
    db: asyncpg.Connection, filled: dict[str, Any]
) -> None:
    at = filled["created_at"]
    # The statement of GET /admin/v1/logs/{id} (gateway/capture/api.py, get_log).
    nodes = await explain(
        db,
        f"""SELECT {LOG_DETAIL} FROM api_logs WHERE id = $1 AND tenant_id = $2
            AND created_at >= $3 AND created_at < $4""",
        filled["id"],
        TENANT,
        at - timedelta(seconds=1),
        at + timedelta(seconds=1),
    )
    assert_no_seq_scan(nodes)
    assert indexes_used(nodes)


async def index_definitions(conn: asyncpg.Connection) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename LIKE 'api_logs%'"
    )
    return {r["indexname"]: r["indexdef"] for r in rows}


async def test_no_brin_index_is_left(db: asyncpg.Connection, filled: dict[str, Any]) -> None:
    found = await index_definitions(db)
    assert not [d for d in found.values() if "USING brin" in d], found
    names = set(found)
    assert {"api_logs_pkey", "api_logs_tenant_created_at", "api_logs_request_id"} <= names


async def test_migration_drops_the_index_of_existing_partitions(pg_server_dsn: str) -> None:
    name = f"gw_idx_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(pg_server_dsn)
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        conn = await asyncpg.connect(with_database(pg_server_dsn, name))
        try:
            # The schema as it was before 008, with partitions and a row in one of them.
            await conn.execute(
                "CREATE TABLE schema_migrations (version integer PRIMARY KEY, "
                "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for mig in migrations.load_migrations():
                if mig.version < 8:
                    await conn.execute(mig.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        mig.version,
                        mig.name,
                    )
            today = datetime.now(UTC).date()
            await partitions.ensure_partitions(conn, [today, today + timedelta(days=1)])
            await conn.execute(
                """INSERT INTO api_logs (id, created_at, request_id, method, path,
                       request_headers, request_body_format, request_body_size,
                       response_body_format, response_body_size, status, duration_ms)
                   VALUES (gen_random_uuid(), now(), 'r', 'GET', '/', '[]', 'empty', 0,
                           'empty', 0, 200, 1)"""
            )
            before = await index_definitions(conn)
            assert sum("USING brin" in d for d in before.values()) == 3  # parent + 2 days

            assert 8 in await migrations.migrate(conn)

            after = await index_definitions(conn)
            assert not [d for d in after.values() if "USING brin" in d], after
            part = partitions.partition_name(today)
            on_partition = {n for n in after if n.startswith(part)}
            assert len(on_partition) == 3, on_partition  # primary key, tenant, request id
            assert await conn.fetchval("SELECT count(*) FROM api_logs") == 1
        finally:
            await conn.close()
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()
