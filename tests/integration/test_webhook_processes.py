"""Webhooks across real gateway processes: SIGKILL mid-delivery, two processes on one DB."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import ClientSession, web
from cryptography.fernet import Fernet

from gateway.db.pool import init_connection
from tests.conftest import routes_yaml
from tests.fixture_types import AiohttpServer, SettingsFactory
from tests.integration.fault_helpers import free_port
from tests.integration.webhook_helpers import Receiver, make_tenant, wait_for

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT = 20.0  # seconds for a child gateway to answer /healthz


class Gateways:
    """Starts `python -m gateway serve` children sharing one database and one key."""

    def __init__(self, tmp_path: Path, database_url: str) -> None:
        self.tmp_path, self.database_url = tmp_path, database_url
        self.key = Fernet.generate_key().decode()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.routes = tmp_path / "routes.yaml"
        self.routes.write_text(routes_yaml("http://127.0.0.1:9"))

    async def start(self, name: str) -> str:
        port = free_port()
        env = {
            **os.environ,
            "GATEWAY_DATABASE_URL": self.database_url,
            "GATEWAY_DATA_DIR": str(self.tmp_path / name),
            "GATEWAY_ENCRYPTION_KEYS": self.key,
            "GATEWAY_WEBHOOK_ALLOW_PRIVATE": "true",
            "GATEWAY_WEBHOOK_ALLOW_HTTP": "true",
            "GATEWAY_WEBHOOK_RETRY_SCHEDULE": "0,0.2,0.2,0.2,0.2",
            "GATEWAY_WEBHOOK_POLL_INTERVAL": "0.2",
            "GATEWAY_WEBHOOK_LEASE_MARGIN": "1",
            "GATEWAY_SHUTDOWN_TIMEOUT": "5",
        }
        args = ["serve", "--routes", str(self.routes), "--port", str(port)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", *args],
            env=env,
            cwd=self.tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        await _wait_healthy(base)
        return base

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


async def _wait_healthy(base: str) -> None:
    async with ClientSession() as http:
        deadline = asyncio.get_running_loop().time() + STARTUP_TIMEOUT
        while asyncio.get_running_loop().time() < deadline:
            try:
                async with http.get(base + "/healthz") as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"gateway at {base} did not start")


@pytest.fixture
async def gateways(tmp_path: Path, database_url: str) -> AsyncIterator[Gateways]:
    g = Gateways(tmp_path, database_url)
    try:
        yield g
    finally:
        g.stop_all()


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(database_url)
    await init_connection(c)
    yield c
    await c.close()


async def _receiver(aiohttp_server: AiohttpServer) -> Receiver:
    rec = Receiver()
    server = await aiohttp_server(rec.app(), host="127.0.0.1")
    rec.url = str(server.make_url("/hooks"))
    return rec


async def _subscribe(base: str, admin: dict[str, str], url: str, **fields: Any) -> None:
    body = {"name": "p", "url": url, "event_types": ["*"], **fields}
    async with ClientSession() as http:
        async with http.post(
            base + "/admin/v1/webhooks/subscriptions", json=body, headers=admin
        ) as r:
            assert r.status == 201, await r.text()


async def _outbox(conn: asyncpg.Connection, tenant_id: Any, count: int) -> None:
    """Events written straight into the outbox, as an internal service would."""
    await conn.execute(
        """INSERT INTO webhook_events (tenant_id, event_type, payload)
           SELECT $1, 'reservation.created', jsonb_build_object('n', g)
           FROM generate_series(1, $2) AS g""",
        tenant_id,
        count,
    )


async def test_sigkill_mid_delivery_then_restart_delivers_every_event_same_id(
    gateways: Gateways, conn: asyncpg.Connection, aiohttp_server: AiohttpServer
) -> None:
    rec = await _receiver(aiohttp_server)
    hang = True

    async def answer(request: web.Request, n: int) -> web.StreamResponse:
        while hang:  # the first process dies while these requests are open
            await asyncio.sleep(0.05)
        return web.Response(status=200)

    rec.behave = answer
    tenant = await make_tenant(conn, "Hotel Kill")
    first = await gateways.start("a")
    await _subscribe(
        first, tenant["admin"], rec.url, max_concurrency=20, retry_policy={"timeout": 3}
    )
    await _outbox(conn, tenant["tenant"].id, 10)
    await wait_for(lambda: rec.in_flight == 10, timeout=10)
    seen_before = set(rec.ids())
    gateways.procs[0].send_signal(signal.SIGKILL)
    gateways.procs[0].wait(10)
    hang = False
    await gateways.start("b")
    await wait_for(
        lambda: _delivered(conn, 10), timeout=20, step=0.2
    )  # after the dead process's leases expire
    finished = [c.headers["webhook-id"] for c in rec.calls[10:]]
    assert set(finished) == seen_before  # every event again, with the same webhook-id
    assert len(finished) == len(set(finished)) == 10


async def _delivered(conn: asyncpg.Connection, count: int) -> bool:
    n = await conn.fetchval("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'")
    return bool(n == count)


async def test_two_processes_share_the_work_and_deliver_each_event_once(
    gateways: Gateways, conn: asyncpg.Connection, aiohttp_server: AiohttpServer
) -> None:
    rec = await _receiver(aiohttp_server)
    tenant = await make_tenant(conn, "Hotel Pair")
    a = await gateways.start("a")
    b = await gateways.start("b")
    await _subscribe(a, tenant["admin"], rec.url, max_concurrency=50)
    for _ in range(4):
        await _outbox(conn, tenant["tenant"].id, 100)
        await asyncio.sleep(0.1)
    await wait_for(lambda: _delivered(conn, 400), timeout=30, step=0.2)
    await asyncio.sleep(0.5)
    ids = rec.ids()
    assert len(ids) == len(set(ids)) == 400
    per_process = [await _delivered_by(base) for base in (a, b)]
    assert sum(per_process) == 400, per_process


async def _delivered_by(base: str) -> int:
    async with ClientSession() as http, http.get(base + "/metrics") as r:
        text = await r.text()
    for line in text.splitlines():
        if line.startswith('gateway_webhook_deliveries_total{result="delivered"}'):
            return int(float(line.split()[-1]))
    return 0


async def test_database_stopped_mid_delivery_loses_nothing(
    aiohttp_server: AiohttpServer,
    settings_factory: SettingsFactory,
    data_dir: Path,
) -> None:
    """PostgreSQL stops while attempts are in flight and results are waiting to be
    written; after it is back every event is delivered, none twice."""
    from aiohttp.test_utils import TestClient, TestServer

    from gateway.app import create_app
    from gateway.routes import parse_routes
    from gateway.settings import Secret
    from tests.integration.test_faults import StoppablePostgres
    from tests.integration.webhook_helpers import publish, subscribe

    if os.environ.get("GATEWAY_TEST_DATABASE_URL"):
        pytest.skip("stopping the database needs the embedded server")
    from tests.conftest import throwaway_pgdata

    pg = StoppablePostgres(throwaway_pgdata())
    rec = await _receiver(aiohttp_server)

    async def slow(request: web.Request, n: int) -> web.StreamResponse:
        await asyncio.sleep(0.2)
        return web.Response(status=200)

    rec.behave = slow
    settings = settings_factory(
        database_url=Secret(pg.dsn),
        webhook_allow_private=True,
        webhook_allow_http=True,
        webhook_poll_interval=0.2,
        db_retry_interval=0.2,
    )
    app = create_app(settings, parse_routes(routes_yaml("http://127.0.0.1:9")))
    gw = TestClient(TestServer(app))
    await gw.start_server()
    try:
        conn = await asyncpg.connect(pg.dsn)
        await init_connection(conn)
        tenant = await make_tenant(conn, "Hotel Outage")
        await conn.close()
        await subscribe(gw, tenant["admin"], rec.url, max_concurrency=5)
        sent = [await publish(gw, tenant["service"], "room.ready", {"n": i}) for i in range(60)]
        await wait_for(lambda: len(rec.calls) >= 10)
        await asyncio.get_running_loop().run_in_executor(None, pg.stop)
        assert len(rec.calls) < 40  # most deliveries are still to come
        await asyncio.sleep(1.0)  # attempts finish; their results cannot be written
        await asyncio.get_running_loop().run_in_executor(None, pg.start)
        expected = {"msg_" + s["event"]["id"].replace("-", "") for s in sent}
        await wait_for(lambda: set(rec.ids()) == expected, timeout=30, step=0.2)
        conn = await asyncpg.connect(pg.dsn)
        try:
            await wait_for(lambda: _delivered(conn, 60), timeout=15, step=0.2)
        finally:
            await conn.close()
        assert len(rec.ids()) == 60  # none twice
    finally:
        await gw.close()


async def test_entity_order_holds_across_processes_and_a_sigkill(
    gateways: Gateways, conn: asyncpg.Connection, aiohttp_server: AiohttpServer
) -> None:
    """Two processes share an ordered subscription; the receiver fails a quarter of the
    attempts; one process is killed mid-way. Per entity, what the receiver accepted never
    goes back in order (a redelivery after the kill repeats the last one, same webhook-id)."""
    rng = random.Random(9)
    rec = await _receiver(aiohttp_server)
    accepted: dict[str, list[tuple[int, str]]] = {}
    in_flight: dict[str, int] = {}
    overlap = 0

    async def answer(request: web.Request, n: int) -> web.StreamResponse:
        nonlocal overlap
        data = orjson.loads(await request.read())["data"]
        entity = data["id"]
        in_flight[entity] = in_flight.get(entity, 0) + 1
        overlap = max(overlap, in_flight[entity])
        try:
            await asyncio.sleep(rng.uniform(0.0, 0.03))
            if rng.random() < 0.25:
                return web.Response(status=500)
            accepted.setdefault(entity, []).append((data["v"], request.headers["webhook-id"]))
            return web.Response(status=200)
        finally:
            in_flight[entity] -= 1

    rec.behave = answer
    tenant = await make_tenant(conn, "Hotel Order")
    a = await gateways.start("a")
    await gateways.start("b")
    await _subscribe(
        a,
        tenant["admin"],
        rec.url,
        ordering="entity",
        max_concurrency=40,
        retry_policy={"timeout": 2, "max_attempts": 50, "schedule": [0.05]},
    )
    entities, versions = 40, 10
    await conn.execute(
        """INSERT INTO webhook_events (tenant_id, event_type, payload)
           SELECT $1, 'reservation.updated', jsonb_build_object('id', 'r' || e, 'v', v)
           FROM generate_series(0, $3 - 1) AS v, generate_series(1, $2) AS e
           ORDER BY v, e""",
        tenant["tenant"].id,
        entities,
        versions,
    )
    await wait_for(lambda: sum(len(v) for v in accepted.values()) >= entities * versions // 3)
    gateways.procs[0].send_signal(signal.SIGKILL)
    gateways.procs[0].wait(10)
    await wait_for(lambda: _delivered(conn, entities * versions), timeout=60, step=0.2)
    assert len(accepted) == entities
    for entity, seen in accepted.items():
        collapsed = [v for i, (v, _) in enumerate(seen) if i == 0 or seen[i - 1][0] != v]
        assert collapsed == list(range(versions)), (entity, seen)
        ids = {v: wid for v, wid in seen}
        assert all(ids[v] == wid for v, wid in seen)  # a repeat has the same webhook-id
    assert overlap == 1, "never two attempts of one entity at once"
