"""api_logs on a PostgreSQL server of its own (GATEWAY_LOGS_DATABASE_URL), with two real
servers: the control database (keys, mappings, webhooks) and the logs database."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import asyncpg
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.auth import keys
from gateway.db import migrations
from gateway.routes import parse_routes
from gateway.settings import Secret, Settings
from tests.conftest import routes_yaml, throwaway_pgdata, wait_for_rows
from tests.fixture_types import AiohttpServer, GatewayClient, GatewayFactory, SettingsFactory
from tests.integration.test_faults import StoppablePostgres
from tests.integration.upstream_app import make_upstream_app


async def _shape(url: str, table: str) -> tuple[list[tuple[str, str]], list[str]]:
    """A table's columns (name, type) in order, and its index and constraint definitions."""
    conn = await asyncpg.connect(url)
    try:
        columns = await conn.fetch(
            """SELECT column_name, data_type FROM information_schema.columns
               WHERE table_name = $1 ORDER BY ordinal_position""",
            table,
        )
        indexes = await conn.fetch(
            """SELECT indexdef AS d FROM pg_indexes WHERE tablename = $1
               UNION ALL
               SELECT pg_get_constraintdef(oid) FROM pg_constraint
               WHERE conrelid = to_regclass($1) ORDER BY 1""",
            table,
        )
    finally:
        await conn.close()
    return [(r["column_name"], r["data_type"]) for r in columns], [r["d"] for r in indexes]


async def test_the_logs_set_builds_api_logs_exactly_as_the_full_set_does(
    database_url: str, logs_database_url: str
) -> None:
    """Every api_logs column, index and constraint a migration adds reaches a separate logs
    database too (a new api_logs migration without the marker fails here), and nothing
    else does."""
    for table in ("api_logs", "api_log_batches"):
        assert await _shape(logs_database_url, table) == await _shape(database_url, table)
    conn = await asyncpg.connect(logs_database_url)
    try:
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        assert tables == {"api_logs", "api_log_batches", "schema_migrations"}
        assert await migrations.current_version(conn) == migrations.latest_version(logs=True)
        assert await migrations.migrate(conn, logs=True) == []  # applied once
    finally:
        await conn.close()
    logs_versions = [m.version for m in migrations.logs_migrations()]
    assert logs_versions[:2] == [1, 3]
    assert migrations.latest_version(logs=True) <= migrations.latest_version()


def test_a_marked_migration_joins_the_logs_set() -> None:
    marked = migrations._logs_part(
        8, migrations.LOGS_MARKER + "\nCREATE INDEX x ON api_logs (status);"
    )
    assert marked is not None and "CREATE INDEX" in marked
    assert migrations._logs_part(9, "CREATE TABLE webhook_x (id int);") is None


@pytest.fixture
async def two_databases(
    logs_database_url: str,  # first: the logs database must outlive the gateway
    gateway_factory: GatewayFactory,
) -> GatewayClient:
    return await gateway_factory(logs_database_url=Secret(logs_database_url))


async def test_rows_partitions_and_log_search_live_on_the_logs_database(
    two_databases: GatewayClient, db: asyncpg.Connection, logs_database_url: str
) -> None:
    gateway = two_databases
    tenant = await keys.create_tenant(db, "Alpha", actor="test")
    _, partner = await keys.create_key(
        db, tenant.id, "partner", actor="test", external_system="booking_engine"
    )
    _, admin = await keys.create_key(db, tenant.id, "admin", actor="test")
    for i in range(5):
        r = await gateway.get(f"/secure/x/{i}", headers={"Authorization": f"Bearer {partner}"})
        assert r.status == 200
    logs = await asyncpg.connect(logs_database_url)
    try:
        rows = await wait_for_rows(logs, 5, where="route = 'secure'")
        assert len(rows) == 5 and {r["tenant_id"] for r in rows} == {tenant.id}
        today = f"api_logs_p{datetime.now(UTC):%Y%m%d}"
        assert await logs.fetchval("SELECT to_regclass($1) IS NOT NULL", today)
    finally:
        await logs.close()
    # The control database keeps an empty api_logs parent, with no partition.
    assert await db.fetchval("SELECT count(*) FROM api_logs") == 0
    assert (
        await db.fetchval("SELECT count(*) FROM pg_inherits WHERE inhparent = 'api_logs'::regclass")
        == 0
    )
    found = await gateway.get(
        "/admin/v1/logs?route=secure", headers={"Authorization": f"Bearer {admin}"}
    )
    assert found.status == 200
    assert len((await found.json())["items"]) == 5
    ready = await gateway.get("/readyz")
    body = await ready.json()
    assert ready.status == 200
    assert body["schema_version"] == migrations.latest_version()
    assert body["logs_schema_version"] == migrations.latest_version(logs=True)


async def test_readiness_checks_the_logs_database_schema(
    two_databases: GatewayClient, logs_database_url: str
) -> None:
    logs = await asyncpg.connect(logs_database_url)
    try:
        latest = migrations.latest_version(logs=True)
        await logs.execute("DELETE FROM schema_migrations WHERE version = $1", latest)
        ready = await two_databases.get("/readyz")
        assert ready.status == 503
        assert "logs database schema" in (await ready.json())["message"]
    finally:
        await logs.close()


async def test_one_url_for_both_is_one_database(
    gateway_factory: GatewayFactory, database_url: str, db: asyncpg.Connection
) -> None:
    """GATEWAY_LOGS_DATABASE_URL equal to GATEWAY_DATABASE_URL: nothing separate."""
    gateway = await gateway_factory(logs_database_url=Secret(database_url))
    assert (await gateway.get("/api/echo/one")).status == 200
    rows = await wait_for_rows(db, 1, where="route = 'echo'")
    assert len(rows) == 1
    assert "logs_schema_version" not in await (await gateway.get("/readyz")).json()


def test_settings_read_the_logs_url() -> None:
    s = Settings.from_env({"GATEWAY_LOGS_DATABASE_URL": "postgresql://u:pw@logs/db"})
    assert s.logs_database_url == Secret("postgresql://u:pw@logs/db")
    assert "pw" not in repr(s)
    assert Settings.from_env({}).logs_database_url is None
    assert not Settings.from_env({}).separate_logs_database


@pytest.fixture
def stoppable_logs() -> Iterator[StoppablePostgres]:
    import os

    if os.environ.get("GATEWAY_TEST_LOGS_DATABASE_URL") or os.environ.get(
        "GATEWAY_TEST_DATABASE_URL"
    ):
        pytest.skip("stopping the logs database needs an embedded server")
    pg = StoppablePostgres(throwaway_pgdata())
    yield pg
    pg.start()  # running again for the atexit hook to stop cleanly


@pytest.mark.slow
async def test_logs_database_down_control_up_calls_flow_and_rows_are_replayed(
    stoppable_logs: StoppablePostgres,
    aiohttp_server: AiohttpServer,
    settings_factory: SettingsFactory,
    db: asyncpg.Connection,
) -> None:
    """The logs server stops while partners call: keys still come from the control
    database, rows go to the journal, /readyz names the logs database, and once it is
    back every row reaches it exactly once (journal replay against the logs database)."""
    upstream: TestServer = await aiohttp_server(make_upstream_app(), host="127.0.0.1")
    table = parse_routes(routes_yaml(str(upstream.make_url("")).rstrip("/")))
    settings = settings_factory(logs_database_url=Secret(stoppable_logs.dsn))
    server: TestServer = await aiohttp_server(create_app(settings, table), host="127.0.0.1")
    tenant = await keys.create_tenant(db, "Alpha", actor="test")
    _, partner = await keys.create_key(
        db, tenant.id, "partner", actor="test", external_system="booking_engine"
    )
    sent: list[str] = []
    statuses: list[int] = []
    loop = asyncio.get_running_loop()
    async with ClientSession(base_url=str(server.make_url(""))) as http:

        async def burst(n: int, tag: str) -> None:
            for i in range(n):
                rid = f"{tag}-{i}"
                headers = {"X-Request-Id": rid, "Authorization": f"Bearer {partner}"}
                async with http.get(f"/secure/{i}", headers=headers) as r:
                    statuses.append(r.status)
                sent.append(rid)

        await burst(20, "before")
        await loop.run_in_executor(None, stoppable_logs.stop)
        await burst(60, "during")
        ready = await http.get("/readyz")
        assert ready.status == 503
        assert "logs database unreachable" in (await ready.json())["message"]
        await loop.run_in_executor(None, stoppable_logs.start)
        await burst(20, "after")
        assert set(statuses) == {200}  # partners never noticed
        logs = await asyncpg.connect(stoppable_logs.dsn)
        try:
            rows = await wait_for_rows(logs, len(sent), timeout=30, where="route = 'secure'")
            assert sorted(r["request_id"] for r in rows) == sorted(sent)
        finally:
            await logs.close()
    await server.close()
    assert await db.fetchval("SELECT count(*) FROM api_logs") == 0
    assert not list(settings.journal_dir.glob("*.journal"))


async def test_erasure_reaches_api_logs_on_the_logs_database(
    two_databases: GatewayClient, db: asyncpg.Connection, logs_database_url: str
) -> None:
    gateway = two_databases
    tenant = await keys.create_tenant(db, "Alpha", actor="test")
    _, partner = await keys.create_key(
        db, tenant.id, "partner", actor="test", external_system="booking_engine"
    )
    _, admin = await keys.create_key(db, tenant.id, "admin", actor="test")
    email = "ada.lovelace@example.com"
    r = await gateway.post(
        "/secure/guests", json={"email": email}, headers={"Authorization": f"Bearer {partner}"}
    )
    assert r.status == 200
    logs = await asyncpg.connect(logs_database_url)
    try:
        await wait_for_rows(logs, 1, where="route = 'secure'")
        erased = await gateway.post(
            "/admin/v1/erasures",
            json={"value": email},
            headers={"Authorization": f"Bearer {admin}"},
        )
        body = await erased.json()
        assert erased.status == 200, body
        assert {t["table"]: t["rows"] for t in body["tables"]}["api_logs"] == 1
        stored = await logs.fetchval(
            "SELECT request_body::text FROM api_logs WHERE route = 'secure'"
        )
        assert email not in stored and "[ERASED]" in stored
    finally:
        await logs.close()
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE action = 'subject.erase'") == 1
